//! A preview's host rule on its base's HTTPS listener (`kind::ListenerRule`).
//!
//! ELB identifies a rule on its listener by priority (1 to 50,000; "A listener can't have
//! multiple rules with the same priority": `PriorityInUse`), and counts rules against a quota
//! per load balancer (100 by default, default rules aside: `TooManyRules`). The priority is
//! chosen at creation: the lowest free one from a number the host name gives, so that two
//! previews created at once start from different numbers; when both still meet, ELB refuses one
//! and it reads the rules again and takes the next free one.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{HostHeaderConditionConfig, RuleCondition};
use aws_sdk_elasticloadbalancingv2::Client;
use serde_json::Value;

use super::listener::{action, action_props};
use super::{created, described, observed, reread, Ours, Result, GONE};
use crate::ops::{change, creating, Change, Cx, KindOps};
use crate::sdk;
use aira_engine::kind;
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope};

pub struct ListenerRule;

/// ELB's range of rule priorities.
const PRIORITIES: u32 = 50_000;
/// Creations refused for a priority another creation took meanwhile, before giving up.
const ATTEMPTS: usize = 10;

/// Rules an Application Load Balancer holds across its listeners by default, default rules
/// aside ("Rules per Application Load Balancer", adjustable in Service Quotas).
pub const DEFAULT_QUOTA: usize = 100;

/// The rules on a load balancer's listeners, default rules aside (the pre-flight of a preview:
/// `CreateRule` past the quota answers `TooManyRules`).
pub async fn count(elb: &Client, load_balancer: &str) -> Result<usize> {
    let req = elb.describe_listeners().load_balancer_arn(load_balancer);
    let pages = sdk::pages(format!("describe listeners of {load_balancer}"), req.into_paginator().send()).await?;
    let mut n = 0;
    for l in pages.iter().flat_map(|p| p.listeners()) {
        let Some(listener) = l.listener_arn() else { continue };
        n += rules_of(elb, listener).await?.iter().filter(|r| r.is_default() != Some(true)).count();
    }
    Ok(n)
}

/// The listener a rule ARN belongs to: `…:listener-rule/app/LB/ID/LISTENER/RULE` →
/// `…:listener/app/LB/ID/LISTENER`.
fn listener_of(rule: &str) -> Option<String> {
    let (head, _) = rule.rsplit_once('/')?;
    Some(head.replacen(":listener-rule/", ":listener/", 1))
}

/// Every rule of a listener, default rule included (ELB's order).
async fn rules_of(elb: &Client, listener: &str) -> Result<Vec<aws_sdk_elasticloadbalancingv2::types::Rule>> {
    // 400 a page, the most ELB gives.
    let pages = elb.describe_rules().listener_arn(listener).page_size(400).into_paginator().send();
    let pages = sdk::pages(format!("describe rules of {listener}"), pages).await?;
    Ok(pages.iter().flat_map(|p| p.rules().iter().cloned()).collect())
}

/// The stack's rules on one listener (or the one rule `arn`).
async fn find(elb: &Client, scope: &Scope, listener: &str, arn: Option<&str>) -> Result<Vec<Observed>> {
    let req = match arn {
        Some(a) => elb.describe_rules().rule_arns(a),
        None => elb.describe_rules().listener_arn(listener),
    };
    let what = format!("describe rules of {listener}");
    let rules = described(elb, scope, &what, req.into_paginator().send(), |p| p.rules(), |r| r.rule_arn());
    let mut found = Vec::new();
    for Ours { item: r, arn, id, .. } in &rules.await? {
        let hosts = r
            .conditions()
            .iter()
            .filter(|c| c.field() == Some("host-header"))
            .flat_map(|c| c.host_header_config().map(|h| h.values().to_vec()).unwrap_or_else(|| c.values().to_vec()))
            .collect();
        let props = kind::ListenerRule {
            listener: listener_of(arn).unwrap_or_default().into(),
            hosts,
            action: r
                .actions()
                .first()
                .map(action_props)
                .unwrap_or_else(|| kind::Action::Other { kind: "(none)".into() }),
        };
        let priority = r.priority().and_then(|p| p.parse::<u32>().ok()).map(Value::from).unwrap_or(Value::Null);
        found.push(observed(id.clone(), arn, &props, &[("priority", priority)]));
    }
    found.sort_by(|a, b| a.physical_id.cmp(&b.physical_id));
    Ok(found)
}

fn conditions(p: &kind::ListenerRule) -> RuleCondition {
    let hosts = HostHeaderConditionConfig::builder().set_values(Some(p.hosts.clone())).build();
    RuleCondition::builder().field("host-header").host_header_config(hosts).build()
}

