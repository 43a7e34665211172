//! AWS WAF's refusals moto lacks, and what they remember of the calls they saw.

use super::*;

/// What the AWS WAF rules need to know of the calls they saw: when a web ACL or a load balancer
/// was created, and which resources were associated.
pub(super) fn waf_remember(call: &Call<'_>, body: Bytes) -> Bytes {
    let mut w = world();
    let now = Instant::now();
    match call.call {
        "wafv2:CreateWebACL" => {
            let answer = serde_json::from_slice::<Value>(&body).unwrap_or_default();
            if let Some(arn) = answer["Summary"]["ARN"].as_str() {
                w.waf_new.insert(arn.to_string(), (now, false));
            }
        }
        "elasticloadbalancing:CreateLoadBalancer" => {
            if let Some(arn) = between(&String::from_utf8_lossy(&body), "<LoadBalancerArn>", "</LoadBalancerArn>") {
                w.waf_new.insert(arn, (now, false));
            }
        }
        "wafv2:AssociateWebACL" => {
            if let Some(lb) = call.json().and_then(|b| b["ResourceArn"].as_str().map(String::from)) {
                w.waf_associated.insert(lb);
            }
        }
        "wafv2:DisassociateWebACL" => {
            if let Some(lb) = call.json().and_then(|b| b["ResourceArn"].as_str().map(String::from)) {
                w.waf_associated.remove(&lb);
            }
        }
        _ => {}
    }
    body
}

/// An AWS WAF (JSON 1.1 protocol) error answer.
fn waf_error(kind: &str, message: &str) -> Response<Full<Bytes>> {
    json_error("application/x-amz-json-1.1", kind, message)
}

/// AWS WAF's refusals moto lacks (AWS WAF API Reference, the actions' Errors; AWS WAF Developer
/// Guide, "Rate-based rule high-level settings" and "Supported status codes for custom
/// responses"):
/// - `CreateWebACL` of a name the scope already has: `WAFDuplicateItemException` (moto answers
///   `WafV2DuplicateItem`);
/// - a rate-based rule's `Limit` outside 10 to 2,000,000,000, an `EvaluationWindowSec` other
///   than 60, 120, 300 or 600, or a custom response's status AWS WAF does not send:
///   `WAFInvalidParameterException`;
/// - `AssociateWebACL` with a load balancer that does not exist: `WAFNonexistentItemException`;
///   with a web ACL or load balancer created less than [`WAF_PROPAGATION`] ago, or on the first
///   association of each (so that a slow machine, where the association comes late, still sees
///   the refusal): `WAFUnavailableEntityException` ("After you create a web ACL, if you try to associate it
///   with a resource, you might get an exception indicating that the web ACL is unavailable");
/// - `DeleteWebACL` of a web ACL still associated with a load balancer that exists:
///   `WAFAssociatedItemException` (moto deletes it).
pub(super) async fn waf_rules(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let body = call.json()?;
    match call.call {
        "wafv2:CreateWebACL" => {
            if let Some(refused) = waf_rate_rules(&body) {
                return Some(refused);
            }
            waf_duplicate_name(moto, call, &body).await
        }
        "wafv2:UpdateWebACL" => waf_rate_rules(&body),
        "wafv2:AssociateWebACL" => {
            let (acl, resource) = (body["WebACLArn"].as_str()?, body["ResourceArn"].as_str()?);
            if resource.contains(":loadbalancer/") && !moto.load_balancer_exists(call, resource).await {
                return Some(waf_error(
                    "WAFNonexistentItemException",
                    "AWS WAF couldn’t perform the operation because your resource doesn’t exist.",
                ));
            }
            let mut w = world();
            let mut fresh = false;
            for arn in [acl, resource] {
                if let Some((created, refused)) = w.waf_new.get_mut(arn) {
                    if !*refused || created.elapsed() < WAF_PROPAGATION {
                        (*refused, fresh) = (true, true);
                    }
                }
            }
            fresh.then(|| {
                waf_error(
                    "WAFUnavailableEntityException",
                    "AWS WAF couldn’t retrieve a resource that you specified for this operation. If you've just \
                     created a resource that you're using in this operation, you might just need to wait a few \
                     minutes. It can take from a few seconds to a number of minutes for changes to propagate.",
                )
            })
        }
        "wafv2:DeleteWebACL" => {
            let id = body["Id"].as_str()?;
            let associated: Vec<String> = world().waf_associated.iter().cloned().collect();
            for resource in associated {
                let (_, answer) = moto
                    .json(call, "wafv2", "AWSWAF_20190729.GetWebACLForResource", &json!({ "ResourceArn": resource }))
                    .await;
                // moto keeps the association of a deleted load balancer; AWS drops it.
                if answer["WebACL"]["Id"].as_str() == Some(id) && moto.load_balancer_exists(call, &resource).await {
                    return Some(waf_error(
                        "WAFAssociatedItemException",
                        "AWS WAF couldn’t perform the operation because your resource is being used by another resource or it’s associated with another resource.",
                    ));
                }
            }
            None
        }
        _ => None,
    }
}

