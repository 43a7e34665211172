//! The resource kinds aira manages, as the engine knows them: one typed struct of properties per
//! kind, with the facts a plan needs from AWS (its name, the properties AWS cannot change in
//! place and the reason the plan shows, how a replacement is ordered, which list properties are
//! unordered sets). Expand builds these structs, the provider's observe returns them, the plan
//! names their fields and the cost model matches every one of them: renaming a field or adding a
//! kind without its price does not compile. How a kind is read and written on AWS is its module
//! in the `aira-aws` crate, registered once by kind; the compiler checks that every kind listed
//! here has one.
//!
//! The graph, the plan and apply handle properties as JSON (`serde_json::Value`), the form in
//! which references (`{"$ref": "id.output"}`) are found and resolved and changes are listed;
//! each kind's struct is that JSON's one definition ([`Props`], [`AnyProps`]).

mod acm;
mod aps;
mod cloudwatch;
mod dynamodb;
mod ec2;
mod ecr;
mod ecs;
mod elbv2;
mod iam;
mod logs;
mod named;
mod route53;
mod sns;
mod sqs;
mod wafv2;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use acm::*;
pub use aps::*;
pub use cloudwatch::*;
pub use dynamodb::*;
pub use ec2::*;
pub use ecr::*;
pub use ecs::*;
pub use elbv2::*;
pub use iam::*;
pub use logs::*;
pub use named::Named;
pub use route53::*;
pub use sns::*;
pub use sqs::*;
pub use wafv2::*;

/// How a kind is replaced when a property cannot change in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceOrder {
    /// The new one first, for minimal downtime (Pulumi's and OpenTofu's default).
    CreateBeforeDelete,
    /// For kinds whose name is their identity: two cannot exist at once.
    DeleteBeforeCreate,
}

/// What the plan needs to know of a kind.
pub struct KindSpec {
    pub name: &'static str,
    /// Top-level properties AWS cannot change in place, with the reason shown in the plan.
    pub replace_on: &'static [(&'static str, &'static str)],
    pub replace_order: ReplaceOrder,
    /// Top-level list properties whose order means nothing (compared sorted).
    pub sets: &'static [&'static str],
}

/// One kind's properties: the normal form expand writes and observe reports, so that a plan
/// right after `up` is empty.
pub trait Props: Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    const KIND: Kind;
    const SPEC: KindSpec;

    fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("kind structs serialize to JSON")
    }

    fn from_value(v: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(v)
    }
}

/// The JSON name of a field of `Self`, checked by the compiler: a renamed field does not compile
/// where the plan names it. `field!(r#type => "type")` for a field whose name is a keyword.
#[macro_export]
macro_rules! field {
    ($f:ident) => {{
        let _ = ::core::mem::offset_of!(Self, $f);
        stringify!($f)
    }};
    ($f:ident => $json:literal) => {{
        let _ = ::core::mem::offset_of!(Self, $f);
        $json
    }};
}
pub use field;

