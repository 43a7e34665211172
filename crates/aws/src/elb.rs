//! Application load balancer, target group and listeners.
//!
//! Found with describe calls and then their tags (`describe_tags`, at most 20 ARNs per call):
//! ELBv2 has no tag filter. Created with their tags in the create call, read back after every
//! change. The load balancer keeps the hosted zone of its alias records in the tag
//! `aira:dns-zone`, so that `down` finds those records without the stack file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, IpAddressType, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Matcher,
    ProtocolEnum, RedirectActionConfig, RedirectActionStatusCodeEnum, Tag, TargetGroupAttribute, TargetTypeEnum,
};
use aws_sdk_elasticloadbalancingv2::Client;
use serde_json::{json, Value};

use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

type Result<T> = std::result::Result<T, ProviderError>;

/// Tag on the load balancer naming the hosted zone of its alias records (the `dns_zone` prop).
pub const TAG_DNS_ZONE: &str = "aira:dns-zone";
const DEREGISTRATION: &str = "deregistration_delay.timeout_seconds";

fn code<E: ProvideErrorMetadata, R>(e: &aws_sdk_elasticloadbalancingv2::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn is_gone<E: ProvideErrorMetadata, R>(e: &aws_sdk_elasticloadbalancingv2::error::SdkError<E, R>) -> bool {
    code(e).is_some_and(|c| c.ends_with("NotFound") || c.ends_with("NotFoundException"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn int(v: &Value, key: &str) -> i32 {
    v[key].as_i64().unwrap_or_default() as i32
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> =
        v[key].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
    out.sort();
    out
}

fn tags(scope: &Scope, id: &LogicalId, extra: &[(&str, &str)]) -> Vec<Tag> {
    let mut all = scope.tags_for(id);
    all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// The part of an ARN after `…:ACCOUNT:`: `loadbalancer/app/NAME/ID`, `targetgroup/NAME/ID`.
fn arn_resource(arn: &str) -> &str {
    arn.splitn(6, ':').nth(5).unwrap_or_default()
}

/// Tags of the given ARNs, by ARN (20 per call, ELBv2's limit).
async fn tags_of(elb: &Client, arns: &[String]) -> Result<HashMap<String, BTreeMap<String, String>>> {
    let mut out = HashMap::new();
    for chunk in arns.chunks(20) {
        let resp = match elb.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await {
            Ok(r) => r,
            // One of them was deleted meanwhile: ask one by one.
            Err(e) if is_gone(&e) && chunk.len() > 1 => {
                for arn in chunk {
                    out.extend(Box::pin(tags_of(elb, std::slice::from_ref(arn))).await?);
                }
                continue;
            }
            Err(e) if is_gone(&e) => continue,
            Err(e) => return Err(ProviderError::new(format!("read ELB tags: {}", crate::sdk::describe(&e)))),
        };
        for d in resp.tag_descriptions() {
            let Some(arn) = d.resource_arn() else { continue };
            let tags = d.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect();
            out.insert(arn.to_string(), tags);
        }
    }
    Ok(out)
}

/// The logical id of a resource of this stack, checked on the answer.
fn logical_id(scope: &Scope, tags: Option<&BTreeMap<String, String>>) -> Option<LogicalId> {
    let tags = tags?;
    (tags.get(TAG_STACK) == Some(&scope.stack)).then(|| tags.get(TAG_ID).map(|i| LogicalId::from(i.as_str())))?
}

fn observed(id: LogicalId, kind: Kind, arn: &str, props: Value, outputs: &[(&str, Value)]) -> Observed {
    let mut out = BTreeMap::from([("arn".to_string(), Value::from(arn))]);
    out.extend(outputs.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Observed { id, kind, physical_id: arn.to_string(), props, outputs: out, depends_on: BTreeSet::new() }
}

// ---- observe -----------------------------------------------------------------------------

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let (lbs, tgs) = tokio::try_join!(observe_lbs(&p.elb, scope, None), observe_tgs(&p.elb, scope, None))?;
    let mut listeners = Vec::new();
    for lb in &lbs {
        listeners.extend(observe_listeners(&p.elb, scope, &lb.physical_id, None).await?);
    }
    Ok([lbs, tgs, listeners].concat())
}

/// The stack's load balancers (or the one `arn`), oldest first.
async fn observe_lbs(elb: &Client, scope: &Scope, arn: Option<&str>) -> Result<Vec<Observed>> {
    let mut lbs = Vec::new();
    let mut pages =
        elb.describe_load_balancers().set_load_balancer_arns(arn.map(|a| vec![a.to_string()])).into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => lbs.extend(page.load_balancers().iter().cloned()),
            Err(e) if is_gone(&e) => break,
            Err(e) => return Err(ProviderError::new(format!("describe load balancers: {}", crate::sdk::describe(&e)))),
        }
    }
    lbs.sort_by_key(|lb| lb.created_time().map(|t| (t.secs(), t.subsec_nanos())));
    let arns: Vec<String> = lbs.iter().filter_map(|lb| lb.load_balancer_arn().map(String::from)).collect();
    let tags = tags_of(elb, &arns).await?;
    let mut found = Vec::new();
    for lb in &lbs {
        let Some(arn) = lb.load_balancer_arn() else { continue };
        let Some(id) = logical_id(scope, tags.get(arn)) else { continue };
        let mut subnets: Vec<&str> = lb.availability_zones().iter().filter_map(|z| z.subnet_id()).collect();
        subnets.sort();
        let mut groups: Vec<&str> = lb.security_groups().iter().map(String::as_str).collect();
        groups.sort();
        let mut props = json!({
            "name": lb.load_balancer_name(),
            "scheme": lb.scheme().map(|s| s.as_str()),
            "ip_address_type": lb.ip_address_type().map(|t| t.as_str()),
            "subnets": subnets,
            "security_groups": groups,
        });
        if let Some(zone) = tags.get(arn).and_then(|t| t.get(TAG_DNS_ZONE)) {
            props["dns_zone"] = json!(zone);
        }
        let suffix = arn_resource(arn).trim_start_matches("loadbalancer/");
        found.push(observed(
            id,
            Kind::LoadBalancer,
            arn,
            props,
            &[
                ("dns_name", json!(lb.dns_name())),
                ("zone_id", json!(lb.canonical_hosted_zone_id())),
                ("arn_suffix", json!(suffix)),
            ],
        ));
    }
    Ok(found)
}

/// The stack's target groups (or the one `arn`), with their deregistration delay.
async fn observe_tgs(elb: &Client, scope: &Scope, arn: Option<&str>) -> Result<Vec<Observed>> {
    let mut tgs = Vec::new();
    let mut pages =
        elb.describe_target_groups().set_target_group_arns(arn.map(|a| vec![a.to_string()])).into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => tgs.extend(page.target_groups().iter().cloned()),
            Err(e) if is_gone(&e) => break,
            Err(e) => return Err(ProviderError::new(format!("describe target groups: {}", crate::sdk::describe(&e)))),
        }
    }
    let arns: Vec<String> = tgs.iter().filter_map(|t| t.target_group_arn().map(String::from)).collect();
    let tags = tags_of(elb, &arns).await?;
    let mut found = Vec::new();
    for tg in &tgs {
        let Some(arn) = tg.target_group_arn() else { continue };
        let Some(id) = logical_id(scope, tags.get(arn)) else { continue };
        let attrs = match elb.describe_target_group_attributes().target_group_arn(arn).send().await {
            Ok(out) => out,
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!(
                    "read target group `{id}` ({arn}) attributes: {}",
                    crate::sdk::describe(&e)
                )))
            }
        };
        let delay = attrs
            .attributes()
            .iter()
            .find(|a| a.key() == Some(DEREGISTRATION))
            .and_then(|a| a.value())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(300);
        let props = json!({
            "name": tg.target_group_name(),
            "protocol": tg.protocol().map(|p| p.as_str()),
            "port": tg.port(),
            "target_type": tg.target_type().map(|t| t.as_str()),
            "vpc": tg.vpc_id(),
            "health_check": {
                "path": tg.health_check_path(),
                "interval": tg.health_check_interval_seconds(),
                "timeout": tg.health_check_timeout_seconds(),
                "healthy": tg.healthy_threshold_count(),
                "unhealthy": tg.unhealthy_threshold_count(),
                "matcher": tg.matcher().and_then(|m| m.http_code()),
            },
            "deregistration_delay": delay,
        });
        found.push(observed(id, Kind::TargetGroup, arn, props, &[("arn_suffix", json!(arn_resource(arn)))]));
    }
    found.sort_by(|a, b| a.physical_id.cmp(&b.physical_id));
    Ok(found)
}

