//! The runtime's DynamoDB table. Found by name prefix `<stack>-` (list_tables), then by tags.
//! The lock table `aira-locks` is not a stack resource (see `lock.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    PointInTimeRecoveryStatus, ScalarAttributeType, TableStatus, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};
use serde_json::{json, Value};

use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

type Result<T> = std::result::Result<T, ProviderError>;

fn is_gone<E: ProvideErrorMetadata, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()).is_some_and(|c| c == "ResourceNotFoundException")
}

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let prefix = format!("{}-", scope.stack);
    let mut names = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = call!(
            "list DynamoDB tables",
            p.dynamodb.list_tables().set_exclusive_start_table_name(start.take()).limit(100).send()
        );
        names.extend(out.table_names().iter().filter(|n| n.starts_with(&prefix)).cloned());
        match out.last_evaluated_table_name() {
            Some(last) => start = Some(last.to_string()),
            None => break,
        }
    }
    let mut found = Vec::new();
    for name in names {
        let Some(arn) = table_arn(p, &name).await? else { continue };
        let tags = match p.dynamodb.list_tags_of_resource().resource_arn(&arn).send().await {
            Ok(out) => out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!(
                    "read tags of DynamoDB table {name}: {}",
                    crate::sdk::describe(&e)
                )))
            }
        };
        let tags: BTreeMap<String, String> = tags;
        if tags.get(TAG_STACK) != Some(&scope.stack) {
            continue;
        }
        let Some(id) = tags.get(TAG_ID) else { continue };
        if let Some(o) = read(p, &name, id.as_str().into()).await? {
            found.push(o);
        }
    }
    Ok(found)
}

async fn table_arn(p: &AwsProvider, name: &str) -> Result<Option<String>> {
    match p.dynamodb.describe_table().table_name(name).send().await {
        Ok(out) => Ok(out.table().and_then(|t| t.table_arn()).map(String::from)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(ProviderError::new(format!("read DynamoDB table {name}: {}", crate::sdk::describe(&e)))),
    }
}

/// The table in normal form; `None` if it is gone.
async fn read(p: &AwsProvider, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read DynamoDB table `{id}` ({name})");
    let table = match p.dynamodb.describe_table().table_name(name).send().await {
        Ok(out) => match out.table {
            Some(t) => t,
            None => return Ok(None),
        },
        Err(e) if is_gone(&e) => return Ok(None),
        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    };
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
    }))
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    let name = res.props["name"].as_str().unwrap_or_default().to_string();
    let what = format!("create DynamoDB table `{}` ({name})", res.id);
    let mut req = p.dynamodb.create_table().table_name(&name);
    let keys = res.props["keys"].as_object().cloned().unwrap_or_default();
    for (i, (attr, ty)) in keys.iter().enumerate() {
        let key_type = if i == 0 { KeyType::Hash } else { KeyType::Range };
        let def = AttributeDefinition::builder()
            .attribute_name(attr)
            .attribute_type(ScalarAttributeType::from(ty.as_str().unwrap_or("S")))
            .build()
            .map_err(|e| ProviderError::new(format!("{what}: {e}")))?;
        let key = KeySchemaElement::builder()
            .attribute_name(attr)
            .key_type(key_type)
            .build()
            .map_err(|e| ProviderError::new(format!("{what}: {e}")))?;
        req = req.attribute_definitions(def).key_schema(key);
    }
    req = req.billing_mode(BillingMode::from(res.props["billing"].as_str().unwrap_or("PAY_PER_REQUEST")));
    for (k, v) in scope.tags_for(&res.id) {
        req = req.tags(Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::new(format!("{what}: {e}")))?);
    }
    call!(what, req.send());
    wait_active(p, scope, &res.id, &name, progress).await?;
    reconcile(p, res, &name, None).await?;
    reread(p, &name, res, &what).await
}

async fn wait_active(
    p: &AwsProvider,
    scope: &Scope,
    id: &LogicalId,
    name: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let start = Instant::now();
    loop {
        let out =
            call!(format!("read DynamoDB table `{id}` ({name})"), p.dynamodb.describe_table().table_name(name).send());
        let status = out.table().and_then(|t| t.table_status()).cloned();
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        let status = status.map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into());
        if start.elapsed() > scope.wait {
            return Err(ProviderError::new(format!(
                "DynamoDB table `{id}` ({name}) still {status} after {}s",
                scope.wait.as_secs()
            )));
        }
        progress.waiting(
            id,
            &format!(
                "table {name} is {status}, waiting until ACTIVE before enabling point-in-time recovery and TTL ({}s)",
                start.elapsed().as_secs()
            ),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Point-in-time recovery and TTL to the desired values (what differs from `current`, if known).
async fn reconcile(p: &AwsProvider, res: &Resolved, name: &str, current: Option<&Value>) -> Result<()> {
    let what = format!("configure DynamoDB table `{}` ({name})", res.id);
    let want = &res.props;
    let pitr = want["point_in_time_recovery"].as_bool().unwrap_or(false);
    if current.is_none_or(|c| c["point_in_time_recovery"] != want["point_in_time_recovery"]) {
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(pitr)
            .build()
            .map_err(|e| ProviderError::new(format!("{what}: {e}")))?;
        // Right after a table turns ACTIVE, AWS may still refuse for a few seconds.
        let start = Instant::now();
        loop {
            let sent = p
                .dynamodb
                .update_continuous_backups()
                .table_name(name)
                .point_in_time_recovery_specification(spec.clone())
                .send()
                .await;
            match sent {
                Ok(_) => break,
                Err(e)
                    if e.as_service_error().and_then(|s| s.code()) == Some("ContinuousBackupsUnavailableException")
                        && start.elapsed() < Duration::from_secs(60) =>
                {
                    tokio::time::sleep(Duration::from_secs(2)).await
                }
                Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
            }
        }
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

pub async fn update(p: &AwsProvider, _: &Scope, res: &Resolved, current: &Observed) -> Result<Observed> {
    let name = current.physical_id.clone();
    let what = format!("update DynamoDB table `{}` ({name})", res.id);
    if current.props["billing"] != res.props["billing"] {
        let mode = BillingMode::from(res.props["billing"].as_str().unwrap_or("PAY_PER_REQUEST"));
        call!(what, p.dynamodb.update_table().table_name(&name).billing_mode(mode).send());
    }
    reconcile(p, res, &name, Some(&current.props)).await?;
    reread(p, &name, res, &what).await
}

pub async fn delete(p: &AwsProvider, current: &Observed, scope: &Scope, progress: &dyn Progress) -> Result<()> {
    let name = &current.physical_id;
    let what = format!("delete DynamoDB table `{}` ({name})", current.id);
    match p.dynamodb.delete_table().table_name(name).send().await {
        Ok(_) => {}
        Err(e) if is_gone(&e) => return Ok(()),
        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    }
    let start = Instant::now();
    while table_arn(p, name).await?.is_some() {
        if start.elapsed() > scope.wait {
            return Err(ProviderError::new(format!("{what}: still deleting after {}s", scope.wait.as_secs())));
        }
        progress.waiting(
            &current.id,
            &format!("table {name} is DELETING, waiting until it is gone ({}s)", start.elapsed().as_secs()),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}
