//! Per-address limits at the edge: `aira up` of a stack with a public service creates its AWS WAF
//! web ACL and associates it with the load balancer. Read back with the WAFv2 SDK, apart from the
//! provider: the two rate-based rules with the stack file's limits (not the defaults), the
//! account routes' scope-down, the 429 a blocked request gets, the tags and the association
//! (GetWebACLForResource); a plan right after is empty; a changed limit is an update in place
//! (UpdateWebACL with the lock token of a fresh read, after one stale token); `waf: false`
//! removes it, disassociated first; `down` leaves nothing.
//!
//! Through a proxy that answers as AWS WAF documents where moto does not (`aws_rules::waf`):
//! the association right after the creation is refused as unavailable, and deleting a web ACL
//! still associated is refused.

use std::collections::BTreeMap;

use aws_sdk_wafv2::error::ProvideErrorMetadata;
use aws_sdk_wafv2::types::{PositionalConstraint, RateBasedStatement, Rule, Scope, TextTransformationType, WebAcl};
use serde_json::Value;

use crate::harness::{aira, endpoint, sdk_config_in, unique_stack, Workdir};
use crate::proxy::{Faults, Proxy, Sent};

/// An image in ECR: the tasks pull it through the stack's endpoints (the reachability check).
fn image() -> String {
    format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:{}", "ab".repeat(32))
}

/// A stack with a public api (no domain, no NAT: the offline model), its `waf` as given.
fn stack(name: &str, waf: &str) -> String {
    format!(
        "stack: {name}\nregion: us-east-1\nnetwork:\n  endpoints: [sqs, ecr.api, ecr.dkr, logs, s3, dynamodb]\n\
         services:\n  api: {{ role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }}\n\
         monitoring: false\n{waf}"
    )
}

/// The stack's web ACLs (`STACK-waf`) in the region's REGIONAL scope, as AWS WAF lists them.
async fn listed(waf: &aws_sdk_wafv2::Client, name: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut marker = None;
    loop {
        let page = waf.list_web_acls().scope(Scope::Regional).limit(100).set_next_marker(marker).send().await.unwrap();
        for acl in page.web_acls() {
            if acl.name() == Some(format!("{name}-waf").as_str()) {
                found.push((acl.name().unwrap().to_string(), acl.id().unwrap().to_string()));
            }
        }
        marker = page.next_marker().map(String::from);
        if marker.is_none() || page.web_acls().is_empty() {
            return found;
        }
    }
}

/// The stack's one web ACL, read with GetWebACL.
async fn read(waf: &aws_sdk_wafv2::Client, name: &str) -> WebAcl {
    let listed = listed(waf, name).await;
    let [(acl_name, id)] = listed.as_slice() else { panic!("one web ACL {name}-waf: {listed:?}") };
    let got = waf.get_web_acl().name(acl_name).scope(Scope::Regional).id(id).send().await.unwrap();
    got.web_acl().unwrap().clone()
}

fn rules(acl: &WebAcl) -> BTreeMap<&str, &Rule> {
    acl.rules().iter().map(|r| (r.name(), r)).collect()
}

fn rate(r: &Rule) -> &RateBasedStatement {
    r.statement().and_then(|s| s.rate_based_statement()).unwrap_or_else(|| panic!("{}: not rate-based", r.name()))
}

/// The mutating AWS WAF and ELB calls of a run, with their answers' statuses, in order.
fn changes(sent: &[Sent]) -> Vec<(String, u16)> {
    sent.iter()
        .filter(|s| s.call.starts_with("wafv2:") || s.call.starts_with("elasticloadbalancing:"))
        .filter(|s| crate::proxy::is_mutating(&s.call))
        .map(|s| (s.call.clone(), s.status))
        .collect()
}

fn position(calls: &[(String, u16)], call: &str, status: u16) -> usize {
    calls
        .iter()
        .position(|(c, s)| c == call && *s == status)
        .unwrap_or_else(|| panic!("no {call} ({status}): {calls:?}"))
}