/// The stack's listeners of one load balancer (or the one listener `arn`).
async fn observe_listeners(elb: &Client, scope: &Scope, lb: &str, arn: Option<&str>) -> Result<Vec<Observed>> {
    let mut listeners = Vec::new();
    let req = match arn {
        Some(a) => elb.describe_listeners().listener_arns(a),
        None => elb.describe_listeners().load_balancer_arn(lb),
    };
    let mut pages = req.into_paginator().send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => listeners.extend(page.listeners().iter().cloned()),
            Err(e) if is_gone(&e) => break,
            Err(e) => {
                return Err(ProviderError::new(format!("describe listeners of {lb}: {}", crate::sdk::describe(&e))))
            }
        }
    }
    let arns: Vec<String> = listeners.iter().filter_map(|l| l.listener_arn().map(String::from)).collect();
    let tags = tags_of(elb, &arns).await?;
    let mut found = Vec::new();
    for l in &listeners {
        let Some(arn) = l.listener_arn() else { continue };
        let Some(id) = logical_id(scope, tags.get(arn)) else { continue };
        let mut props = json!({
            "load_balancer": l.load_balancer_arn(),
            "port": l.port(),
            "protocol": l.protocol().map(|p| p.as_str()),
        });
        // TLS settings mean something on a TLS listener only (some endpoints report a default
        // policy on plain HTTP ones too).
        if matches!(l.protocol(), Some(ProtocolEnum::Https | ProtocolEnum::Tls)) {
            if let Some(policy) = l.ssl_policy() {
                props["ssl_policy"] = json!(policy);
            }
            if let Some(cert) = l.certificates().iter().find_map(|c| c.certificate_arn()) {
                props["certificate"] = json!(cert);
            }
        }
        props["default_action"] = l.default_actions().first().map(action_props).unwrap_or(Value::Null);
        found.push(observed(id, Kind::Listener, arn, props, &[]));
    }
    found.sort_by(|a, b| a.physical_id.cmp(&b.physical_id));
    Ok(found)
}