/// The status codes AWS WAF sends in a custom response (Developer Guide, "Supported status codes
/// for custom responses").
const WAF_RESPONSE_CODES: [i64; 33] = [
    200, 201, 202, 204, 206, 300, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 411, 412, 413, 414,
    415, 416, 421, 429, 500, 501, 502, 503, 504, 505,
];

/// A rate-based rule AWS WAF refuses, in `CreateWebACL` or `UpdateWebACL`.
fn waf_rate_rules(body: &Value) -> Option<Response<Full<Bytes>>> {
    let invalid = |field: &str, value: &Value| {
        Some(waf_error(
            "WAFInvalidParameterException",
            &format!(
                "Error reason: The parameter contains a value that is not valid., field: {field}, parameter: {value}"
            ),
        ))
    };
    for rule in body["Rules"].as_array().into_iter().flatten() {
        if let Some(rate) = rule["Statement"].get("RateBasedStatement") {
            let limit = &rate["Limit"];
            if !limit.as_i64().is_some_and(|l| (10..=2_000_000_000).contains(&l)) {
                return invalid("RATE_BASED_STATEMENT_LIMIT", limit);
            }
            let window = &rate["EvaluationWindowSec"];
            if !window.is_null() && !window.as_i64().is_some_and(|w| [60, 120, 300, 600].contains(&w)) {
                return invalid("RATE_BASED_STATEMENT_EVALUATION_WINDOW_SEC", window);
            }
        }
        let code = &rule["Action"]["Block"]["CustomResponse"]["ResponseCode"];
        if !code.is_null() && !code.as_i64().is_some_and(|c| WAF_RESPONSE_CODES.contains(&c)) {
            return invalid("CUSTOM_RESPONSE_CODE", code);
        }
    }
    None
}

/// `CreateWebACL` of a name the scope already holds (moto refuses it under another code).
async fn waf_duplicate_name(moto: &Moto<'_>, call: &Call<'_>, body: &Value) -> Option<Response<Full<Bytes>>> {
    let name = body["Name"].as_str()?;
    let mut marker = Value::Null;
    loop {
        let req = json!({ "Scope": body["Scope"], "Limit": 100, "NextMarker": marker });
        let (_, page) = moto.json(call, "wafv2", "AWSWAF_20190729.ListWebACLs", &req).await;
        let acls = page["WebACLs"].as_array().cloned().unwrap_or_default();
        if acls.iter().any(|a| a["Name"].as_str() == Some(name)) {
            return Some(waf_error(
                "WAFDuplicateItemException",
                "AWS WAF couldn’t perform the operation because some resource in your request is a duplicate of an existing one.",
            ));
        }
        marker = page["NextMarker"].clone();
        if acls.is_empty() || !marker.is_string() {
            return None;
        }
    }
}
