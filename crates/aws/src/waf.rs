//! The stack's AWS WAF web ACL (`wafv2.web-acl`, scope REGIONAL): the per-address rate-based
//! rules `expand/waf.rs` writes, on the stack's load balancer.
//!
//! # The association is a property, not a kind
//!
//! Which load balancer the web ACL protects is its property `load_balancer` (`{"$ref":
//! "lb.arn"}` in the graph), applied with AssociateWebACL / DisassociateWebACL and read back with
//! GetWebACLForResource. As a kind of its own (CloudFormation's `WebACLAssociation`) it would be
//! a resource without tags or an id, found only through the two it joins, replaced on any change;
//! and a web ACL cannot be deleted while it is associated (`WAFAssociatedItemException`), so the
//! web ACL's delete has to let go of the load balancer first anyway. As a property the reference
//! is the dependency: the engine creates the web ACL after the load balancer and deletes it
//! (disassociating first) before the load balancer, with no ordering of its own; an association
//! removed or moved outside aira shows as an update of `load_balancer` and is made again in
//! place; the plan shows one resource, priced once.
//!
//! # Finding it
//!
//! ListWebACLs (REGIONAL, pages by NextMarker) has no tag filter: the web ACLs named `STACK-…`
//! have their tags read (ListTagsForResource), and one is adopted only with `aira:stack` = the
//! stack (`sdk::adopt`). GetWebACL gives its rules and lock token; GetWebACLForResource, asked for
//! each of the stack's load balancers (the observe's shared list), which one it protects.
//!
//! # Writing it
//!
//! CreateWebACL carries the tags. UpdateWebACL replaces every setting and, like DeleteWebACL,
//! needs the LockToken of the latest GetWebACL (optimistic locking): a write made in between
//! makes AWS refuse it with `WAFOptimisticLockException`, and it is read again and reapplied.
//!
//! # Eventual consistency
//!
//! "When you create or change a web ACL or other AWS WAF resources, the changes take a small
//! amount of time to propagate … from a few seconds to a number of minutes. … After you create a
//! web ACL, if you try to associate it with a resource, you might get an exception indicating
//! that the web ACL is unavailable." (AWS WAF API Reference, AssociateWebACL.) That exception,
//! `WAFUnavailableEntityException` ("AWS WAF couldn’t retrieve a resource that you specified for
//! this operation. If you've just created a resource that you're using in this operation, you
//! might just need to wait a few minutes"), holds for the load balancer just created as much as
//! for the web ACL: the association retries it until `--timeout`, saying what it waits for. The
//! delete right after the disassociation may still meet the association
//! (`WAFAssociatedItemException`) and retries it the same way; a web ACL someone associated with a
//! resource outside the stack is not let go of (aira does not touch what is not the stack's), so
//! its delete fails at `--timeout` with AWS's error, naming the web ACL.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_wafv2::error::BuildError;
use aws_sdk_wafv2::primitives::Blob;
use aws_sdk_wafv2::types::{
    AllowAction, BlockAction, ByteMatchStatement, CustomHttpHeader, CustomResponse, CustomResponseBody, DefaultAction,
    FieldToMatch, PositionalConstraint, RateBasedStatement, RateBasedStatementAggregateKeyType, ResponseContentType,
    Rule, RuleAction, Scope as WafScope, Statement, TextTransformation, TextTransformationType, UriPath,
    VisibilityConfig, WebAcl as Acl,
};
use aws_sdk_wafv2::Client;
use serde_json::Value;

use crate::ops::{Cx, KindOps};
use crate::sdk;
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, Val, Verdict};
use aira_engine::provider::{ErrorKind, Observed, ProviderError, Resolved, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

pub struct WebAcl;

/// The web ACL (or the load balancer) is gone.
const GONE: &[&str] = &["WAFNonexistentItemException"];

/// AssociateWebACL right after CreateWebACL or CreateLoadBalancer (see the module's doc).
const PROPAGATING: sdk::Busy = sdk::Busy {
    codes: &["WAFUnavailableEntityException"],
    waits_for: "AWS WAF to know the new web ACL and load balancer (its changes take seconds to minutes to propagate)",
    gone: &[],
};

/// UpdateWebACL with a lock token another write made stale.
const STALE: sdk::Busy = sdk::Busy {
    codes: &["WAFOptimisticLockException"],
    waits_for: "a fresh lock token (the web ACL changed since it was read): reading it again",
    gone: &[],
};

/// DeleteWebACL: a stale lock token, or the disassociation not yet seen by AWS WAF.
const DELETING: sdk::Busy = sdk::Busy {
    codes: &["WAFOptimisticLockException", "WAFAssociatedItemException"],
    waits_for: "AWS WAF to see the web ACL let go of the load balancer, with a fresh lock token",
    gone: GONE,
};

fn output<'a>(o: &'a Observed, key: &str) -> &'a str {
    o.outputs.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The web ACLs of the stack: their logical id, name and AWS id.