fn action_props(a: &Action) -> Value {
    match a.r#type() {
        Some(ActionTypeEnum::Redirect) => {
            let r = a.redirect_config();
            json!({
                "type": "redirect",
                "protocol": r.and_then(|r| r.protocol()),
                "port": r.and_then(|r| r.port()),
                "status": r.and_then(|r| r.status_code()).map(|c| c.as_str()),
            })
        }
        Some(ActionTypeEnum::Forward) => {
            let tg = a.target_group_arn().or_else(|| {
                a.forward_config().and_then(|f| f.target_groups().first()).and_then(|t| t.target_group_arn())
            });
            json!({ "type": "forward", "target_group": tg })
        }
        other => json!({ "type": other.map(|t| t.as_str().to_string()) }),
    }
}

fn action(v: &Value) -> Action {
    match s(v, "type") {
        "redirect" => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol(s(v, "protocol"))
                    .port(s(v, "port"))
                    .status_code(RedirectActionStatusCodeEnum::from(s(v, "status")))
                    .build(),
            )
            .build(),
        _ => Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(s(v, "target_group")).build(),
    }
}

// ---- create and update ---------------------------------------------------------------------

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    let (elb, d) = (&p.elb, &res.props);
    let what = format!("create {} `{}`", res.kind, res.id);
    let arn = match res.kind {
        Kind::LoadBalancer => {
            let zone = d["dns_zone"].as_str().map(|z| (TAG_DNS_ZONE, z));
            let out = call!(
                what,
                elb.create_load_balancer()
                    .name(s(d, "name"))
                    .r#type(LoadBalancerTypeEnum::Application)
                    .scheme(LoadBalancerSchemeEnum::from(s(d, "scheme")))
                    .ip_address_type(IpAddressType::from(d["ip_address_type"].as_str().unwrap_or("ipv4")))
                    .set_subnets(Some(strs(d, "subnets")))
                    .set_security_groups(Some(strs(d, "security_groups")))
                    .set_tags(Some(tags(scope, &res.id, zone.as_slice())))
                    .send()
            );
            out.load_balancers().first().and_then(|l| l.load_balancer_arn()).unwrap_or_default().to_string()
        }
        Kind::TargetGroup => {
            let hc = &d["health_check"];
            let out = call!(
                what,
                elb.create_target_group()
                    .name(s(d, "name"))
                    .protocol(ProtocolEnum::from(s(d, "protocol")))
                    .port(int(d, "port"))
                    .vpc_id(s(d, "vpc"))
                    .target_type(TargetTypeEnum::from(s(d, "target_type")))
                    .health_check_enabled(true)
                    .health_check_protocol(ProtocolEnum::Http)
                    .health_check_path(s(hc, "path"))
                    .health_check_interval_seconds(int(hc, "interval"))
                    .health_check_timeout_seconds(int(hc, "timeout"))
                    .healthy_threshold_count(int(hc, "healthy"))
                    .unhealthy_threshold_count(int(hc, "unhealthy"))
                    .matcher(Matcher::builder().http_code(s(hc, "matcher")).build())
                    .set_tags(Some(tags(scope, &res.id, &[])))
                    .send()
            );
            let arn = out.target_groups().first().and_then(|t| t.target_group_arn()).unwrap_or_default().to_string();
            set_deregistration_delay(elb, &arn, d, &what).await?;
            arn
        }
        Kind::Listener => {
            // A certificate just issued can take a moment to be usable by the load balancer.
            let out = retry(
                scope,
                progress,
                &res.id,
                &what,
                &["CertificateNotFound"],
                "the certificate to be usable",
                || {
                    listener_request(elb.create_listener().load_balancer_arn(s(d, "load_balancer")), d)
                        .set_tags(Some(tags(scope, &res.id, &[])))
                        .send()
                },
            )
            .await?;
            out.and_then(|o| o.listeners().first().and_then(|l| l.listener_arn()).map(String::from)).unwrap_or_default()
        }
        _ => unreachable!("not an ELB kind"),
    };
    if arn.is_empty() {
        return Err(ProviderError::new(format!("{what}: AWS returned no ARN")));
    }
    reread(p, scope, res, &arn, &what).await
}

