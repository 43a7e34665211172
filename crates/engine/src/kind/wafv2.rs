//! The kinds of wafv2.

use serde::{Deserialize, Serialize};

use super::{kind, Named, Val};

kind! {
    /// The stack's rate-based rules, on its load balancer.
    WebAcl = "wafv2.web-acl", DeleteBeforeCreate, sets [],
    // AWS WAF (scope REGIONAL): the stack's rate-based rules. Its name is its identity in the
    // region. The load balancer it protects is its property `load_balancer`, changed in place
    // (AssociateWebACL, DisassociateWebACL) rather than a kind of its own: an association has no
    // tags nor id, and the web ACL must let go of it before it can be deleted
    // (crates/aws/src/waf.rs says why in full).
    replace_on [name: "a web ACL's name cannot change"],
    {
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
