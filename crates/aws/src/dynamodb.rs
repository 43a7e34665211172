//! The runtime's DynamoDB table. Found by name prefix `<stack>-` (list_tables), then by tags.
//! The lock table `aira-locks` is not a stack resource (see `lock.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ops::{Cx, KindOps};
use crate::sdk::{self, Poll};
use crate::Clients;
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    PointInTimeRecoveryStatus, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

type Result<T> = std::result::Result<T, ProviderError>;

const GONE: &[&str] = &["ResourceNotFoundException"];

/// Right after a table turns ACTIVE, AWS may still refuse its backups for a few seconds.
const BACKUPS: sdk::Busy = sdk::Busy {
    codes: &["ContinuousBackupsUnavailableException"],
    waits_for: "the new table to accept point-in-time recovery",
    gone: &[],
};

pub struct Table;

async fn table_arn(p: &Clients, name: &str) -> Result<Option<String>> {
    let out = sdk::found(
        format!("read DynamoDB table {name}"),
        GONE,
        p.dynamodb.describe_table().table_name(name).send().await,
    )?;
    Ok(out.and_then(|out| out.table().and_then(|t| t.table_arn()).map(String::from)))
}

/// The table in normal form; `None` if it is gone.
async fn read(p: &Clients, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read DynamoDB table `{id}` ({name})");
    let out = sdk::found(&what, GONE, p.dynamodb.describe_table().table_name(name).send().await)?;
    let Some(table) = out.and_then(|out| out.table) else { return Ok(None) };
    if table.table_status() == Some(&TableStatus::Deleting) {
        return Ok(None);
    }
    let types: BTreeMap<&str, &str> =
        table.attribute_definitions().iter().map(|a| (a.attribute_name(), a.attribute_type().as_str())).collect();
    let mut keys = kind::Named::default();
    for key_type in [KeyType::Hash, KeyType::Range] {
        for k in table.key_schema().iter().filter(|k| k.key_type() == &key_type) {
            keys.set(k.attribute_name(), types.get(k.attribute_name()).copied().unwrap_or("?"));
        }
    }
    let billing = table
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map(|b| b.as_str().to_string())
        .unwrap_or_else(|| "PROVISIONED".into());
    let backups = call!(what, p.dynamodb.describe_continuous_backups().table_name(name).send());
    let pitr = backups
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|d| d.point_in_time_recovery_status())
        == Some(&PointInTimeRecoveryStatus::Enabled);
    let ttl = call!(what, p.dynamodb.describe_time_to_live().table_name(name).send());
    let ttl_attribute = ttl
        .time_to_live_description()
        .filter(|d| matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)))
        .and_then(|d| d.attribute_name())
        .map(String::from);
    let props = kind::Table { name: name.to_string(), keys, billing, point_in_time_recovery: pitr, ttl_attribute };
    let arn = table.table_arn().unwrap_or_default();
    Ok(Some(Observed::of(id, name, &props).output("arn", arn).output("name", name)))
}

/// Waits until the table is ACTIVE: point-in-time recovery and TTL need it.
async fn wait_active(p: &Clients, scope: &Scope, id: &LogicalId, name: &str, progress: &dyn Progress) -> Result<()> {
    sdk::poll_until(scope, progress, id, &format!("table {name}"), Duration::from_secs(2), || async {
        let what = format!("read DynamoDB table `{id}` ({name})");
        let out = call!(what, p.dynamodb.describe_table().table_name(name).send());
        Ok(match out.table().and_then(|t| t.table_status()) {
            Some(TableStatus::Active) => Poll::Done(()),
            status => Poll::Pending(format!(
                "{}, waiting until ACTIVE before enabling point-in-time recovery and TTL",
                status.map(|s| s.as_str()).unwrap_or("unknown")
            )),
        })
    })
    .await
}