/// Where a host name's search for a free priority starts (1 to 50,000).
/// (FNV-1a: the same number from every version of aira.)
fn preferred(host: &str) -> u32 {
    let h = host.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    h % PRIORITIES + 1
}

/// The lowest free priority from `from` on, wrapping around.
fn free_priority(taken: &[u32], from: u32) -> Option<u32> {
    (0..PRIORITIES).map(|i| (from - 1 + i) % PRIORITIES + 1).find(|p| !taken.contains(p))
}

#[async_trait]
impl KindOps for ListenerRule {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let mut found = Vec::new();
        for lb in super::load_balancer::shared(cx).await? {
            let req = cx.aws.elb.describe_listeners().load_balancer_arn(&lb.physical_id);
            let what = format!("describe listeners of {}", lb.physical_id);
            let pages = sdk::pages(what, req.into_paginator().send()).await?;
            for l in pages.iter().flat_map(|p| p.listeners()) {
                let Some(listener) = l.listener_arn() else { continue };
                found.extend(find(&cx.aws.elb, cx.scope, listener, None).await?);
            }
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let (p, what) = creating::<kind::ListenerRule>(res)?;
        let elb = &cx.aws.elb;
        let listener = p.listener.as_str();
        let from = preferred(p.hosts.first().map(String::as_str).unwrap_or_default());
        for _ in 0..ATTEMPTS {
            let taken: Vec<u32> =
                rules_of(elb, listener).await?.iter().filter_map(|r| r.priority()?.parse().ok()).collect();
            let priority = free_priority(&taken, from).ok_or_else(|| {
                ProviderError::new(format!("{what}: the listener {listener} has no free priority left"))
            })?;
            let sent = elb
                .create_rule()
                .listener_arn(listener)
                .priority(priority as i32)
                .conditions(conditions(&p))
                .actions(action(&p.action))
                .set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[])))
                .send()
                .await;
            match sent {
                Ok(out) => {
                    let arn = created(out.rules().first().and_then(|r| r.rule_arn()), &what)?;
                    return reread(find(elb, cx.scope, listener, Some(&arn)).await?, &arn, &what);
                }
                // Another creation took it between the read and this call: read again.
                Err(e) if sdk::code(&e) == Some("PriorityInUse") => {
                    cx.progress.waiting(
                        &res.id,
                        &format!("{what}: priority {priority} was just taken, reading the rules again"),
                    );
                    continue;
                }
                Err(e) if sdk::code(&e) == Some("TooManyRules") => {
                    return Err(sdk::error(
                        format!(
                            "{what}: the base's load balancer has as many rules as its quota allows (\"Rules per \
                             Application Load Balancer\", 100 by default, in Service Quotas); take a preview down or \
                             raise the quota"
                        ),
                        e,
                    ))
                }
                Err(e) => return Err(sdk::error(what, e)),
            }
        }
        Err(ProviderError::new(format!(
            "{what}: every free priority tried on {listener} was taken by another creation meanwhile ({ATTEMPTS} times)"
        )))
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Change { want, physical: arn, what, .. } = change::<kind::ListenerRule>(res, current)?;
        let elb = &cx.aws.elb;
        call!(what, elb.modify_rule().rule_arn(arn).conditions(conditions(&want)).actions(action(&want.action)).send());
        reread(find(elb, cx.scope, want.listener.as_str(), Some(arn)).await?, arn, &what)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let what = format!("delete {} `{}` ({})", current.kind, current.id, current.physical_id);
        sdk::found(what, GONE, cx.aws.elb.delete_rule().rule_arn(&current.physical_id).send().await)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_start_where_the_host_says_and_skip_taken_ones_wrapping_around() {
        let from = preferred("pr-7.chat.example.com");
        assert!((1..=PRIORITIES).contains(&from));
        assert_eq!(from, preferred("pr-7.chat.example.com"), "the same host, the same start");
        assert_ne!(from, preferred("pr-8.chat.example.com"));
        assert_eq!(free_priority(&[], 7), Some(7));
        assert_eq!(free_priority(&[7, 8], 7), Some(9));
        assert_eq!(free_priority(&[PRIORITIES], PRIORITIES), Some(1));
        let all: Vec<u32> = (1..=PRIORITIES).collect();
        assert_eq!(free_priority(&all, 1), None);
    }

    #[test]
    fn a_rules_listener_is_its_arn_without_the_rule() {
        let rule = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/lb/50dc/f2f7/1291";
        assert_eq!(
            listener_of(rule).as_deref(),
            Some("arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/lb/50dc/f2f7")
        );
    }
}
