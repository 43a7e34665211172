//! The alias records (A and AAAA) of the public name. Record sets carry no tags: they are found
//! from the load balancers, whose tag `aira:dns-zone` names the zone, as the aliases that point
//! at them, and told apart by name (the tag `aira:dns-name`): the base's records are named as
//! the tag says, each preview's `NAME.` that, on the base's load balancer.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_route53::types::{AliasTarget, ChangeAction, ResourceRecordSet, RrType};
use serde_json::Value;

use super::{change, is_absent, norm, record_set, record_sets, wait_insync, Result};
use crate::ops::{Cx, KindOps};
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};

pub struct AliasRecord;

/// An alias target's DNS name in comparable form: Route 53 stores `dualstack.` in front of a
/// load balancer's name.
fn norm_alias(name: &str) -> String {
    let n = norm(name);
    n.strip_prefix("dualstack.").map(String::from).unwrap_or(n)
}

/// The record set of a record in normal form.
fn alias_set(p: &kind::DnsRecord) -> Result<ResourceRecordSet> {
    let target = AliasTarget::builder()
        .dns_name(p.alias.dns_name.as_str())
        .hosted_zone_id(p.alias.zone_id.as_str())
        .evaluate_target_health(false)
        .build()
        .map_err(|e| ProviderError::new(format!("alias target: {e}")))?;
    ResourceRecordSet::builder()
        .name(&p.name)
        .r#type(RrType::from(p.r#type.as_str()))
        .alias_target(target)
        .build()
        .map_err(|e| ProviderError::new(format!("record set: {e}")))
}

fn observed(id: LogicalId, set: &ResourceRecordSet, props: &kind::DnsRecord) -> Observed {
    let physical = format!("{}/{}/{}", props.zone_id, set.name(), set.r#type().as_str());
    let target = set.alias_target().map(|a| a.dns_name());
    // The alias target as Route 53 stores it: a DELETE must name it exactly.
    Observed::of(id, physical, props).output("name", set.name()).output("target", target)
}

#[async_trait]
impl KindOps for AliasRecord {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let mut found = Vec::new();
        let mut listed: BTreeMap<String, Vec<ResourceRecordSet>> = BTreeMap::new();
        for lb in crate::elb::load_balancer::shared(cx).await? {
            let dns_name = lb.outputs.get("dns_name").and_then(Value::as_str);
            let lb_props = lb.props::<kind::LoadBalancer>()?;
            let (Some(zone), Some(dns_name)) = (lb_props.dns_zone, dns_name) else {
                continue;
            };
            // Whose records these are: the base's are named as its load balancer's tag says,
            // a preview's `NAME.` that (a load balancer from before previews: any alias is the
            // stack's, and it has no previews).
            let ours = |name: &str| match (cx.scope.preview_name(), &lb_props.public_name) {
                (Some(preview), Some(public)) => norm(name) == norm(&format!("{preview}.{public}")),
                (Some(_), None) => false,
                (None, Some(public)) => norm(name) == norm(public),
                (None, None) => true,
            };
            if !listed.contains_key(&zone) {
                listed.insert(zone.clone(), record_sets(&cx.aws.route53, &zone).await?);
            }
            for set in &listed[&zone] {
                let ty = set.r#type().as_str();
                let id = match ty {
                    "A" => "dns-a",
                    "AAAA" => "dns-aaaa",
                    _ => continue,
                };
                let Some(alias) = set.alias_target() else { continue };
                if norm_alias(alias.dns_name()) != norm_alias(dns_name) || !ours(set.name()) {
                    continue;
                }
                let props = kind::DnsRecord {
                    zone_id: zone.clone(),
                    name: set.name().to_string(),
                    r#type: ty.to_string(),
                    alias: kind::Alias { dns_name: dns_name.into(), zone_id: alias.hosted_zone_id().into() },
                };
                let mut o = observed(LogicalId::from(id), set, &props);
                // The record points at the load balancer by its DNS name, which `link` does not know.
                o.depends_on.insert(lb.id.clone());
                found.push(o);
            }
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        upsert(cx.aws, cx.scope, res, cx.progress, &format!("create {} `{}`", res.kind, res.id)).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, _: &Observed) -> Result<Observed> {
        upsert(cx.aws, cx.scope, res, cx.progress, &format!("update {} `{}`", res.kind, res.id)).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let mut p: kind::DnsRecord = current.props()?;
        if let Some(target) = current.outputs.get("target").and_then(Value::as_str) {
            p.alias.dns_name = target.into();
        }
        let what = format!("delete {} `{}` ({})", current.kind, current.id, current.physical_id);
        match change(&cx.aws.route53, &p.zone_id, ChangeAction::Delete, alias_set(&p)?, "aira: delete").await {
            Ok(_) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(sdk::error(what, e)),
        }
    }
}

/// Creation and update are one UPSERT, waited for, then read back.
async fn upsert(aws: &Clients, scope: &Scope, res: &Resolved, progress: &dyn Progress, what: &str) -> Result<Observed> {
    let mut p: kind::DnsRecord = res.props()?;
    let (zone, name, ty) = (p.zone_id.as_str(), p.name.as_str(), p.r#type.as_str());
    let comment = format!("aira stack {}: {}", scope.stack, res.id);
    let change_id = change(&aws.route53, zone, ChangeAction::Upsert, alias_set(&p)?, &comment)
        .await
        .map_err(|e| sdk::error(format!("{what} ({name} {ty} in {zone})"), e))?;
    wait_insync(&aws.route53, scope, progress, &res.id, &change_id, what).await?;
    let set = record_set(&aws.route53, zone, name, RrType::from(ty), &format!("{what}: read back")).await?.ok_or_else(
        || ProviderError::new(format!("{what}: {name} {ty} is not in zone {zone} right after the change")),
    )?;
    let alias = set.alias_target();
    if alias.map(|a| norm_alias(a.dns_name())) != Some(norm_alias(p.alias.dns_name.as_str())) {
        return Err(ProviderError::new(format!(
            "{what}: {name} {ty} in zone {zone} does not hold the alias just written"
        )));
    }
    p.name = set.name().to_string();
    p.alias.zone_id = alias.map(|a| a.hosted_zone_id()).unwrap_or_default().into();
    Ok(observed(res.id.clone(), &set, &p))
}