fn listener_request(
    req: aws_sdk_elasticloadbalancingv2::operation::create_listener::builders::CreateListenerFluentBuilder,
    d: &Value,
) -> aws_sdk_elasticloadbalancingv2::operation::create_listener::builders::CreateListenerFluentBuilder {
    let mut req = req
        .port(int(d, "port"))
        .protocol(ProtocolEnum::from(s(d, "protocol")))
        .default_actions(action(&d["default_action"]));
    if let Some(policy) = d["ssl_policy"].as_str() {
        req = req.ssl_policy(policy);
    }
    if let Some(cert) = d["certificate"].as_str() {
        req = req.certificates(Certificate::builder().certificate_arn(cert).build());
    }
    req
}

async fn set_deregistration_delay(elb: &Client, arn: &str, d: &Value, what: &str) -> Result<()> {
    let delay = d["deregistration_delay"].as_u64().unwrap_or(300).to_string();
    call!(
        what,
        elb.modify_target_group_attributes()
            .target_group_arn(arn)
            .attributes(TargetGroupAttribute::builder().key(DEREGISTRATION).value(delay).build())
            .send()
    );
    Ok(())
}

pub async fn update(
    p: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    current: &Observed,
    progress: &dyn Progress,
) -> Result<Observed> {
    let (elb, want, have, arn) = (&p.elb, &res.props, &current.props, current.physical_id.as_str());
    let what = format!("update {} `{}` ({arn})", res.kind, res.id);
    match res.kind {
        Kind::LoadBalancer => {
            if strs(want, "subnets") != strs(have, "subnets") {
                call!(what, elb.set_subnets().load_balancer_arn(arn).set_subnets(Some(strs(want, "subnets"))).send());
            }
            // Subnets first: dualstack needs subnets with IPv6 ranges.
            if want["ip_address_type"] != have["ip_address_type"] {
                let t = IpAddressType::from(s(want, "ip_address_type"));
                call!(what, elb.set_ip_address_type().load_balancer_arn(arn).ip_address_type(t).send());
            }
            if strs(want, "security_groups") != strs(have, "security_groups") {
                call!(
                    what,
                    elb.set_security_groups()
                        .load_balancer_arn(arn)
                        .set_security_groups(Some(strs(want, "security_groups")))
                        .send()
                );
            }
            match (want["dns_zone"].as_str(), have["dns_zone"].as_str()) {
                (Some(w), h) if Some(w) != h => {
                    call!(
                        what,
                        elb.add_tags()
                            .resource_arns(arn)
                            .tags(Tag::builder().key(TAG_DNS_ZONE).value(w).build())
                            .send()
                    );
                }
                (None, Some(_)) => {
                    call!(what, elb.remove_tags().resource_arns(arn).tag_keys(TAG_DNS_ZONE).send());
                }
                _ => {}
            }
        }
        Kind::TargetGroup => {
            let hc = &want["health_check"];
            if *hc != have["health_check"] {
                call!(
                    what,
                    elb.modify_target_group()
                        .target_group_arn(arn)
                        .health_check_enabled(true)
                        .health_check_protocol(ProtocolEnum::Http)
                        .health_check_path(s(hc, "path"))
                        .health_check_interval_seconds(int(hc, "interval"))
                        .health_check_timeout_seconds(int(hc, "timeout"))
                        .healthy_threshold_count(int(hc, "healthy"))
                        .unhealthy_threshold_count(int(hc, "unhealthy"))
                        .matcher(Matcher::builder().http_code(s(hc, "matcher")).build())
                        .send()
                );
            }
            if want["deregistration_delay"] != have["deregistration_delay"] {
                set_deregistration_delay(elb, arn, want, &what).await?;
            }
        }
        Kind::Listener => {
            let d = want;
            retry(scope, progress, &res.id, &what, &["CertificateNotFound"], "the certificate to be usable", || {
                let mut req = elb
                    .modify_listener()
                    .listener_arn(arn)
                    .port(int(d, "port"))
                    .protocol(ProtocolEnum::from(s(d, "protocol")))
                    .default_actions(action(&d["default_action"]));
                if let Some(policy) = d["ssl_policy"].as_str() {
                    req = req.ssl_policy(policy);
                }
                if let Some(cert) = d["certificate"].as_str() {
                    req = req.certificates(Certificate::builder().certificate_arn(cert).build());
                }
                req.send()
            })
            .await?;
        }
        _ => unreachable!("not an ELB kind"),
    }
    reread(p, scope, res, arn, &what).await
}