async fn list(waf: &Client, scope: &Scope) -> Result<Vec<(LogicalId, String, String)>> {
    let prefix = format!("{}-", scope.stack);
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let req = waf.list_web_acls().scope(WafScope::Regional).limit(100).set_next_marker(marker.take());
        let page = call!("list web ACLs (REGIONAL)", req.send());
        for acl in page.web_acls() {
            let (Some(name), Some(arn), Some(id)) = (acl.name(), acl.arn(), acl.id()) else { continue };
            if !name.starts_with(&prefix) {
                continue;
            }
            let tags = waf.list_tags_for_resource().resource_arn(arn).send().await;
            let Some(tags) = sdk::found(format!("read tags of web ACL {arn}"), GONE, tags)? else { continue };
            let tags = tags.tag_info_for_resource().map(|t| t.tag_list()).unwrap_or_default();
            if let Some(logical) = sdk::adopt_tags(scope, tags) {
                found.push((logical, name.to_string(), id.to_string()));
            }
        }
        marker = page.next_marker().filter(|m| !m.is_empty()).map(String::from);
        if marker.is_none() || page.web_acls().is_empty() {
            break;
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(found)
}

/// Which of `load_balancers` each web ACL protects: web ACL ARN → load balancer ARN.
async fn protected(waf: &Client, load_balancers: &[Observed]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for lb in load_balancers {
        let arn = &lb.physical_id;
        let answer = waf.get_web_acl_for_resource().resource_arn(arn).send().await;
        // A load balancer AWS WAF does not know yet protects nothing yet.
        let gone: &[&str] = &["WAFNonexistentItemException", "WAFUnavailableEntityException"];
        let Some(answer) = sdk::found(format!("read the web ACL of load balancer {arn}"), gone, answer)? else {
            continue;
        };
        if let Some(acl) = answer.web_acl() {
            out.insert(acl.arn().to_string(), arn.clone());
        }
    }
    Ok(out)
}

/// The web ACL and the lock token a write needs; `None` when it is gone.
async fn get(waf: &Client, name: &str, id: &str) -> Result<Option<(Acl, String)>> {
    let answer = waf.get_web_acl().name(name).scope(WafScope::Regional).id(id).send().await;
    let Some(answer) = sdk::found(format!("read web ACL {name}"), GONE, answer)? else { return Ok(None) };
    let token = answer.lock_token().unwrap_or_default().to_string();
    Ok(answer.web_acl().cloned().map(|acl| (acl, token)))
}

/// The web ACL as `get` reads it right after a change, protecting `load_balancer`.
async fn reread(
    waf: &Client,
    id: &LogicalId,
    name: &str,
    aws_id: &str,
    lb: Option<&str>,
    what: &str,
) -> Result<Observed> {
    match get(waf, name, aws_id).await? {
        Some((acl, _)) => Ok(observed(id.clone(), &acl, lb)),
        None => Err(ProviderError::new(format!("{what}: web ACL {name} is not there right after the call"))),
    }
}

/// AssociateWebACL, waiting out AWS WAF's propagation (see the module's doc).
async fn associate(cx: &Cx<'_>, id: &LogicalId, acl: &str, lb: &str, what: &str) -> Result<()> {
    let what = format!("{what}: associate it with load balancer {lb}");
    sdk::retry_busy(cx.scope, cx.progress, id, &what, &PROPAGATING, || {
        cx.aws.waf.associate_web_acl().web_acl_arn(acl).resource_arn(lb).send()
    })
    .await?;
    Ok(())
}

/// DisassociateWebACL; a load balancer already gone has nothing to let go of.
async fn disassociate(waf: &Client, lb: &str, what: &str) -> Result<()> {
    let answer = waf.disassociate_web_acl().resource_arn(lb).send().await;
    sdk::found(format!("{what}: disassociate it from load balancer {lb}"), GONE, answer)?;
    Ok(())
}

/// A metric name with metrics and sampled requests on (what aira writes), or every setting.
fn metric_props(v: Option<&VisibilityConfig>) -> Option<kind::Metric> {
    v.map(|v| match (v.sampled_requests_enabled(), v.cloud_watch_metrics_enabled()) {
        (true, true) => kind::Metric::Name(v.metric_name().to_string()),
        (sampled_requests, cloudwatch_metrics) => {
            kind::Metric::Settings { name: v.metric_name().to_string(), cloudwatch_metrics, sampled_requests }
        }
    })
}

/// The URI path prefix of a scope-down statement written as aira writes it (a byte match,
/// `STARTS_WITH`, on the path, no text transformation).
fn path_prefix(statement: &Statement) -> Option<String> {
    let m = statement.byte_match_statement()?;
    let on_path = m.field_to_match().is_some_and(|f| f.uri_path().is_some());
    let plain = m.text_transformations().iter().all(|t| *t.r#type() == TextTransformationType::None);
    let starts = *m.positional_constraint() == PositionalConstraint::StartsWith;
    (on_path && plain && starts).then(|| String::from_utf8_lossy(m.search_string().as_ref()).into_owned())
}

fn response_props(c: &CustomResponse) -> kind::Response {
    kind::Response {
        status: c.response_code(),
        body: c.custom_response_body_key().map(String::from),
        headers: c.response_headers().iter().map(|h| (h.name(), h.value().to_string())).collect(),
    }
}

/// A rule in the normal form of `expand/waf.rs`; what aira does not write shows as a difference.
fn rule_props(r: &Rule) -> kind::Rule {
    let action = r.action();
    let rate = r.statement().and_then(|s| s.rate_based_statement());
    let down = rate.and_then(|rate| rate.scope_down_statement());
    kind::Rule {
        priority: r.priority(),
        limit: rate.map(|rate| rate.limit()),
        window: rate.map(|rate| rate.evaluation_window_sec()),
        key: rate.map(|rate| rate.aggregate_key_type().as_str().to_string()),
        metric: metric_props(r.visibility_config()),
        action: match action {
            Some(a) if a.block().is_some() => Verdict::Block,
            Some(a) if a.allow().is_some() => Verdict::Allow,
            Some(a) if a.count().is_some() => Verdict::Count,
            Some(a) if a.captcha().is_some() => Verdict::Captcha,
            Some(a) if a.challenge().is_some() => Verdict::Challenge,
            _ => Verdict::Unset,
        },
        response: action.and_then(|a| a.block()).and_then(|b| b.custom_response()).map(response_props),
        path_prefix: down.map(|down| path_prefix(down).unwrap_or_else(|| "(another statement)".into())),
        statement: rate.is_none().then(|| "(not a rate-based statement)".into()),
    }
}

/// The web ACL in the normal form of `expand/waf.rs`.
fn observed(id: LogicalId, acl: &Acl, load_balancer: Option<&str>) -> Observed {
    // Sorted: AWS answers the bodies as a map, in no order.
    let mut responses: Vec<(&String, &CustomResponseBody)> =
        acl.custom_response_bodies().into_iter().flatten().collect();
    responses.sort_by_key(|(key, _)| *key);
    let props = kind::WebAcl {
        name: acl.name().to_string(),
        description: acl.description().unwrap_or_default().to_string(),
        load_balancer: load_balancer.map(Val::from),
        default_action: match acl.default_action() {
            Some(d) if d.allow().is_some() => Some(Verdict::Allow),
            Some(d) if d.block().is_some() => Some(Verdict::Block),
            _ => None,
        },
        metric: metric_props(acl.visibility_config()),
        rules: acl.rules().iter().map(|r| (r.name(), rule_props(r))).collect(),
        responses: responses
            .into_iter()
            .map(|(key, b)| {
                let body = kind::ResponseBody {
                    content_type: b.content_type().as_str().to_string(),
                    content: b.content().to_string(),
                };
                (key.as_str(), body)
            })
            .collect(),
    };
    Observed::of(id, acl.arn(), &props).output("arn", acl.arn()).output("id", acl.id()).output("name", acl.name())
}

/// What CreateWebACL and UpdateWebACL both send: every setting but the name.
struct Settings {
    description: Option<String>,
    default_action: DefaultAction,
    rules: Vec<Rule>,
    visibility: VisibilityConfig,
    bodies: HashMap<String, CustomResponseBody>,
}

fn visibility(metric: Option<&kind::Metric>) -> std::result::Result<VisibilityConfig, BuildError> {
    let (name, cloudwatch, sampled) = match metric {
        Some(kind::Metric::Name(name)) => (name.as_str(), true, true),
        Some(kind::Metric::Settings { name, cloudwatch_metrics, sampled_requests }) => {
            (name.as_str(), *cloudwatch_metrics, *sampled_requests)
        }
        None => ("", true, true),
    };
    VisibilityConfig::builder()
        .sampled_requests_enabled(sampled)
        .cloud_watch_metrics_enabled(cloudwatch)
        .metric_name(name)
        .build()
}

/// A rate-based rule that blocks with the custom response: over every request, or (with
/// `path_prefix`) over those whose URI path starts with it.
fn rule(name: &str, r: &kind::Rule) -> std::result::Result<Rule, BuildError> {
    let mut rate = RateBasedStatement::builder()
        .limit(r.limit.unwrap_or_default())
        .evaluation_window_sec(r.window.unwrap_or(300))
        .aggregate_key_type(RateBasedStatementAggregateKeyType::from(r.key.as_deref().unwrap_or_default()));
    if let Some(prefix) = &r.path_prefix {
        let on_path = ByteMatchStatement::builder()
            .search_string(Blob::new(prefix.as_bytes()))
            .field_to_match(FieldToMatch::builder().uri_path(UriPath::builder().build()).build())
            .text_transformations(
                TextTransformation::builder().priority(0).r#type(TextTransformationType::None).build()?,
            )
            .positional_constraint(PositionalConstraint::StartsWith)
            .build()?;
        rate = rate.scope_down_statement(Statement::builder().byte_match_statement(on_path).build());
    }
    let mut response = CustomResponse::builder().response_code(429);
    if let Some(r) = &r.response {
        response = response.response_code(r.status).set_custom_response_body_key(r.body.clone());
        for (header, value) in r.headers.iter() {
            response = response.response_headers(CustomHttpHeader::builder().name(header).value(value).build()?);
        }
    }
    Rule::builder()
        .name(name)
        .priority(r.priority)
        .statement(Statement::builder().rate_based_statement(rate.build()?).build())
        .action(RuleAction::builder().block(BlockAction::builder().custom_response(response.build()?).build()).build())
        .visibility_config(visibility(r.metric.as_ref())?)
        .build()
}

impl Settings {
    fn of(p: &kind::WebAcl) -> std::result::Result<Settings, BuildError> {
        let default_action = match p.default_action {
            Some(Verdict::Block) => DefaultAction::builder().block(BlockAction::builder().build()).build(),
            _ => DefaultAction::builder().allow(AllowAction::builder().build()).build(),
        };
        let rules: Vec<Rule> = p.rules.iter().map(|(name, r)| rule(name, r)).collect::<std::result::Result<_, _>>()?;
        let mut bodies = HashMap::new();
        for (key, b) in p.responses.iter() {
            let body = CustomResponseBody::builder()
                .content_type(ResponseContentType::from(b.content_type.as_str()))
                .content(&b.content)
                .build()?;
            bodies.insert(key.to_string(), body);
        }
        Ok(Settings {
            description: Some(p.description.clone()).filter(|d| !d.is_empty()),
            default_action,
            rules,
            visibility: visibility(p.metric.as_ref())?,
            bodies,
        })
    }
}

fn built(what: &str, e: BuildError) -> ProviderError {
    ProviderError::new(format!("{what}: the request could not be built ({e}), an internal error"))
}

/// Every property but the association: what UpdateWebACL changes.
fn settings_of(p: &kind::WebAcl) -> kind::WebAcl {
    kind::WebAcl { load_balancer: None, ..p.clone() }
}

#[async_trait]
impl KindOps for WebAcl {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let ours = list(&cx.aws.waf, cx.scope).await?;
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let protects = protected(&cx.aws.waf, crate::elb::load_balancer::shared(cx).await?).await?;
        let mut found = Vec::new();
        for (id, name, aws_id) in ours {
            if let Some((acl, _)) = get(&cx.aws.waf, &name, &aws_id).await? {
                let lb = protects.get(acl.arn()).map(String::as_str);
                found.push(observed(id, &acl, lb));
            }
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (waf, p) = (&cx.aws.waf, res.props::<kind::WebAcl>()?);
        let name = p.name.as_str();
        let what = format!("create {} `{}` ({name})", res.kind, res.id);
        let set = Settings::of(&p).map_err(|e| built(&what, e))?;
        let answer = call!(
            what,
            waf.create_web_acl()
                .name(name)
                .scope(WafScope::Regional)
                .set_description(set.description)
                .default_action(set.default_action)
                .set_rules(Some(set.rules))
                .visibility_config(set.visibility)
                .set_custom_response_bodies(Some(set.bodies))
                .set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[])))
                .send()
        );
        let summary = answer.summary();
        let (Some(arn), Some(aws_id)) = (summary.and_then(|s| s.arn()), summary.and_then(|s| s.id())) else {
            return Err(ProviderError::new(format!("{what}: AWS returned no web ACL")));
        };
        let lb = p.load_balancer.as_ref().map(Val::as_str);
        if let Some(lb) = lb {
            associate(cx, &res.id, arn, lb, &what).await?;
        }
        reread(waf, &res.id, name, aws_id, lb, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let waf = &cx.aws.waf;
        let (want, have): (kind::WebAcl, kind::WebAcl) = (res.props()?, current.props()?);
        let (name, aws_id, arn) = (output(current, "name"), output(current, "id"), current.physical_id.as_str());
        let what = format!("update {} `{}` ({name})", res.kind, res.id);
        if settings_of(&want) != settings_of(&have) {
            let set = &Settings::of(&want).map_err(|e| built(&what, e))?;
            let write = || async move {
                let Some((_, token)) = get(waf, name, aws_id).await? else {
                    return Err(ProviderError::coded(ErrorKind::NotFound, None, format!("web ACL {name} is gone")));
                };
                waf.update_web_acl()
                    .name(name)
                    .scope(WafScope::Regional)
                    .id(aws_id)
                    .lock_token(token)
                    .set_description(set.description.clone())
                    .default_action(set.default_action.clone())
                    .set_rules(Some(set.rules.clone()))
                    .visibility_config(set.visibility.clone())
                    .set_custom_response_bodies(Some(set.bodies.clone()))
                    .send()
                    .await
                    .map_err(|e| sdk::error("UpdateWebACL", e))
            };
            sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &STALE, write).await?;
        }
        let (to, from) = (want.load_balancer.as_ref().map(Val::as_str), have.load_balancer.as_ref().map(Val::as_str));
        if to != from {
            if let Some(from) = from {
                disassociate(waf, from, &what).await?;
            }
            if let Some(to) = to {
                associate(cx, &res.id, arn, to, &what).await?;
            }
        }
        reread(waf, &res.id, name, aws_id, to, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let waf = &cx.aws.waf;
        let (name, aws_id) = (output(current, "name"), output(current, "id"));
        let what = format!("delete {} `{}` ({name})", current.kind, current.id);
        // Deleting a web ACL still associated is refused (WAFAssociatedItemException).
        if let Some(lb) = current.props::<kind::WebAcl>()?.load_balancer {
            disassociate(waf, lb.as_str(), &what).await?;
        }
        let delete = || async move {
            let Some((_, token)) = get(waf, name, aws_id).await? else { return Ok(None) };
            let sent = waf.delete_web_acl().name(name).scope(WafScope::Regional).id(aws_id).lock_token(token).send();
            sent.await.map(Some).map_err(|e| sdk::error("DeleteWebACL", e))
        };
        sdk::retry_busy(cx.scope, cx.progress, &current.id, &what, &DELETING, delete).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use aira_engine::expand::{expand, Image};
    use aira_engine::graph::{resolve, Kind, Props};
    use aira_engine::provider::Facts;

    const LB: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/shop/0123456789abcdef";

    /// The web ACL `expand` makes of a stack, its load balancer's ARN filled in.
    fn desired(waf: &str) -> kind::WebAcl {
        let text = format!(
            "stack: shop\nregion: us-east-1\nservices:\n  api: {{ role: api, cpu: 256, memory: 512, port: 8080, public: true }}\n{waf}"
        );
        let stack = aira_engine::stack::parse("shop.yaml", &text).unwrap().stack;
        let graph = expand(&stack, &Facts::offline(&stack), &Image::Reference("r@sha256:00".into())).unwrap();
        let acl = graph.resources.iter().find(|r| r.kind == Kind::WebAcl).unwrap();
        let props = resolve(&acl.props, &|id, out| (id.0 == "lb" && out == "arn").then(|| Value::from(LB))).unwrap();
        kind::WebAcl::from_value(&props).unwrap()
    }

    /// What GetWebACL would answer for a web ACL created from `props`.
    fn as_created(props: &kind::WebAcl) -> Acl {
        let set = Settings::of(props).unwrap();
        Acl::builder()
            .name(&props.name)
            .id("0c0ffee0-0000-4000-8000-000000000000")
            .arn("arn:aws:wafv2:us-east-1:000000000000:regional/webacl/shop-waf/0c0ffee0-0000-4000-8000-000000000000")
            .set_description(set.description)
            .default_action(set.default_action)
            .set_rules(Some(set.rules))
            .visibility_config(set.visibility)
            .set_custom_response_bodies(Some(set.bodies))
            .build()
            .unwrap()
    }

    #[test]
    fn observe_reads_back_what_create_writes() {
        for waf in ["", "waf: { requests: 1500, auth_requests: 40, window: 10m }\n"] {
            let props = desired(waf);
            let got = observed("waf".into(), &as_created(&props), Some(LB));
            // The same JSON, its keys in the same order.
            assert_eq!(got.props.to_string(), props.to_value().to_string(), "{waf:?}");
            assert_eq!(got.outputs["name"], "shop-waf");
        }
    }

    #[test]
    fn the_auth_rule_is_scoped_down_to_its_path_and_both_block_with_429() {
        let acl = as_created(&desired(""));
        let rules: BTreeMap<&str, &Rule> = acl.rules().iter().map(|r| (r.name(), r)).collect();
        let auth = rules["auth-per-address"].statement().unwrap().rate_based_statement().unwrap();
        let down = auth.scope_down_statement().unwrap().byte_match_statement().unwrap();
        assert_eq!(down.search_string().as_ref(), b"/v1/auth/");
        assert_eq!(down.positional_constraint(), &PositionalConstraint::StartsWith);
        assert!(down.field_to_match().unwrap().uri_path().is_some());
        let all = rules["requests-per-address"].statement().unwrap().rate_based_statement().unwrap();
        assert!(all.scope_down_statement().is_none());
        assert_eq!((all.limit(), auth.limit()), (2000, 100));
        for r in rules.values() {
            let response = r.action().unwrap().block().unwrap().custom_response().unwrap();
            assert_eq!((response.response_code(), response.custom_response_body_key()), (429, Some("rate-limited")));
        }
    }

    #[test]
    fn a_rule_aira_did_not_write_shows_as_a_difference() {
        let props = desired("");
        let mut acl = as_created(&props);
        // Someone switched the account routes' rule to count only, and made the other one match
        // something else than a rate.
        let rules = acl.rules.as_mut().unwrap();
        let auth = rules.iter_mut().find(|r| r.name == "auth-per-address").unwrap();
        auth.action = Some(RuleAction::builder().count(aws_sdk_wafv2::types::CountAction::builder().build()).build());
        let all = rules.iter_mut().find(|r| r.name == "requests-per-address").unwrap();
        let geo = aws_sdk_wafv2::types::GeoMatchStatement::builder().build();
        all.statement = Some(Statement::builder().geo_match_statement(geo).build());
        let got: kind::WebAcl = observed("waf".into(), &acl, None).props().unwrap();
        let (auth, all) = (got.rules.get("auth-per-address").unwrap(), got.rules.get("requests-per-address").unwrap());
        assert_eq!((auth.action, &auth.response), (Verdict::Count, &None));
        assert_eq!((all.statement.as_deref(), all.limit), (Some("(not a rate-based statement)"), None));
        assert_eq!(got.load_balancer, None);
        assert_ne!(settings_of(&got), settings_of(&props));
    }
}