/// Point-in-time recovery and TTL to the desired values (what differs from `current`, if known).
async fn reconcile(
    p: &Clients,
    scope: &Scope,
    id: &LogicalId,
    name: &str,
    want: &kind::Table,
    current: Option<&kind::Table>,
    progress: &dyn Progress,
) -> Result<()> {
    let what = format!("configure DynamoDB table `{id}` ({name})");
    let pitr = want.point_in_time_recovery;
    if current.is_none_or(|c| c.point_in_time_recovery != pitr) {
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(pitr)
            .build()
            .map_err(|e| ProviderError::new(format!("{what}: {e}")))?;
        sdk::retry_busy(scope, progress, id, &what, &BACKUPS, || {
            let req = p.dynamodb.update_continuous_backups().table_name(name);
            req.point_in_time_recovery_specification(spec.clone()).send()
        })
        .await?;
    }
    let have = current.and_then(|c| c.ttl_attribute.as_deref());
    if have != want.ttl_attribute.as_deref() {
        // One attribute at a time: the old one is switched off first.
        for (attr, enabled) in [(have, false), (want.ttl_attribute.as_deref(), true)] {
            let Some(attr) = attr else { continue };
            let spec = TimeToLiveSpecification::builder()
                .attribute_name(attr)
                .enabled(enabled)
                .build()
                .map_err(|e| ProviderError::new(format!("{what}: {e}")))?;
            call!(what, p.dynamodb.update_time_to_live().table_name(name).time_to_live_specification(spec).send());
        }
    }
    Ok(())
}

#[async_trait]
impl KindOps for Table {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let prefix = format!("{}-", cx.scope.stack);
        let pages = cx.aws.dynamodb.list_tables().limit(100).into_paginator().send();
        let pages = sdk::pages("list DynamoDB tables", pages).await?;
        let names: Vec<&str> =
            pages.iter().flat_map(|p| p.table_names()).filter(|n| n.starts_with(&prefix)).map(String::as_str).collect();
        // Tags are read by ARN, which the listing does not give.
        let tags = |name| async move {
            let Some(arn) = table_arn(cx.aws, name).await? else { return Ok(None) };
            let call = cx.aws.dynamodb.list_tags_of_resource().resource_arn(&arn).send();
            sdk::adopted(cx.scope, format!("read tags of DynamoDB table {name}"), GONE, call).await
        };
        sdk::adopt_each(names, tags, |name, id| read(cx.aws, name, id)).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let want: kind::Table = res.props()?;
        let name = want.name.as_str();
        let what = format!("create DynamoDB table `{}` ({name})", res.id);
        let mut req = cx.aws.dynamodb.create_table().table_name(name);
        for (i, (attr, ty)) in want.keys.iter().enumerate() {
            let key_type = if i == 0 { KeyType::Hash } else { KeyType::Range };
            let ty = ScalarAttributeType::from(ty.as_str());
            let def = AttributeDefinition::builder().attribute_name(attr).attribute_type(ty).build();
            let key = KeySchemaElement::builder().attribute_name(attr).key_type(key_type).build();
            let built = |e| ProviderError::new(format!("{what}: {e}"));
            req = req.attribute_definitions(def.map_err(built)?).key_schema(key.map_err(built)?);
        }
        req = req.billing_mode(BillingMode::from(want.billing.as_str()));
        call!(what, req.set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[]))).send());
        wait_active(cx.aws, cx.scope, &res.id, name, cx.progress).await?;
        reconcile(cx.aws, cx.scope, &res.id, name, &want, None, cx.progress).await?;
        sdk::read_back(&what, "table", read(cx.aws, name, res.id.clone()).await?)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let name = current.physical_id.as_str();
        let what = format!("update DynamoDB table `{}` ({name})", res.id);
        let (want, have): (kind::Table, kind::Table) = (res.props()?, current.props()?);
        if have.billing != want.billing {
            let mode = BillingMode::from(want.billing.as_str());
            call!(what, cx.aws.dynamodb.update_table().table_name(name).billing_mode(mode).send());
        }
        reconcile(cx.aws, cx.scope, &res.id, name, &want, Some(&have), cx.progress).await?;
        sdk::read_back(&what, "table", read(cx.aws, name, res.id.clone()).await?)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let name = &current.physical_id;
        let what = format!("delete DynamoDB table `{}` ({name})", current.id);
        if sdk::found(&what, GONE, cx.aws.dynamodb.delete_table().table_name(name).send().await)?.is_none() {
            return Ok(());
        }
        sdk::poll_until(
            cx.scope,
            cx.progress,
            &current.id,
            &format!("table {name}"),
            Duration::from_secs(2),
            || async {
                Ok(match table_arn(cx.aws, name).await? {
                    Some(_) => Poll::Pending("DELETING, waiting until it is gone".into()),
                    None => Poll::Done(()),
                })
            },
        )
        .await
    }
}