async fn reread(p: &AwsProvider, scope: &Scope, res: &Resolved, arn: &str, what: &str) -> Result<Observed> {
    let found = match res.kind {
        Kind::LoadBalancer => observe_lbs(&p.elb, scope, Some(arn)).await?,
        Kind::TargetGroup => observe_tgs(&p.elb, scope, Some(arn)).await?,
        _ => observe_listeners(&p.elb, scope, s(&res.props, "load_balancer"), Some(arn)).await?,
    };
    found
        .into_iter()
        .find(|o| o.physical_id == arn)
        .ok_or_else(|| ProviderError::new(format!("{what}: {arn} is not there right after the call")))
}

// ---- delete ----------------------------------------------------------------------------------

pub async fn delete(p: &AwsProvider, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<()> {
    let (elb, arn, id) = (&p.elb, current.physical_id.as_str(), &current.id);
    let what = format!("delete {} `{id}` ({arn})", current.kind);
    match current.kind {
        Kind::Listener => retry(scope, progress, id, &what, &[], "", || elb.delete_listener().listener_arn(arn).send())
            .await
            .map(drop),
        Kind::TargetGroup => retry(
            scope,
            progress,
            id,
            &what,
            &["ResourceInUse"],
            "its listeners and services to let go of it (ELB releases them asynchronously)",
            || elb.delete_target_group().target_group_arn(arn).send(),
        )
        .await
        .map(drop),
        Kind::LoadBalancer => {
            if retry(scope, progress, id, &what, &["ResourceInUse"], "its dependents to let go of it", || {
                elb.delete_load_balancer().load_balancer_arn(arn).send()
            })
            .await?
            .is_none()
            {
                return Ok(());
            }
            // Its network interfaces are released asynchronously; the subnets', security
            // group's and VPC's deletions depend on it being gone.
            let start = Instant::now();
            loop {
                match elb.describe_load_balancers().load_balancer_arns(arn).send().await {
                    Ok(out) if out.load_balancers().is_empty() => return Ok(()),
                    Ok(_) => {}
                    Err(e) if is_gone(&e) => return Ok(()),
                    Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
                }
                if start.elapsed() > scope.wait {
                    return Err(ProviderError::new(format!("{what}: still there after {}s", scope.wait.as_secs())));
                }
                progress.waiting(
                    id,
                    &format!(
                        "load balancer {arn} is being deleted; waiting until it is gone, since the VPC's deletion \
                         needs its network interfaces released ({}s of {}s)",
                        start.elapsed().as_secs(),
                        scope.wait.as_secs()
                    ),
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        _ => unreachable!("not an ELB kind"),
    }
}

/// Runs `op` until it stops failing with one of `codes` (what AWS finishes asynchronously),
/// saying what it waits for; gives up at `scope.wait`. A resource already gone is `None`.
async fn retry<F, Fut, T, E>(
    scope: &Scope,
    progress: &dyn Progress,
    id: &LogicalId,
    what: &str,
    codes: &[&str],
    waits_for: &str,
    op: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = std::result::Result<
            T,
            aws_sdk_elasticloadbalancingv2::error::SdkError<
                E,
                aws_sdk_elasticloadbalancingv2::config::http::HttpResponse,
            >,
        >,
    >,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let gone = |c: &str| c.ends_with("NotFound") || c.ends_with("NotFoundException");
    crate::sdk::retry_busy(scope, progress, id, what, codes, waits_for, gone, op).await
}
