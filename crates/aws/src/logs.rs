//! The services' CloudWatch log groups `/aira/<stack>/<service>`: found by name prefix, then tags.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::kinds::{Cx, KindOps, Observing};
use crate::{sdk, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, ProviderError, Resolved};

type Result<T> = std::result::Result<T, ProviderError>;

const GONE: &[&str] = &["ResourceNotFoundException"];

pub struct LogGroup;

/// The group's ARN without the `:*` that DescribeLogGroups appends (the form tagging takes).
fn bare_arn(arn: &str) -> &str {
    arn.strip_suffix(":*").unwrap_or(arn)
}

/// `(name, arn, retention days)` of the groups whose name starts with `prefix`.
async fn groups(p: &AwsProvider, prefix: &str) -> Result<Vec<(String, String, Option<i32>)>> {
    let mut out = Vec::new();
    let mut pages = p.logs.describe_log_groups().log_group_name_prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk::error(format!("list log groups `{prefix}*`"), e))?;
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
        repair: None,
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
    let what = format!("{what}: set the retention");
    match res.props["retention_days"].as_i64() {
        Some(days) => {
            call!(what, p.logs.put_retention_policy().log_group_name(name).retention_in_days(days as i32).send());
        }
        None => {
            call!(what, p.logs.delete_retention_policy().log_group_name(name).send());
        }
    }
    Ok(())
}

#[async_trait]
impl KindOps for LogGroup {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let prefix = format!("/aira/{}/", scope.stack);
        let mut found = Vec::new();
        for (name, arn, retention) in groups(aws, &prefix).await? {
            let out = aws.logs.list_tags_for_resource().resource_arn(bare_arn(&arn)).send().await;
            let Some(out) = sdk::found(format!("read tags of log group {name}"), GONE, out)? else { continue };
            let Some(id) = sdk::adopt_map(scope, out.tags().into_iter().flatten()) else { continue };
            found.push(observed(id, &name, &arn, retention));
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let name = res.props["name"].as_str().unwrap_or_default().to_string();
        let what = format!("create log group `{}` ({name})", res.id);
        let tags = Some(scope.tags_for(&res.id).into_iter().collect());
        call!(what, aws.logs.create_log_group().log_group_name(&name).set_tags(tags).send());
        retention(aws, &name, res, &what).await?;
        reread(aws, &name, &res.id, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, .. } = *cx;
        let name = current.physical_id.clone();
        let what = format!("update log group `{}` ({name})", res.id);
        retention(aws, &name, res, &what).await?;
        reread(aws, &name, &res.id, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let what = format!("delete log group `{}` ({})", current.id, current.physical_id);
        sdk::found(what, GONE, aws.logs.delete_log_group().log_group_name(&current.physical_id).send().await)?;
        Ok(())
    }
}
