//! The stack's alert topic and its subscriptions (`protocol:endpoint`, e.g. `email:ops@example.com`),
//! and who else may publish to it: the stack's Prometheus workspace (`publisher`), through the
//! topic's access policy (the managed alert manager publishes as `aps.amazonaws.com`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::ops::{Cx, KindOps};
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{Observed, ProviderError, Resolved};

type Result<T> = std::result::Result<T, ProviderError>;

/// Error codes saying a topic is gone.
const GONE: &[&str] = &["NotFound"];

pub struct Topic;

/// `protocol:endpoint` → subscription ARN (`PendingConfirmation` until the address confirms).
async fn subscriptions(p: &Clients, arn: &str) -> Result<BTreeMap<String, String>> {
    let pages = p.sns.list_subscriptions_by_topic().topic_arn(arn).into_paginator().send();
    let pages = sdk::pages(format!("list subscriptions of SNS topic {arn}"), pages).await?;
    let subs = pages.iter().flat_map(|page| page.subscriptions()).map(|s| {
        let key = format!("{}:{}", s.protocol().unwrap_or_default(), s.endpoint().unwrap_or_default());
        (key, s.subscription_arn().unwrap_or_default().to_string())
    });
    Ok(subs.collect())
}

/// The policy statement that lets the workspace's alert manager publish.
const PROMETHEUS_SID: &str = "PrometheusAlerts";

/// The workspace ARN the topic's policy lets publish, if any.
async fn publisher(p: &Clients, arn: &str) -> Result<Option<String>> {
    let out = call!(format!("read the policy of SNS topic {arn}"), p.sns.get_topic_attributes().topic_arn(arn).send());
    let policy: Value = out
        .attributes()
        .and_then(|a| a.get("Policy"))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    let statements = policy["Statement"].as_array().cloned().unwrap_or_default();
    let ours = statements.iter().find(|s| s["Sid"] == PROMETHEUS_SID);
    Ok(ours.and_then(|s| s["Condition"]["ArnEquals"]["aws:SourceArn"].as_str()).map(String::from))
}

/// The topic's policy: AWS's default statement (the account's own principals, which CloudWatch
/// alarms publish as), and the workspace's alert manager when there is one (AMP user guide,
/// "Giving Amazon Managed Service for Prometheus permission to send messages to your SNS topic").
fn policy(arn: &str, workspace: Option<&str>) -> String {
    let account = arn.split(':').nth(4).unwrap_or_default();
    let mut statements = vec![json!({
        "Sid": "__default_statement_ID",
        "Effect": "Allow",
        "Principal": { "AWS": "*" },
        "Action": [
            "SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission", "SNS:RemovePermission",
            "SNS:DeleteTopic", "SNS:Subscribe", "SNS:ListSubscriptionsByTopic", "SNS:Publish",
        ],
        "Resource": arn,
        "Condition": { "StringEquals": { "AWS:SourceOwner": account } },
    })];
    if let Some(ws) = workspace {
        statements.push(json!({
            "Sid": PROMETHEUS_SID,
            "Effect": "Allow",
            "Principal": { "Service": "aps.amazonaws.com" },
            "Action": ["sns:Publish", "sns:GetTopicAttributes"],
            "Resource": arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": ws }, "StringEquals": { "AWS:SourceAccount": account } },
        }));
    }
    json!({ "Version": "2012-10-17", "Id": "aira", "Statement": statements }).to_string()
}

async fn set_publisher(p: &Clients, arn: &str, what: &str, want: &kind::Topic) -> Result<()> {
    let policy = policy(arn, want.publisher.as_ref().map(|w| w.as_str()));
    call!(
        format!("{what}: set its access policy"),
        p.sns.set_topic_attributes().topic_arn(arn).attribute_name("Policy").attribute_value(policy).send()
    );
    Ok(())
}

async fn read(p: &Clients, arn: &str, id: LogicalId) -> Result<Observed> {
    let (subs, publisher) = tokio::try_join!(subscriptions(p, arn), publisher(p, arn))?;
    let name = arn.rsplit(':').next().unwrap_or(arn).to_string();
    let props = kind::Topic { name, subscriptions: subs.into_keys().collect(), publisher: publisher.map(Into::into) };
    Ok(Observed::of(id, arn, &props).output("arn", arn))
}

async fn subscribe(p: &Clients, arn: &str, what: &str, sub: &str) -> Result<()> {
    let (protocol, endpoint) = sub.split_once(':').unwrap_or(("email", sub));
    call!(
        format!("{what}: subscribe {sub}"),
        p.sns.subscribe().topic_arn(arn).protocol(protocol).endpoint(endpoint).send()
    );
    Ok(())
}

#[async_trait]
impl KindOps for Topic {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let prefix = format!("{}-", cx.scope.stack);
        let pages = sdk::pages("list SNS topics", cx.aws.sns.list_topics().into_paginator().send()).await?;
        let arns = pages.iter().flat_map(|page| page.topics()).filter_map(|t| t.topic_arn());
        let ours: Vec<&str> = arns.filter(|a| a.rsplit(':').next().is_some_and(|n| n.starts_with(&prefix))).collect();
        let tags = |arn| {
            let call = cx.aws.sns.list_tags_for_resource().resource_arn(arn).send();
            sdk::adopted(cx.scope, format!("read tags of SNS topic {arn}"), GONE, call)
        };
        sdk::adopt_each(ours, tags, |arn, id| async move { read(cx.aws, arn, id).await.map(Some) }).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let want: kind::Topic = res.props()?;
        let name = &want.name;
        let what = format!("create SNS topic `{}` ({name})", res.id);
        let out = call!(
            what,
            cx.aws.sns.create_topic().name(name).set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[]))).send()
        );
        let arn = out.topic_arn().unwrap_or_default().to_string();
        if want.publisher.is_some() {
            set_publisher(cx.aws, &arn, &what, &want).await?;
        }
        for sub in &want.subscriptions {
            subscribe(cx.aws, &arn, &what, sub).await?;
        }
        read(cx.aws, &arn, res.id.clone()).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let arn = &current.physical_id;
        let what = format!("update SNS topic `{}` ({arn})", res.id);
        let want: kind::Topic = res.props()?;
        if want.publisher != current.props::<kind::Topic>()?.publisher {
            set_publisher(cx.aws, arn, &what, &want).await?;
        }
        let have = subscriptions(cx.aws, arn).await?;
        for sub in want.subscriptions.iter().filter(|s| !have.contains_key(*s)) {
            subscribe(cx.aws, arn, &what, sub).await?;
        }
        for (sub, sub_arn) in have.iter().filter(|(s, _)| !want.subscriptions.contains(*s)) {
            if !sub_arn.starts_with("arn:") {
                // SNS keeps an unconfirmed subscription until it expires (3 days); it cannot be removed.
                continue;
            }
            call!(format!("{what}: unsubscribe {sub}"), cx.aws.sns.unsubscribe().subscription_arn(sub_arn).send());
        }
        read(cx.aws, arn, res.id.clone()).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let what = format!("delete SNS topic `{}` ({})", current.id, current.physical_id);
        sdk::delete(what, GONE, cx.aws.sns.delete_topic().topic_arn(&current.physical_id).send()).await
    }
}