/// Declares a kind in one place: its struct of properties (serde-derived, unknown fields refused,
/// fields in the order the plan's JSON shows them) and the facts the plan needs, the fields named
/// as fields so that a rename does not compile:
///
/// ```ignore
/// kind! {
///     /// What it is.
///     NatGateway = "ec2.nat-gateway", DeleteBeforeCreate, sets [],
///     replace_on [subnet: "a NAT gateway cannot move to another subnet"],
///     { pub subnet: Val<String> }
/// }
/// ```
macro_rules! kind {
    (
        $(#[$doc:meta])*
        $kind:ident = $name:literal, $order:ident, sets [$($set:ident),* $(,)?],
        replace_on [$($field:ident $(=> $json:literal)?: $why:expr),* $(,)?],
        { $($body:tt)* }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $kind { $($body)* }

        impl $crate::kind::Props for $kind {
            const KIND: $crate::kind::Kind = $crate::kind::Kind::$kind;
            const SPEC: $crate::kind::KindSpec = $crate::kind::KindSpec {
                name: $name,
                replace_on: &[$(($crate::kind::field!($field $(=> $json)?), $why),)*],
                replace_order: $crate::kind::ReplaceOrder::$order,
                sets: &[$($crate::kind::field!($set),)*],
            };
        }
    };
}
pub(crate) use kind;

/// A property that may be another resource's output, resolved at apply:
/// `{"$ref": "id.output"}` until then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Val<T> {
    Ref(Ref),
    Is(T),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ref {
    #[serde(rename = "$ref")]
    pub to: String,
}

impl<T> Val<T> {
    /// `id.output`, known once `id` exists.
    pub fn to(id: &str, output: &str) -> Self {
        Val::Ref(Ref { to: format!("{id}.{output}") })
    }

    /// The value, in properties whose references were resolved: the provider's (the graph's
    /// `Resolved::props` refuses properties that still hold one).
    pub fn get(&self) -> &T {
        match self {
            Val::Is(v) => v,
            Val::Ref(r) => unreachable!("reference {} read before it was resolved", r.to),
        }
    }

    /// The value when it is known (observed, or given literally by the stack).
    pub fn known(&self) -> Option<&T> {
        match self {
            Val::Is(v) => Some(v),
            Val::Ref(_) => None,
        }
    }
}

impl Val<String> {
    pub fn as_str(&self) -> &str {
        self.get()
    }
}

impl<T> From<T> for Val<T> {
    fn from(v: T) -> Self {
        Val::Is(v)
    }
}

impl From<&str> for Val<String> {
    fn from(v: &str) -> Self {
        Val::Is(v.to_string())
    }
}

/// One line a kind, its enum variant and its struct: [`Kind`], [`Kind::ALL`], [`Kind::spec`] and
/// [`AnyProps`] come from the same list, so none of them can miss a kind.
macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident;)*) => {
        /// The kinds of resource aira manages.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($(#[$doc])* $kind,)*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            pub fn spec(self) -> KindSpec {
                match self {
                    $(Kind::$kind => <$kind as Props>::SPEC,)*
                }
            }
        }

        /// The properties of a resource of any kind, typed.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyProps {
            $($kind($kind),)*
        }

        impl AnyProps {
            /// The struct of `kind` read from its JSON; an error names the field that does not fit.
            pub fn parse(kind: Kind, v: &Value) -> Result<AnyProps, serde_json::Error> {
                Ok(match kind {
                    $(Kind::$kind => AnyProps::$kind(<$kind>::from_value(v)?),)*
                })
            }

            pub fn kind(&self) -> Kind {
                match self {
                    $(AnyProps::$kind(_) => Kind::$kind,)*
                }
            }

            pub fn to_value(&self) -> Value {
                match self {
                    $(AnyProps::$kind(p) => p.to_value(),)*
                }
            }
        }

        // Each struct says which kind it is; this checks it says its own.
        const _: () = {
            $(assert!(matches!(<$kind as Props>::KIND, Kind::$kind));)*
        };
    };
}

kinds! {
    SqsQueue;
    Vpc;
    Subnet;
    InternetGateway;
    ElasticIp;
    NatGateway;
    NatInstance;
    RouteTable;
    SecurityGroup;
    VpcEndpoint;
    Table;
    LogGroup;
    Role;
    Certificate;
    DnsRecord;
    LoadBalancer;
    TargetGroup;
    Listener;
    ListenerRule;
    Repository;
    Cluster;
    TaskDefinition;
    Service;
    Topic;
    Alarm;
    PrometheusWorkspace;
    PrometheusRules;
    AlertManager;
    WebAcl;
}

impl Kind {
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The outputs an update changes, so that what reads them is updated in the same run: a
    /// task definition's update registers a new revision, with an ARN of its own.
    pub fn outputs_changed_by_update(self) -> &'static [&'static str] {
        match self {
            Kind::TaskDefinition => &["arn", "revision"],
            _ => &[],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_properties_named_once() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        for k in Kind::ALL {
            let spec = k.spec();
            let replace: Vec<&str> = spec.replace_on.iter().map(|(p, _)| *p).collect();
            assert!(replace.iter().all(|p| !spec.sets.contains(p)), "{k}: a set cannot force a replacement");
        }
    }

    #[test]
    fn a_reference_reads_as_a_reference_and_a_value_as_a_value() {
        let r: Val<String> = serde_json::from_value(serde_json::json!({"$ref": "vpc.id"})).unwrap();
        assert_eq!(r, Val::to("vpc", "id"));
        let v: Val<String> = serde_json::from_value(serde_json::json!("vpc-1")).unwrap();
        assert_eq!(v.known().map(String::as_str), Some("vpc-1"));
        assert_eq!(serde_json::to_value(Val::<String>::to("a", "b")).unwrap(), serde_json::json!({"$ref": "a.b"}));
    }
}
