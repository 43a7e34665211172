//! The alias records (A and AAAA) of the public name. Record sets carry no tags: they are found
//! from the load balancers, whose tag `aira:dns-zone` names the zone, as the aliases that point
//! at them.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_route53::types::{AliasTarget, ChangeAction, ResourceRecordSet, RrType};
use serde_json::{json, Value};

use super::{change, is_absent, norm, record_set, record_sets, wait_insync, Result};
use crate::kinds::{Cx, KindOps, Observing};
use crate::{sdk, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};

pub struct AliasRecord;

/// An alias target's DNS name in comparable form: Route 53 stores `dualstack.` in front of a
/// load balancer's name.
fn norm_alias(name: &str) -> String {
    let n = norm(name);
    n.strip_prefix("dualstack.").map(String::from).unwrap_or(n)
}

/// The record set of a record in normal form.
fn alias_set(props: &Value) -> Result<ResourceRecordSet> {
    let alias = &props["alias"];
    let target = AliasTarget::builder()
        .dns_name(alias["dns_name"].as_str().unwrap_or_default())
        .hosted_zone_id(alias["zone_id"].as_str().unwrap_or_default())
        .evaluate_target_health(false)
        .build()
        .map_err(|e| ProviderError::new(format!("alias target: {e}")))?;
    ResourceRecordSet::builder()
        .name(props["name"].as_str().unwrap_or_default())
        .r#type(RrType::from(props["type"].as_str().unwrap_or_default()))
        .alias_target(target)
        .build()
        .map_err(|e| ProviderError::new(format!("record set: {e}")))
}

fn observed(id: LogicalId, zone: &str, set: &ResourceRecordSet, props: Value) -> Observed {
    let target = set.alias_target().map(|a| a.dns_name());
    Observed {
        id,
        kind: Kind::DnsRecord,
        physical_id: format!("{zone}/{}/{}", set.name(), set.r#type().as_str()),
        props,
        // The alias target as Route 53 stores it: a DELETE must name it exactly.
        outputs: BTreeMap::from([("name".to_string(), json!(set.name())), ("target".to_string(), json!(target))]),
        depends_on: BTreeSet::new(),
        repair: None,
    }
}

#[async_trait]
impl KindOps for AliasRecord {
    async fn observe(&self, cx: &Cx<'_>, seen: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let mut found = Vec::new();
        let mut listed: BTreeMap<String, Vec<ResourceRecordSet>> = BTreeMap::new();
        for lb in seen.load_balancers(aws, scope).await? {
            let (Some(zone), Some(dns_name)) =
                (lb.props["dns_zone"].as_str(), lb.outputs.get("dns_name").and_then(Value::as_str))
            else {
                continue;
            };
            if !listed.contains_key(zone) {
                listed.insert(zone.to_string(), record_sets(&aws.route53, zone).await?);
            }
            for set in &listed[zone] {
                let ty = set.r#type().as_str();
                let id = match ty {
                    "A" => "dns-a",
                    "AAAA" => "dns-aaaa",
                    _ => continue,
                };
                let Some(alias) = set.alias_target() else { continue };
                if norm_alias(alias.dns_name()) != norm_alias(dns_name) {
                    continue;
                }
                let props = json!({
                    "zone_id": zone,
                    "name": set.name(),
                    "type": ty,
                    "alias": { "dns_name": dns_name, "zone_id": alias.hosted_zone_id() },
                });
                let mut o = observed(LogicalId::from(id), zone, set, props);
                // The record points at the load balancer by its DNS name, which `link` does not know.
                o.depends_on.insert(lb.id.clone());
                found.push(o);
            }
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        upsert(aws, scope, res, progress, &format!("create {} `{}`", res.kind, res.id)).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, _: &Observed) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        upsert(aws, scope, res, progress, &format!("update {} `{}`", res.kind, res.id)).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let mut d = current.props.clone();
        if let Some(target) = current.outputs.get("target").filter(|t| t.is_string()) {
            d["alias"]["dns_name"] = target.clone();
        }
        let zone = d["zone_id"].as_str().unwrap_or_default();
        let what = format!("delete {} `{}` ({})", current.kind, current.id, current.physical_id);
        match change(&aws.route53, zone, ChangeAction::Delete, alias_set(&d)?, "aira: delete").await {
            Ok(_) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(sdk::error(what, e)),
        }
    }
}

/// Creation and update are one UPSERT, waited for, then read back.
async fn upsert(
    aws: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    progress: &dyn Progress,
    what: &str,
) -> Result<Observed> {
    let d = &res.props;
    let zone = d["zone_id"].as_str().unwrap_or_default();
    let (name, ty) = (d["name"].as_str().unwrap_or_default(), d["type"].as_str().unwrap_or_default());
    let comment = format!("aira stack {}: {}", scope.stack, res.id);
    let change_id = change(&aws.route53, zone, ChangeAction::Upsert, alias_set(d)?, &comment)
        .await
        .map_err(|e| sdk::error(format!("{what} ({name} {ty} in {zone})"), e))?;
    wait_insync(&aws.route53, scope, progress, &res.id, &change_id, what).await?;
    let set = record_set(&aws.route53, zone, name, RrType::from(ty), &format!("{what}: read back")).await?.ok_or_else(
        || ProviderError::new(format!("{what}: {name} {ty} is not in zone {zone} right after the change")),
    )?;
    let alias = set.alias_target();
    let want = norm_alias(d["alias"]["dns_name"].as_str().unwrap_or_default());
    if alias.map(|a| norm_alias(a.dns_name())) != Some(want) {
        return Err(ProviderError::new(format!(
            "{what}: {name} {ty} in zone {zone} does not hold the alias just written"
        )));
    }
    let mut props = d.clone();
    props["name"] = json!(set.name());
    props["alias"]["zone_id"] = json!(alias.map(|a| a.hosted_zone_id()));
    Ok(observed(res.id.clone(), zone, &set, props))
}
