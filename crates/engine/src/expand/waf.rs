//! Per-address limits at the edge: an AWS WAF web ACL (scope REGIONAL) with two rate-based
//! rules, associated with the public service's load balancer. The api's in-process limits are
//! per task (N tasks give an address N times each limit); the web ACL counts every request the
//! load balancer receives, whichever task serves it.
//!
//! - `requests-per-address`: every request, `waf.requests` per client address per `waf.window`;
//! - `auth-per-address`: the account routes (`/v1/auth/…`: sign-up, sign-in, tokens),
//!   `waf.auth_requests`, a rate-based rule scoped down to a URI path that starts with the
//!   prefix.
//!
//! Both aggregate on the request's origin address (`IP`): the load balancer is the first hop, so
//! it is the client's own address (no header to trust). Past a limit AWS WAF blocks with a 429 and
//! the runtime's JSON error body (`rate_limited`, `retry_after`), plus `Retry-After`, until the
//! address's rate over the window falls below the limit. Metrics and sampled requests are on,
//! named after the stack (CloudWatch namespace `AWS/WAFV2`).

use super::*;
use crate::stack::model::WafLimits;

pub const WEB_ACL: &str = "waf";
/// The runtime's account routes (runtime/src/api/mod.rs: `/v1/auth/signup`, `…/login`, …).
pub const AUTH_PREFIX: &str = "/v1/auth/";
/// The key of the blocked requests' response body in the web ACL.
pub const RESPONSE: &str = "rate-limited";
pub const RULE_REQUESTS: &str = "requests-per-address";
pub const RULE_AUTH: &str = "auth-per-address";

/// `STACK-waf`: within AWS WAF's names (1 to 128 of `[A-Za-z0-9_-]`), since a stack name is at
/// most 28 lower-case letters, digits and hyphens. Also the web ACL's CloudWatch metric.
pub fn web_acl_name(stack: &str) -> String {
    format!("{stack}-waf")
}

/// The body of a blocked request: the runtime's own 429 (`{"error": "rate_limited", …}`), so
/// that clients (the web page's countdown) read both alike.
fn blocked_body(window: u64) -> String {
    json!({
        "error": "rate_limited",
        "message": format!("too many requests from this address; retry in {window} s"),
        "retry_after": window,
    })
    .to_string()
}

/// The web ACL of a stack whose `waf` is on, in the normal form the provider's observe reports.
pub(super) fn web_acl(stack: &Stack, limits: WafLimits) -> Desired {
    let name = web_acl_name(&stack.stack.0);
    let window = limits.window.secs();
    let rule = |priority: i32, limit: u32, metric: &str| kind::Rule {
        priority,
        limit: Some(i64::from(limit)),
        window: Some(window as i64),
        key: Some("IP".into()),
        metric: Some(kind::Metric::Name(format!("{name}-{metric}"))),
        action: kind::Verdict::Block,
        response: Some(kind::Response {
            status: 429,
            body: Some(RESPONSE.into()),
            headers: [("Retry-After", window.to_string())].into_iter().collect(),
        }),
        path_prefix: None,
        statement: None,
    };
    // Every request first: an address past it is blocked on every path, the account routes
    // included; below it, the account routes have their own, lower limit.
    let auth = kind::Rule { path_prefix: Some(AUTH_PREFIX.into()), ..rule(1, limits.auth_requests, "auth") };
    let body = kind::ResponseBody { content_type: "APPLICATION_JSON".into(), content: blocked_body(window) };
    let acl = kind::WebAcl {
        name: name.clone(),
        description: format!("Per-address rate limits of the aira stack {}", stack.stack.0),
        load_balancer: Some(Val::to(LOAD_BALANCER, "arn")),
        default_action: Some(kind::Verdict::Allow),
        metric: Some(kind::Metric::Name(name.clone())),
        rules: [(RULE_REQUESTS, rule(0, limits.requests, "requests")), (RULE_AUTH, auth)].into_iter().collect(),
        responses: [(RESPONSE, body)].into_iter().collect(),
    };
    Desired::of(WEB_ACL, &acl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::reference;
    use serde_json::{json, Value};

    fn graph(waf: &str, public: bool) -> Graph {
        let text = format!(
            "stack: shop\nregion: us-east-1\nservices:\n  api: {{ role: api, cpu: 256, memory: 512, port: 8080, public: {public} }}\n{waf}"
        );
        let stack = crate::stack::parse("shop.yaml", &text).unwrap_or_else(|d| panic!("{d:?}")).stack;
        let image = Image::Reference("r@sha256:00".into());
        expand(&stack, &Facts::offline(&stack), &image).unwrap()
    }

    #[test]
    fn the_web_acl_holds_the_stack_files_limits_on_the_load_balancer() {
        let g = graph("waf: { requests: 1500, auth_requests: 40, window: 2m }\n", true);
        let acl = g.get(&WEB_ACL.into()).expect("a web ACL");
        assert_eq!(acl.kind, Kind::WebAcl);
        assert!(acl.depends_on.contains(&LOAD_BALANCER.into()), "created after, deleted before the load balancer");
        let body = r#"{"error":"rate_limited","message":"too many requests from this address; retry in 120 s","retry_after":120}"#;
        assert_eq!(
            acl.props,
            json!({
                "name": "shop-waf",
                "description": "Per-address rate limits of the aira stack shop",
                "load_balancer": reference("lb", "arn"),
                "default_action": "allow",
                "metric": "shop-waf",
                "rules": {
                    "requests-per-address": {
                        "priority": 0, "limit": 1500, "window": 120, "key": "IP", "metric": "shop-waf-requests",
                        "action": "block",
                        "response": { "status": 429, "body": "rate-limited", "headers": { "Retry-After": "120" } },
                    },
                    "auth-per-address": {
                        "priority": 1, "limit": 40, "window": 120, "key": "IP", "metric": "shop-waf-auth",
                        "path_prefix": "/v1/auth/",
                        "action": "block",
                        "response": { "status": 429, "body": "rate-limited", "headers": { "Retry-After": "120" } },
                    },
                },
                "responses": { "rate-limited": { "content_type": "APPLICATION_JSON", "content": body } },
            })
        );
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["retry_after"], 120);
    }

    #[test]
    fn on_by_default_for_a_public_service_with_the_default_limits() {
        for waf in ["", "waf: true\n", "waf: {}\n"] {
            let g = graph(waf, true);
            let rules = &g.get(&WEB_ACL.into()).unwrap_or_else(|| panic!("{waf:?}: no web ACL")).props["rules"];
            let limits = (&rules[RULE_REQUESTS]["limit"], &rules[RULE_AUTH]["limit"], &rules[RULE_AUTH]["window"]);
            assert_eq!(limits, (&json!(2000), &json!(100), &json!(300)), "{waf:?}");
        }
    }

    #[test]
    fn off_when_turned_off_or_without_a_public_service() {
        for (waf, public) in [("waf: false\n", true), ("", false), ("waf: { requests: 500 }\n", false)] {
            let g = graph(waf, public);
            assert!(g.resources.iter().all(|r| r.kind != Kind::WebAcl), "{waf:?} public {public}");
        }
    }
}
