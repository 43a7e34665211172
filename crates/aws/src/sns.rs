//! The stack's alert topic and its subscriptions (`protocol:endpoint`, e.g. `email:ops@example.com`).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::kinds::{Cx, KindOps, Observing};
use crate::{sdk, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, ProviderError, Resolved};

type Result<T> = std::result::Result<T, ProviderError>;

/// Error codes saying a topic is gone.
const GONE: &[&str] = &["NotFound"];

pub struct Topic;

/// `protocol:endpoint` → subscription ARN (`PendingConfirmation` until the address confirms).
async fn subscriptions(p: &AwsProvider, arn: &str) -> Result<BTreeMap<String, String>> {
    let mut subs = BTreeMap::new();
    let mut pages = p.sns.list_subscriptions_by_topic().topic_arn(arn).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk::error(format!("list subscriptions of SNS topic {arn}"), e))?;
        for s in page.subscriptions() {
            subs.insert(
                format!("{}:{}", s.protocol().unwrap_or_default(), s.endpoint().unwrap_or_default()),
                s.subscription_arn().unwrap_or_default().to_string(),
            );
        }
    }
    Ok(subs)
}

async fn read(p: &AwsProvider, arn: &str, id: LogicalId) -> Result<Observed> {
    let subs = subscriptions(p, arn).await?;
    let name = arn.rsplit(':').next().unwrap_or(arn).to_string();
    Ok(Observed {
        id,
        kind: Kind::Topic,
        physical_id: arn.to_string(),
        props: json!({ "name": name, "subscriptions": subs.keys().collect::<Vec<_>>() }),
        outputs: BTreeMap::from([("arn".to_string(), Value::from(arn))]),
        depends_on: BTreeSet::new(),
        repair: None,
    })
}

fn wanted(res: &Resolved) -> BTreeSet<String> {
    res.props["subscriptions"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
}

async fn subscribe(p: &AwsProvider, arn: &str, what: &str, sub: &str) -> Result<()> {
    let (protocol, endpoint) = sub.split_once(':').unwrap_or(("email", sub));
    call!(
        format!("{what}: subscribe {sub}"),
        p.sns.subscribe().topic_arn(arn).protocol(protocol).endpoint(endpoint).send()
    );
    Ok(())
}

#[async_trait]
impl KindOps for Topic {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let prefix = format!("{}-", scope.stack);
        let mut arns = Vec::new();
        let mut pages = aws.sns.list_topics().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk::error("list SNS topics", e))?;
            arns.extend(page.topics().iter().filter_map(|t| t.topic_arn().map(String::from)));
        }
        let mut found = Vec::new();
        for arn in arns.into_iter().filter(|a| a.rsplit(':').next().is_some_and(|n| n.starts_with(&prefix))) {
            let out = aws.sns.list_tags_for_resource().resource_arn(&arn).send().await;
            let Some(out) = sdk::found(format!("read tags of SNS topic {arn}"), GONE, out)? else { continue };
            let Some(id) = sdk::adopt_tags(scope, out.tags()) else { continue };
            found.push(read(aws, &arn, id).await?);
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let name = res.props["name"].as_str().unwrap_or_default();
        let what = format!("create SNS topic `{}` ({name})", res.id);
        let out =
            call!(what, aws.sns.create_topic().name(name).set_tags(Some(sdk::tag_list(scope, &res.id, &[]))).send());
        let arn = out.topic_arn().unwrap_or_default().to_string();
        for sub in wanted(res) {
            subscribe(aws, &arn, &what, &sub).await?;
        }
        read(aws, &arn, res.id.clone()).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, .. } = *cx;
        let arn = &current.physical_id;
        let what = format!("update SNS topic `{}` ({arn})", res.id);
        let have = subscriptions(aws, arn).await?;
        let want = wanted(res);
        for sub in want.iter().filter(|s| !have.contains_key(*s)) {
            subscribe(aws, arn, &what, sub).await?;
        }
        for (sub, sub_arn) in have.iter().filter(|(s, _)| !want.contains(*s)) {
            if !sub_arn.starts_with("arn:") {
                // SNS keeps an unconfirmed subscription until it expires (3 days); it cannot be removed.
                continue;
            }
            call!(format!("{what}: unsubscribe {sub}"), aws.sns.unsubscribe().subscription_arn(sub_arn).send());
        }
        read(aws, arn, res.id.clone()).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let what = format!("delete SNS topic `{}` ({})", current.id, current.physical_id);
        sdk::found(what, GONE, aws.sns.delete_topic().topic_arn(&current.physical_id).send().await)?;
        Ok(())
    }
}
