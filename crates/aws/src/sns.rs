//! The stack's alert topic and its subscriptions (`protocol:endpoint`, e.g. `email:ops@example.com`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::AwsProvider;
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
    let prefix = format!("{}-", scope.stack);
    let mut arns = Vec::new();
    let mut pages = p.sns.list_topics().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::new(format!("list SNS topics: {}", crate::sdk::describe(&e))))?;
        arns.extend(page.topics().iter().filter_map(|t| t.topic_arn().map(String::from)));
    }
    let mut found = Vec::new();
    for arn in arns.into_iter().filter(|a| a.rsplit(':').next().is_some_and(|n| n.starts_with(&prefix))) {
        let tags = match p.sns.list_tags_for_resource().resource_arn(&arn).send().await {
            Ok(out) => {
                out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect::<BTreeMap<_, _>>()
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!("read tags of SNS topic {arn}: {}", crate::sdk::describe(&e))))
            }
        };
        if tags.get(TAG_STACK) != Some(&scope.stack) {
            continue;
        }
        let Some(id) = tags.get(TAG_ID) else { continue };
        found.push(read(p, &arn, id).await?);
    }
    Ok(found)
}

/// `protocol:endpoint` → subscription ARN (`PendingConfirmation` until the address confirms).
async fn subscriptions(p: &AwsProvider, arn: &str) -> Result<BTreeMap<String, String>, ProviderError> {
    let mut subs = BTreeMap::new();
    let mut pages = p.sns.list_subscriptions_by_topic().topic_arn(arn).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            ProviderError::new(format!("list subscriptions of SNS topic {arn}: {}", crate::sdk::describe(&e)))
        })?;
        for s in page.subscriptions() {
            subs.insert(
                format!("{}:{}", s.protocol().unwrap_or_default(), s.endpoint().unwrap_or_default()),
                s.subscription_arn().unwrap_or_default().to_string(),
            );
        }
    }
    Ok(subs)
}

async fn read(p: &AwsProvider, arn: &str, id: &str) -> Result<Observed, ProviderError> {
    let subs = subscriptions(p, arn).await?;
    let name = arn.rsplit(':').next().unwrap_or(arn).to_string();
    Ok(Observed {
        id: id.into(),
        kind: Kind::Topic,
        physical_id: arn.to_string(),
        props: json!({ "name": name, "subscriptions": subs.keys().collect::<Vec<_>>() }),
        outputs: BTreeMap::from([("arn".to_string(), Value::from(arn))]),
        depends_on: BTreeSet::new(),
    })
}

fn wanted(res: &Resolved) -> BTreeSet<String> {
    res.props["subscriptions"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
}

async fn subscribe(p: &AwsProvider, arn: &str, what: &str, sub: &str) -> Result<(), ProviderError> {
    let (protocol, endpoint) = sub.split_once(':').unwrap_or(("email", sub));
    p.sns
        .subscribe()
        .topic_arn(arn)
        .protocol(protocol)
        .endpoint(endpoint)
        .send()
        .await
        .map_err(|e| ProviderError::new(format!("{what}: subscribe {sub}: {}", crate::sdk::describe(&e))))?;
    Ok(())
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved) -> Result<Observed, ProviderError> {
    let name = res.props["name"].as_str().unwrap_or_default();
    let what = format!("create SNS topic `{}` ({name})", res.id);
    let tags: Vec<_> = scope
        .tags_for(&res.id)
        .into_iter()
        .map(|(k, v)| aws_sdk_sns::types::Tag::builder().key(k).value(v).build())
        .collect::<Result<_, _>>()
        .map_err(|e| ProviderError::new(format!("{what}: {e}")))?;
    let out = p
        .sns
        .create_topic()
        .name(name)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e))))?;
    let arn = out.topic_arn().unwrap_or_default().to_string();
    for sub in wanted(res) {
        subscribe(p, &arn, &what, &sub).await?;
    }
    read(p, &arn, &res.id.0).await
}

pub async fn update(p: &AwsProvider, _: &Scope, res: &Resolved, current: &Observed) -> Result<Observed, ProviderError> {
    let arn = &current.physical_id;
    let what = format!("update SNS topic `{}` ({arn})", res.id);
    let have = subscriptions(p, arn).await?;
    let want = wanted(res);
    for sub in want.iter().filter(|s| !have.contains_key(*s)) {
        subscribe(p, arn, &what, sub).await?;
    }
    for (sub, sub_arn) in have.iter().filter(|(s, _)| !want.contains(*s)) {
        if !sub_arn.starts_with("arn:") {
            // SNS keeps an unconfirmed subscription until it expires (3 days); it cannot be removed.
            continue;
        }
        p.sns
            .unsubscribe()
            .subscription_arn(sub_arn)
            .send()
            .await
            .map_err(|e| ProviderError::new(format!("{what}: unsubscribe {sub}: {}", crate::sdk::describe(&e))))?;
    }
    read(p, arn, &res.id.0).await
}

pub async fn delete(p: &AwsProvider, current: &Observed) -> Result<(), ProviderError> {
    match p.sns.delete_topic().topic_arn(&current.physical_id).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => Ok(()),
        Err(e) => Err(ProviderError::new(format!(
            "delete SNS topic `{}` ({}): {}",
            current.id,
            current.physical_id,
            crate::sdk::describe(&e)
        ))),
    }
}
