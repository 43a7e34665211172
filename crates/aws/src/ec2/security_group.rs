//! Security groups and their ingress rules (from CIDR blocks or other groups).

use super::{created, fresh, observed, sorted, stack_filter, tags, updated, Result, RELEASE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk;
use aira_engine::kind::{self, IngressRule};
use aira_engine::provider::{Observed, Resolved};
use async_trait::async_trait;
use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, ResourceType, UserIdGroupPair};

pub struct SecurityGroup;

#[async_trait]
impl KindOps for SecurityGroup {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let req = cx.aws.ec2.describe_security_groups().filters(stack_filter(cx.scope));
        let out = call!("describe security groups", req.send());
        let found = out.security_groups().iter().filter_map(|g| {
            let props = kind::SecurityGroup {
                vpc: g.vpc_id().unwrap_or_default().into(),
                name: g.group_name().unwrap_or_default().to_string(),
                description: g.description().unwrap_or_default().to_string(),
                ingress: rules_of(g.ip_permissions()),
            };
            observed(cx.scope, g.tags(), g.group_id(), &props)
        });
        Ok(sorted(found.collect()))
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::SecurityGroup>(res)?;
        let out = fresh!(
            cx,
            &res.id,
            what,
            cx.aws
                .ec2
                .create_security_group()
                .vpc_id(p.vpc.as_str())
                .group_name(&p.name)
                .description(&p.description)
                .tag_specifications(tags(cx.scope, &res.id, ResourceType::SecurityGroup))
        );
        // Created without rules: they are the update's.
        let blank = created(res, &what, out.group_id(), &kind::SecurityGroup { ingress: Vec::new(), ..p })?;
        self.update(cx, res, &blank).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let ec2 = &cx.aws.ec2;
        let Change { want, have, physical: id, what } = change::<kind::SecurityGroup>(res, current)?;
        let (want_rules, have_rules) = (want.ingress, have.ingress);
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
        let id = current.physical_id.as_str();
        super::delete(cx, current, &RELEASE, || cx.aws.ec2.delete_security_group().group_id(id).send()).await
    }
}

fn rules_of(perms: &[IpPermission]) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    for p in perms {
        let rule = |cidr: Option<&str>, source: Option<&str>| IngressRule {
            protocol: p.ip_protocol().unwrap_or("-1").to_string(),
            from: p.from_port(),
            to: p.to_port(),
            cidr: cidr.map(String::from),
            source: source.map(Into::into),
        };
        for r in p.ip_ranges() {
            rules.push(rule(r.cidr_ip(), None));
        }
        for r in p.ipv6_ranges() {
            rules.push(rule(r.cidr_ipv6(), None));
        }
        for g in p.user_id_group_pairs() {
            rules.push(rule(None, g.group_id()));
        }
    }
    rules
}

fn permission(rule: &IngressRule) -> IpPermission {
    let mut p = IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .from_port(rule.from.unwrap_or(0))
        .to_port(rule.to.unwrap_or(0));
    match rule.cidr.as_deref() {
        Some(cidr) if cidr.contains(':') => p = p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).build()),
        Some(cidr) => p = p.ip_ranges(IpRange::builder().cidr_ip(cidr).build()),
        None => {}
    }
    if let Some(group) = &rule.source {
        p = p.user_id_group_pairs(UserIdGroupPair::builder().group_id(group.as_str()).build());
    }
    p.build()
}
