//! The services' CloudWatch log groups `/aira/<stack>/<service>`: found by name prefix, then tags.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use serde_json::{json, Value};

use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

type Result<T> = std::result::Result<T, ProviderError>;

fn is_gone<E: ProvideErrorMetadata, R>(e: &aws_sdk_cloudwatchlogs::error::SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()).is_some_and(|c| c == "ResourceNotFoundException")
}

/// The group's ARN without the `:*` that DescribeLogGroups appends (the form tagging takes).
fn bare_arn(arn: &str) -> &str {
    arn.strip_suffix(":*").unwrap_or(arn)
}

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let prefix = format!("/aira/{}/", scope.stack);
    let mut found = Vec::new();
    for (name, arn, retention) in groups(p, &prefix).await? {
        let tags = match p.logs.list_tags_for_resource().resource_arn(bare_arn(&arn)).send().await {
            Ok(out) => out.tags.unwrap_or_default(),
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!("read tags of log group {name}: {}", crate::sdk::describe(&e))))
            }
        };
        if tags.get(TAG_STACK) != Some(&scope.stack) {
            continue;
        }
        let Some(id) = tags.get(TAG_ID) else { continue };
        found.push(observed(id.as_str().into(), &name, &arn, retention));
    }
    Ok(found)
}

/// `(name, arn, retention days)` of the groups whose name starts with `prefix`.
async fn groups(p: &AwsProvider, prefix: &str) -> Result<Vec<(String, String, Option<i32>)>> {
    let mut out = Vec::new();
    let mut pages = p.logs.describe_log_groups().log_group_name_prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::new(format!("list log groups `{prefix}*`: {}", crate::sdk::describe(&e))))?;
        for g in page.log_groups() {
            let (Some(name), Some(arn)) = (g.log_group_name(), g.arn()) else { continue };
            out.push((name.to_string(), arn.to_string(), g.retention_in_days()));
        }
    }
    Ok(out)
}

fn observed(id: LogicalId, name: &str, arn: &str, retention: Option<i32>) -> Observed {
    Observed {
        id,
        kind: Kind::LogGroup,
        physical_id: name.to_string(),
        props: json!({ "name": name, "retention_days": retention }),
        outputs: BTreeMap::from([("arn".to_string(), Value::from(arn)), ("name".to_string(), Value::from(name))]),
        depends_on: BTreeSet::new(),
    }
}

async fn reread(p: &AwsProvider, name: &str, id: &LogicalId, what: &str) -> Result<Observed> {
    groups(p, name)
        .await?
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(n, arn, r)| observed(id.clone(), &n, &arn, r))
        .ok_or_else(|| ProviderError::new(format!("{what}: the log group disappeared right after the call")))
}

async fn retention(p: &AwsProvider, name: &str, res: &Resolved, what: &str) -> Result<()> {
    let failed = |e: String| ProviderError::new(format!("{what}: set the retention: {e}"));
    match res.props["retention_days"].as_i64() {
        Some(days) => {
            let req = p.logs.put_retention_policy().log_group_name(name).retention_in_days(days as i32);
            req.send().await.map_err(|e| failed(crate::sdk::describe(&e)))?;
        }
        None => {
            p.logs
                .delete_retention_policy()
                .log_group_name(name)
                .send()
                .await
                .map_err(|e| failed(crate::sdk::describe(&e)))?;
        }
    }
    Ok(())
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved) -> Result<Observed> {
    let name = res.props["name"].as_str().unwrap_or_default().to_string();
    let what = format!("create log group `{}` ({name})", res.id);
    p.logs
        .create_log_group()
        .log_group_name(&name)
        .set_tags(Some(scope.tags_for(&res.id).into_iter().collect()))
        .send()
        .await
        .map_err(|e| ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e))))?;
    retention(p, &name, res, &what).await?;
    reread(p, &name, &res.id, &what).await
}

pub async fn update(p: &AwsProvider, _: &Scope, res: &Resolved, current: &Observed) -> Result<Observed> {
    let name = current.physical_id.clone();
    let what = format!("update log group `{}` ({name})", res.id);
    retention(p, &name, res, &what).await?;
    reread(p, &name, &res.id, &what).await
}

pub async fn delete(p: &AwsProvider, current: &Observed) -> Result<()> {
    match p.logs.delete_log_group().log_group_name(&current.physical_id).send().await {
        Ok(_) => Ok(()),
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(ProviderError::new(format!(
            "delete log group `{}` ({}): {}",
            current.id,
            current.physical_id,
            crate::sdk::describe(&e)
        ))),
    }
}
