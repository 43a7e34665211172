//! Security groups and their ingress rules (from CIDR blocks or other groups).

use async_trait::async_trait;
use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, ResourceType, UserIdGroupPair};
use serde_json::{json, Value};

use super::{created, observed, s, sorted, stack_filter, tags, updated, Result, RELEASE};
use crate::kinds::{Cx, KindOps, Observing};
use crate::sdk;
use aira_engine::kind;
use aira_engine::provider::{Observed, Resolved};

pub struct SecurityGroup;

#[async_trait]
impl KindOps for SecurityGroup {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let req = aws.ec2.describe_security_groups().filters(stack_filter(scope));
        let out = call!("describe security groups", req.send());
        let found = out.security_groups().iter().filter_map(|g| {
            let props = json!({
                "vpc": g.vpc_id(),
                "name": g.group_name(),
                "description": g.description(),
                "ingress": rules_of(g.ip_permissions()),
            });
            observed(scope, g.tags(), g.group_id(), &kind::SecurityGroup(props))
        });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, progress: _ } = *cx;
        let p = &res.props;
        let what = format!("create {} `{}`", res.kind, res.id);
        let out = call!(
            what,
            aws.ec2
                .create_security_group()
                .vpc_id(s(p, "vpc"))
                .group_name(s(p, "name"))
                .description(s(p, "description"))
                .tag_specifications(tags(scope, &res.id, ResourceType::SecurityGroup))
                .send()
        );
        // Created without rules: they are the update's.
        let blank = json!({ "vpc": p["vpc"], "name": p["name"], "description": p["description"], "ingress": [] });
        let blank = created(res, &what, out.group_id(), &kind::SecurityGroup(blank))?;
        self.update(cx, res, &blank).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, .. } = *cx;
        let (ec2, id) = (&aws.ec2, current.physical_id.as_str());
        let what = format!("update {} `{}` ({id})", res.kind, res.id);
        let have_rules: Vec<Value> = current.props["ingress"].as_array().cloned().unwrap_or_default();
        let want_rules: Vec<Value> = res.props["ingress"].as_array().cloned().unwrap_or_default();
        let gone: Vec<IpPermission> = have_rules.iter().filter(|r| !want_rules.contains(r)).map(permission).collect();
        let new: Vec<IpPermission> = want_rules.iter().filter(|r| !have_rules.contains(r)).map(permission).collect();
        if !gone.is_empty() {
            call!(what, ec2.revoke_security_group_ingress().group_id(id).set_ip_permissions(Some(gone)).send());
        }
        if !new.is_empty() {
            match ec2.authorize_security_group_ingress().group_id(id).set_ip_permissions(Some(new)).send().await {
                Ok(_) => {}
                // A rule added by a run that was killed before it could see the answer.
                Err(e) if sdk::code(&e) == Some("InvalidPermission.Duplicate") => {}
                Err(e) => return Err(sdk::error(what, e)),
            }
        }
        Ok(updated(res, current, current.outputs.clone()))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, scope, progress } = *cx;
        let id = current.physical_id.as_str();
        let what = format!("delete {} `{}` ({id})", current.kind, current.id);
        sdk::retry_busy(scope, progress, &current.id, &what, &RELEASE, || {
            aws.ec2.delete_security_group().group_id(id).send()
        })
        .await?;
        Ok(())
    }
}

fn rules_of(perms: &[IpPermission]) -> Vec<Value> {
    let mut rules = Vec::new();
    for p in perms {
        let (proto, from, to) = (p.ip_protocol().unwrap_or("-1"), p.from_port(), p.to_port());
        for r in p.ip_ranges() {
            rules.push(json!({ "protocol": proto, "from": from, "to": to, "cidr": r.cidr_ip() }));
        }
        for r in p.ipv6_ranges() {
            rules.push(json!({ "protocol": proto, "from": from, "to": to, "cidr": r.cidr_ipv6() }));
        }
        for g in p.user_id_group_pairs() {
            rules.push(json!({ "protocol": proto, "from": from, "to": to, "source": g.group_id() }));
        }
    }
    rules
}

fn permission(rule: &Value) -> IpPermission {
    let mut p = IpPermission::builder()
        .ip_protocol(s(rule, "protocol"))
        .from_port(rule["from"].as_i64().unwrap_or(0) as i32)
        .to_port(rule["to"].as_i64().unwrap_or(0) as i32);
    match rule["cidr"].as_str() {
        Some(cidr) if cidr.contains(':') => p = p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).build()),
        Some(cidr) => p = p.ip_ranges(IpRange::builder().cidr_ip(cidr).build()),
        None => {}
    }
    if let Some(group) = rule["source"].as_str() {
        p = p.user_id_group_pairs(UserIdGroupPair::builder().group_id(group).build());
    }
    p.build()
}
