//! The services' CloudWatch log groups `/aira/<stack>/<service>`: found by name prefix, then tags.

use async_trait::async_trait;

use crate::ops::{Cx, KindOps};
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{Observed, ProviderError, Resolved};

type Result<T> = std::result::Result<T, ProviderError>;

const GONE: &[&str] = &["ResourceNotFoundException"];

pub struct LogGroup;

/// The group's ARN without the `:*` that DescribeLogGroups appends (the form tagging takes).
fn bare_arn(arn: &str) -> &str {
    arn.strip_suffix(":*").unwrap_or(arn)
}

/// `(name, arn, retention days)` of the groups whose name starts with `prefix`.
async fn groups(p: &Clients, prefix: &str) -> Result<Vec<(String, String, Option<i32>)>> {
    let pages = p.logs.describe_log_groups().log_group_name_prefix(prefix).into_paginator().send();
    let pages = sdk::pages(format!("list log groups `{prefix}*`"), pages).await?;
    let groups = pages.iter().flat_map(|p| p.log_groups());
    let named =
        groups.filter_map(|g| Some((g.log_group_name()?.to_string(), g.arn()?.to_string(), g.retention_in_days())));
    Ok(named.collect())
}

fn observed(id: LogicalId, name: &str, arn: &str, retention: Option<i32>) -> Observed {
    let props =
        kind::LogGroup { name: name.to_string(), retention_days: retention.and_then(|d| u64::try_from(d).ok()) };
    Observed::of(id, name, &props).output("arn", arn).output("name", name)
}

async fn reread(p: &Clients, name: &str, id: &LogicalId, what: &str) -> Result<Observed> {
    let found = groups(p, name).await?.into_iter().find(|(n, _, _)| n == name);
    sdk::read_back(what, "log group", found.map(|(n, arn, r)| observed(id.clone(), &n, &arn, r)))
}

async fn retention(p: &Clients, name: &str, res: &Resolved, what: &str) -> Result<()> {
    let what = format!("{what}: set the retention");
    match res.props::<kind::LogGroup>()?.retention_days {
        Some(days) => {
            let days = i32::try_from(days).unwrap_or(i32::MAX);
            call!(what, p.logs.put_retention_policy().log_group_name(name).retention_in_days(days).send());
        }
        None => {
            call!(what, p.logs.delete_retention_policy().log_group_name(name).send());
        }
    }
    Ok(())
}

#[async_trait]
impl KindOps for LogGroup {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let prefix = format!("/aira/{}/", cx.scope.stack);
        let groups = groups(cx.aws, &prefix).await?;
        let tags = |(name, arn, _): &(String, String, Option<i32>)| {
            let call = cx.aws.logs.list_tags_for_resource().resource_arn(bare_arn(arn)).send();
            sdk::adopted(cx.scope, format!("read tags of log group {name}"), GONE, call)
        };
        let read = |(name, arn, retention): &(String, String, Option<i32>), id| {
            std::future::ready(Ok(Some(observed(id, name, arn, *retention))))
        };
        sdk::adopt_each(groups.iter().collect(), tags, read).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let name = res.props::<kind::LogGroup>()?.name;
        let what = format!("create log group `{}` ({name})", res.id);
        let tags = Some(cx.scope.tags_for(&res.id).into_iter().collect());
        call!(what, cx.aws.logs.create_log_group().log_group_name(&name).set_tags(tags).send());
        retention(cx.aws, &name, res, &what).await?;
        reread(cx.aws, &name, &res.id, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let name = current.physical_id.clone();
        let what = format!("update log group `{}` ({name})", res.id);
        retention(cx.aws, &name, res, &what).await?;
        reread(cx.aws, &name, &res.id, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let what = format!("delete log group `{}` ({})", current.id, current.physical_id);
        sdk::delete(what, GONE, cx.aws.logs.delete_log_group().log_group_name(&current.physical_id).send()).await
    }
}
