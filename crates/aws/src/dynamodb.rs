//! The runtime's DynamoDB table. Found by name prefix `<stack>-` (list_tables), then by tags.
//! The lock table `aira-locks` is not a stack resource (see `lock.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    PointInTimeRecoveryStatus, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use serde_json::{json, Value};

use crate::kinds::{Cx, KindOps, Observing};
use crate::sdk::{self, Poll};
use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

const GONE: &[&str] = &["ResourceNotFoundException"];

/// Right after a table turns ACTIVE, AWS may still refuse its backups for a few seconds.
const BACKUPS: sdk::Busy = sdk::Busy {
    codes: &["ContinuousBackupsUnavailableException"],
    waits_for: "the new table to accept point-in-time recovery",
    gone: &[],
};

pub struct Table;

async fn table_arn(p: &AwsProvider, name: &str) -> Result<Option<String>> {
    let out = sdk::found(
        format!("read DynamoDB table {name}"),
        GONE,
        p.dynamodb.describe_table().table_name(name).send().await,
    )?;
    Ok(out.and_then(|out| out.table().and_then(|t| t.table_arn()).map(String::from)))
}

/// The table in normal form; `None` if it is gone.
async fn read(p: &AwsProvider, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read DynamoDB table `{id}` ({name})");
    let out = sdk::found(&what, GONE, p.dynamodb.describe_table().table_name(name).send().await)?;
    let Some(table) = out.and_then(|out| out.table) else { return Ok(None) };
    if table.table_status() == Some(&TableStatus::Deleting) {
        return Ok(None);
    }
    let types: BTreeMap<&str, &str> =
        table.attribute_definitions().iter().map(|a| (a.attribute_name(), a.attribute_type().as_str())).collect();
    let mut keys = serde_json::Map::new();
    for kind in [KeyType::Hash, KeyType::Range] {
        for k in table.key_schema().iter().filter(|k| k.key_type() == &kind) {
            keys.insert(k.attribute_name().to_string(), json!(types.get(k.attribute_name()).copied().unwrap_or("?")));
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
        .map(Value::from)
        .unwrap_or(Value::Null);
    let arn = table.table_arn().unwrap_or_default().to_string();
    Ok(Some(Observed {
        id,
        kind: Kind::Table,
        physical_id: name.to_string(),
        props: json!({
            "name": name,
            "keys": keys,
            "billing": billing,
            "point_in_time_recovery": pitr,
            "ttl_attribute": ttl_attribute,
        }),
        outputs: BTreeMap::from([("arn".to_string(), Value::from(arn)), ("name".to_string(), Value::from(name))]),
        depends_on: BTreeSet::new(),
        repair: None,
    }))
}

/// Waits until the table is ACTIVE: point-in-time recovery and TTL need it.
async fn wait_active(
    p: &AwsProvider,
    scope: &Scope,
    id: &LogicalId,
    name: &str,
    progress: &dyn Progress,
) -> Result<()> {
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
    p: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    name: &str,
    current: Option<&Value>,
    progress: &dyn Progress,
) -> Result<()> {
    let what = format!("configure DynamoDB table `{}` ({name})", res.id);
    let want = &res.props;
    let pitr = want["point_in_time_recovery"].as_bool().unwrap_or(false);
    if current.is_none_or(|c| c["point_in_time_recovery"] != want["point_in_time_recovery"]) {
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(pitr)
            .build()
            .map_err(|e| ProviderError::new(format!("{what}: {e}")))?;
        sdk::retry_busy(scope, progress, &res.id, &what, &BACKUPS, || {
            let req = p.dynamodb.update_continuous_backups().table_name(name);
            req.point_in_time_recovery_specification(spec.clone()).send()
        })
        .await?;
    }
    let have = current.map(|c| c["ttl_attribute"].clone()).unwrap_or(Value::Null);
    if have != want["ttl_attribute"] {
        // One attribute at a time: the old one is switched off first.
        for (attr, enabled) in [(&have, false), (&want["ttl_attribute"], true)] {
            let Some(attr) = attr.as_str() else { continue };
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

async fn reread(p: &AwsProvider, name: &str, res: &Resolved, what: &str) -> Result<Observed> {
    read(p, name, res.id.clone())
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: the table disappeared right after the call")))
}

#[async_trait]
impl KindOps for Table {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let prefix = format!("{}-", scope.stack);
        let mut names = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let req = aws.dynamodb.list_tables().set_exclusive_start_table_name(start.take()).limit(100);
            let out = call!("list DynamoDB tables", req.send());
            names.extend(out.table_names().iter().filter(|n| n.starts_with(&prefix)).cloned());
            match out.last_evaluated_table_name() {
                Some(last) => start = Some(last.to_string()),
                None => break,
            }
        }
        let mut found = Vec::new();
        for name in names {
            let Some(arn) = table_arn(aws, &name).await? else { continue };
            let out = aws.dynamodb.list_tags_of_resource().resource_arn(&arn).send().await;
            let Some(out) = sdk::found(format!("read tags of DynamoDB table {name}"), GONE, out)? else { continue };
            let Some(id) = sdk::adopt_tags(scope, out.tags()) else { continue };
            found.extend(read(aws, &name, id).await?);
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        let name = res.props["name"].as_str().unwrap_or_default().to_string();
        let what = format!("create DynamoDB table `{}` ({name})", res.id);
        let mut req = aws.dynamodb.create_table().table_name(&name);
        let keys = res.props["keys"].as_object().cloned().unwrap_or_default();
        for (i, (attr, ty)) in keys.iter().enumerate() {
            let key_type = if i == 0 { KeyType::Hash } else { KeyType::Range };
            let ty = ScalarAttributeType::from(ty.as_str().unwrap_or("S"));
            let def = AttributeDefinition::builder().attribute_name(attr).attribute_type(ty).build();
            let key = KeySchemaElement::builder().attribute_name(attr).key_type(key_type).build();
            let built = |e| ProviderError::new(format!("{what}: {e}"));
            req = req.attribute_definitions(def.map_err(built)?).key_schema(key.map_err(built)?);
        }
        req = req.billing_mode(BillingMode::from(res.props["billing"].as_str().unwrap_or("PAY_PER_REQUEST")));
        call!(what, req.set_tags(Some(sdk::tag_list(scope, &res.id, &[]))).send());
        wait_active(aws, scope, &res.id, &name, progress).await?;
        reconcile(aws, scope, res, &name, None, progress).await?;
        reread(aws, &name, res, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, scope, progress } = *cx;
        let name = current.physical_id.clone();
        let what = format!("update DynamoDB table `{}` ({name})", res.id);
        if current.props["billing"] != res.props["billing"] {
            let mode = BillingMode::from(res.props["billing"].as_str().unwrap_or("PAY_PER_REQUEST"));
            call!(what, aws.dynamodb.update_table().table_name(&name).billing_mode(mode).send());
        }
        reconcile(aws, scope, res, &name, Some(&current.props), progress).await?;
        reread(aws, &name, res, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, scope, progress } = *cx;
        let name = &current.physical_id;
        let what = format!("delete DynamoDB table `{}` ({name})", current.id);
        if sdk::found(&what, GONE, aws.dynamodb.delete_table().table_name(name).send().await)?.is_none() {
            return Ok(());
        }
        sdk::poll_until(scope, progress, &current.id, &format!("table {name}"), Duration::from_secs(2), || async {
            Ok(match table_arn(aws, name).await? {
                Some(_) => Poll::Pending("DELETING, waiting until it is gone".into()),
                None => Poll::Done(()),
            })
        })
        .await
    }
}