#[tokio::test]
async fn waf_rate_rules_on_the_load_balancer_are_the_stack_files_change_in_place_and_go() {
    let name = unique_stack("waf");
    let work = Workdir::new();
    let file = work.write("stack.yaml", &stack(&name, "waf: { requests: 1500, auth_requests: 40 }\n"));
    let file = file.to_str().unwrap();
    let dir = work.dir.path();
    // The first UpdateWebACL is refused as when another write came between its read and it.
    let faults = Faults { ec2_error: Some(("UpdateWebACL", "WAFOptimisticLockException", 1)), ..Default::default() };
    let proxy = Proxy::start(&endpoint(), faults).await;
    let image = image();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--endpoint-url", proxy.url.as_str()]);
        let all: Vec<String> = all.into_iter().map(String::from).collect();
        async move { aira(dir, &all.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    let up = run(&["up", file, "--yes", "--image", &image, "--timeout", "2m"]).await;
    up.assert_code(0);
    // AWS WAF did not know the new web ACL yet (the proxy answers as AWS documents): the
    // association waited, and said so.
    assert!(up.stderr.contains("you might just need to wait a few minutes"), "{}", up.stderr);
    assert!(up.stderr.contains("waiting for AWS WAF to know the new web ACL and load balancer"), "{}", up.stderr);
    let created = changes(&proxy.take_requests());
    assert!(created.contains(&("wafv2:AssociateWebACL".into(), 400)), "{created:?}");
    assert!(
        position(&created, "elasticloadbalancing:CreateLoadBalancer", 200)
            < position(&created, "wafv2:CreateWebACL", 200),
        "{created:?}"
    );

    let config = sdk_config_in("us-east-1");
    let waf = aws_sdk_wafv2::Client::new(&config);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let lbs = elb.describe_load_balancers().names(&name).send().await.unwrap();
    let lb = lbs.load_balancers()[0].load_balancer_arn().unwrap().to_string();

    let acl = read(&waf, &name).await;
    // Tagged at creation, as every resource of the stack.
    let tags = waf.list_tags_for_resource().resource_arn(acl.arn()).send().await.unwrap();
    let tags: BTreeMap<&str, &str> =
        tags.tag_info_for_resource().unwrap().tag_list().iter().map(|t| (t.key(), t.value())).collect();
    for (k, v) in [("aira:stack", name.as_str()), ("aira:id", "waf"), ("aira:managed-by", "aira")] {
        assert_eq!(tags.get(k), Some(&v), "tag {k}: {tags:?}");
    }
    assert!(acl.default_action().unwrap().allow().is_some(), "requests under the limits pass");
    let metrics = acl.visibility_config().unwrap();
    assert!(metrics.cloud_watch_metrics_enabled() && metrics.sampled_requests_enabled());
    assert_eq!(metrics.metric_name(), format!("{name}-waf"));

    let by_name = rules(&acl);
    assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["auth-per-address", "requests-per-address"]);
    let (all, auth) = (by_name["requests-per-address"], by_name["auth-per-address"]);
    // Every request first, then the account routes.
    assert_eq!((all.priority(), auth.priority()), (0, 1));
    for (rule, limit) in [(all, 1500), (auth, 40)] {
        let r = rate(rule);
        assert_eq!(r.limit(), limit, "{}: the stack file's limit", rule.name());
        assert_eq!(r.evaluation_window_sec(), 300, "{}", rule.name());
        assert_eq!(
            r.aggregate_key_type().as_str(),
            "IP",
            "{}: the client's address as the load balancer sees it",
            rule.name()
        );
        let visibility = rule.visibility_config().unwrap();
        assert!(visibility.cloud_watch_metrics_enabled() && visibility.sampled_requests_enabled(), "{}", rule.name());
        assert!(visibility.metric_name().starts_with(&format!("{name}-waf-")), "{}", visibility.metric_name());
        // Blocked with 429, the runtime's JSON error and Retry-After.
        let response = rule.action().unwrap().block().expect("blocks").custom_response().expect("a custom response");
        assert_eq!(response.response_code(), 429, "{}", rule.name());
        let headers: Vec<(&str, &str)> = response.response_headers().iter().map(|h| (h.name(), h.value())).collect();
        assert_eq!(headers, [("Retry-After", "300")], "{}", rule.name());
        let key = response.custom_response_body_key().unwrap();
        let body = &acl.custom_response_bodies().unwrap()[key];
        assert_eq!(body.content_type().as_str(), "APPLICATION_JSON");
        let body: Value = serde_json::from_str(body.content()).unwrap();
        assert_eq!((body["error"].as_str(), body["retry_after"].as_u64()), (Some("rate_limited"), Some(300)));
    }
    assert!(rate(all).scope_down_statement().is_none(), "every request counts");
    let down = rate(auth).scope_down_statement().and_then(|s| s.byte_match_statement()).expect("a byte match");
    assert_eq!(std::str::from_utf8(down.search_string().as_ref()).unwrap(), "/v1/auth/");
    assert_eq!(down.positional_constraint(), &PositionalConstraint::StartsWith);
    assert!(down.field_to_match().and_then(|f| f.uri_path()).is_some(), "on the URI path");
    let transforms: Vec<&TextTransformationType> = down.text_transformations().iter().map(|t| t.r#type()).collect();
    assert_eq!(transforms, [&TextTransformationType::None]);
    // On the stack's load balancer.
    let on_lb = waf.get_web_acl_for_resource().resource_arn(&lb).send().await.unwrap();
    assert_eq!(on_lb.web_acl().map(|a| a.arn()), Some(acl.arn()));

    // Right after: nothing to change.
    run(&["plan", file, "--image", &image, "--detailed-exitcode"]).await.assert_code(0);

    // A new limit is an update in place.
    std::fs::write(file, stack(&name, "waf: { requests: 600, auth_requests: 40 }\n")).unwrap();
    let plan = run(&["plan", file, "--image", &image, "--output", "json"]).await.json();
    let steps = plan["steps"].as_array().unwrap();
    let step = steps.iter().find(|s| s["id"] == "waf").unwrap();
    assert_eq!(step["action"], "update", "{step}");
    let changed: Vec<(&str, &Value, &Value)> = step["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap(), &c["before"], &c["after"]))
        .collect();
    assert_eq!(changed, [("rules.requests-per-address.limit", &Value::from(1500), &Value::from(600))]);
    assert!(steps.iter().filter(|s| s["id"] != "waf").all(|s| s["action"] == "no-op"), "{plan}");
    proxy.take_requests();
    run(&["up", file, "--yes", "--image", &image, "--timeout", "2m"]).await.assert_code(0);
    let sent = proxy.take_requests();
    let updated = changes(&sent);
    // The stale token was read again: a GetWebACL between the refused write and the accepted one.
    assert_eq!(updated, [("wafv2:UpdateWebACL".into(), 400), ("wafv2:UpdateWebACL".into(), 200)]);
    let writes: Vec<usize> = (0..sent.len()).filter(|i| sent[*i].call == "wafv2:UpdateWebACL").collect();
    assert!(sent[writes[0]..writes[1]].iter().any(|s| s.call == "wafv2:GetWebACL"), "no read between the writes");
    for i in writes {
        assert!(sent[i].json()["LockToken"].as_str().is_some_and(|t| !t.is_empty()), "{}", sent[i].body);
    }
    let after = read(&waf, &name).await;
    assert_eq!((after.arn(), after.id()), (acl.arn(), acl.id()), "the same web ACL");
    let by_name = rules(&after);
    assert_eq!((rate(by_name["requests-per-address"]).limit(), rate(by_name["auth-per-address"]).limit()), (600, 40));
    run(&["plan", file, "--image", &image, "--detailed-exitcode"]).await.assert_code(0);

    // `waf: false`: disassociated, then deleted; the load balancer stays.
    std::fs::write(file, stack(&name, "waf: false\n")).unwrap();
    run(&["up", file, "--yes", "--image", &image, "--timeout", "2m"]).await.assert_code(0);
    let removed = changes(&proxy.take_requests());
    assert!(
        position(&removed, "wafv2:DisassociateWebACL", 200) < position(&removed, "wafv2:DeleteWebACL", 200),
        "{removed:?}"
    );
    assert!(!removed.iter().any(|(c, _)| c.ends_with(":DeleteLoadBalancer")), "{removed:?}");
    assert_eq!(listed(&waf, &name).await, []);
    let on_lb = waf.get_web_acl_for_resource().resource_arn(&lb).send().await.unwrap();
    assert!(on_lb.web_acl().is_none(), "{on_lb:?}");
    run(&["plan", file, "--image", &image, "--detailed-exitcode"]).await.assert_code(0);

    // On again, then `down`: the web ACL lets go of the load balancer and goes before it.
    std::fs::write(file, stack(&name, "")).unwrap();
    run(&["up", file, "--yes", "--image", &image, "--timeout", "2m"]).await.assert_code(0);
    let defaults = rules(&read(&waf, &name).await).values().map(|r| rate(r).limit()).collect::<Vec<_>>();
    assert_eq!(defaults, [100, 2000], "the defaults without a `waf` key");
    // Why the order matters: a web ACL still associated is not deleted (the proxy as AWS WAF).
    let acl = read(&waf, &name).await;
    let token = waf.get_web_acl().name(acl.name()).scope(Scope::Regional).id(acl.id()).send().await.unwrap();
    let proxied = aws_sdk_wafv2::config::Builder::from(&config).endpoint_url(&proxy.url).build();
    let refused = aws_sdk_wafv2::Client::from_conf(proxied)
        .delete_web_acl()
        .name(acl.name())
        .scope(Scope::Regional)
        .id(acl.id())
        .lock_token(token.lock_token().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("WAFAssociatedItemException"), "{refused:?}");
    assert_eq!(listed(&waf, &name).await.len(), 1);
    proxy.take_requests();
    run(&["down", file, "--yes", "--timeout", "2m"]).await.assert_code(0);
    let gone = changes(&proxy.take_requests());
    let (disassociated, deleted, lb_deleted) = (
        position(&gone, "wafv2:DisassociateWebACL", 200),
        position(&gone, "wafv2:DeleteWebACL", 200),
        position(&gone, "elasticloadbalancing:DeleteLoadBalancer", 200),
    );
    assert!(disassociated < deleted && deleted < lb_deleted, "{gone:?}");
    assert_eq!(listed(&waf, &name).await, []);
    crate::harness::assert_nothing_left(&name, "us-east-1").await;
}
