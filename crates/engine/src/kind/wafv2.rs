//! The kinds of wafv2.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*, Val};

/// The stack's rate-based rules, on its load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAcl {
    /// `STACK-waf`: its identity in the region.
    pub name: String,
    pub description: String,
    /// The load balancer's ARN it protects (`null`: none). Changed in place.
    pub load_balancer: Option<Val<String>>,
    /// What a request no rule blocks gets (`null` when AWS reports neither allow nor block).
    pub default_action: Option<Verdict>,
    /// Its CloudWatch metric (`null` when AWS reports none).
    pub metric: Option<Metric>,
    /// By rule name.
    pub rules: Named<Rule>,
    /// The custom response bodies, by the key a rule's response names.
    pub responses: Named<ResponseBody>,
}

/// A rule in the form aira writes (a rate-based statement that blocks); what aira does not
/// write shows in its other fields, so that the plan shows it as a difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Rules are evaluated lowest first.
    pub priority: i32,
    /// Requests an address may make per `window`; absent from a rule that is not rate-based.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Seconds the rate is counted over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
    /// What the requests are counted by (`IP`: the request's origin address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub metric: Option<Metric>,
    pub action: Verdict,
    /// The custom response of a blocking rule (`null`: AWS WAF's own 403).
    pub response: Option<Response>,
    /// The URI path prefix of the requests it counts (all of them when absent); `(another
    /// statement)` when the scope-down statement is not the one aira writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// `(not a rate-based statement)` for a rule whose statement aira does not write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
}

/// A rule's action, or a web ACL's default one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Block,
    Count,
    Captcha,
    Challenge,
    /// A rule with no action (AWS WAF reports one always).
    #[serde(rename = "(none)")]
    Unset,
}

/// A CloudWatch metric name with metrics and sampled requests on (what aira writes), or every
/// setting of one it did not write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metric {
    Name(String),
    Settings { name: String, cloudwatch_metrics: bool, sampled_requests: bool },
}

/// A blocked request's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub status: i32,
    /// The key of its body in the web ACL's `responses`.
    pub body: Option<String>,
    /// Header name → value.
    pub headers: Named<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseBody {
    /// `APPLICATION_JSON`, `TEXT_PLAIN` or `TEXT_HTML`.
    pub content_type: String,
    pub content: String,
}

impl Props for WebAcl {
    const KIND: Kind = Kind::WebAcl;
    // AWS WAF (scope REGIONAL): the stack's rate-based rules. Its name is its identity in the
    // region. The load balancer it protects is its property `load_balancer`, changed in place
    // (AssociateWebACL, DisassociateWebACL) rather than a kind of its own: an association has no
    // tags nor id, and the web ACL must let go of it before it can be deleted
    // (crates/aws/src/waf.rs says why in full).
    const SPEC: KindSpec = KindSpec {
        name: "wafv2.web-acl",
        replace_on: &[(field!(name), "a web ACL's name cannot change")],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}

/// A JSON object of named entries, its keys in the order written (a map would sort them, and
/// the plan's JSON keeps the order expand writes). Equal when it holds the same entries in any
/// order, as JSON objects are.
#[derive(Debug, Clone)]
pub struct Named<T>(pub Vec<(String, T)>);

impl<T> Named<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl<T, K: Into<String>> FromIterator<(K, T)> for Named<T> {
    fn from_iter<I: IntoIterator<Item = (K, T)>>(iter: I) -> Self {
        Named(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<T: PartialEq> PartialEq for Named<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(n, v)| other.get(n) == Some(v))
    }
}

impl<T: Serialize> Serialize for Named<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Named<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Named(out))
            }
        }

        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_entries_keep_their_order_and_compare_as_an_object() {
        let v = json!({ "b": "1", "a": "2" });
        let named: Named<String> = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_string(&named).unwrap(), r#"{"b":"1","a":"2"}"#);
        let reordered: Named<String> = [("a", "2".to_string()), ("b", "1".to_string())].into_iter().collect();
        assert_eq!(named, reordered);
        assert_ne!(named, [("a", "2".to_string())].into_iter().collect());
    }
}
