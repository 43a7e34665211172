//! The stack file's values with a syntax of their own: durations, CIDR blocks, Fargate CPU
//! sizes, and the strings a JSON Schema `format` checks (names, domains, URLs, image
//! references). Each says what it accepts in its schema, so the validator's message is precise.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON Schema written by hand, for a type whose stack form is not its Rust shape.
macro_rules! schema {
    ($t:ident, $schema:tt) => {
        impl JsonSchema for $t {
            fn schema_name() -> Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// Fargate CPU units (256 = 0.25 vCPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Cpu(pub u32);

pub const FARGATE_CPU: [u32; 7] = [256, 512, 1024, 2048, 4096, 8192, 16384];

impl TryFrom<u32> for Cpu {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if FARGATE_CPU.contains(&v) {
            Ok(Cpu(v))
        } else {
            Err(format!("{v} is not a Fargate CPU size"))
        }
    }
}

impl From<Cpu> for u32 {
    fn from(c: Cpu) -> u32 {
        c.0
    }
}

schema!(Cpu, {
    "type": "integer",
    "enum": FARGATE_CPU,
    "description": "Fargate CPU units: 256 = 0.25 vCPU … 16384 = 16 vCPU",
});

/// Memory sizes (MiB) Fargate accepts for a CPU size.
pub fn fargate_memory(cpu: u32) -> Vec<u32> {
    let (lo, hi, step) = match cpu {
        256 => return vec![512, 1024, 2048],
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => return vec![],
    };
    (lo..=hi).step_by(step).collect()
}

/// Declares a string newtype checked by a JSON Schema `format` (see `check::check_format`).
macro_rules! formatted_string {
    ($(#[$doc:meta])* $name:ident, $format:literal, $description:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        schema!($name, { "type": "string", "format": $format, "description": $description });

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

formatted_string!(
    /// Lower-case letters, digits and hyphens, starting with a letter, at most 28 characters.
    StackName, "stack-name", "lower-case letters, digits and hyphens, starting with a letter, at most 28 characters"
);
formatted_string!(DomainName, "hostname", "a DNS name such as chat.example.com");
formatted_string!(Email, "email", "an e-mail address such as ops@example.com");
formatted_string!(HttpPath, "http-path", "an absolute URL path such as /healthz");
formatted_string!(Url, "uri", "an http:// or https:// URL");
formatted_string!(
    ImageRef,
    "image-ref",
    "an image reference such as 123456789012.dkr.ecr.us-east-1.amazonaws.com/aira@sha256:…"
);

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::Ipv4Net);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: ipnet::Ipv4Net = s.parse().map_err(|_| format!("`{s}` is not an IPv4 CIDR block"))?;
        if net.trunc() != net {
            return Err(format!("`{s}` has host bits set; the network is `{}`", net.trunc()));
        }
        Ok(Cidr(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

schema!(Cidr, { "type": "string", "format": "cidr", "description": "an IPv4 CIDR block such as 10.40.0.0/16" });

/// A span of time written with units: `30s`, `5m`, `2h`, `4d`, or combined (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub u64);

impl Duration {
    pub fn secs(self) -> u64 {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a duration; write it with a unit, such as `30s`, `5m`, `2h` or `4d`");
        if s.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

schema!(Duration, {
    "type": "string",
    "format": "duration",
    "pattern": "^([0-9]+[smhd])+$",
    "description": "a duration with units: 30s, 5m, 2h, 4d, 1h30m",
});

/// Written as their text: serialized through `Display`, read through `FromStr`, whose error is
/// the message the validator shows.
macro_rules! as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

as_text!(Cidr, Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, secs) in [("30s", 30), ("5m", 300), ("4d", 345_600), ("1h30m", 5400)] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.secs(), secs);
            assert_eq!(d.to_string(), text);
        }
        for bad in ["", "30", "5x", "m", "1.5h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fargate_memory_table() {
        assert_eq!(fargate_memory(256), vec![512, 1024, 2048]);
        assert!(fargate_memory(512).contains(&4096));
        assert!(!fargate_memory(1024).contains(&1024));
        assert_eq!(fargate_memory(16384).last(), Some(&122_880));
    }
}
