//! An expiring lock per stack, so that two runs (a laptop and CI) never apply one stack at once.
//!
//! One item per stack in the DynamoDB table `aira-locks` (created on first use, on demand
//! billing, shared by every stack of the account and region): `{stack, holder, acquired_at,
//! expires_at}`. Taking it is a conditional put: the item is absent, or expired. The holder
//! renews it while it runs; a holder that died stops renewing, and its lock expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, Tag,
};
use aws_sdk_dynamodb::Client;
use tokio::task::JoinHandle;

use aira_engine::provider::{ProviderError, TAG_MANAGED_BY};

pub const TABLE: &str = "aira-locks";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Who runs: user, host, process, and the CI run when there is one.
pub fn holder() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    let mut h = format!("{user}@{host} (pid {})", std::process::id());
    if let (Ok(repo), Ok(run)) = (std::env::var("GITHUB_REPOSITORY"), std::env::var("GITHUB_RUN_ID")) {
        h.push_str(&format!(", GitHub Actions {repo} run {run}"));
    }
    h
}

/// Why the lock could not be taken.
pub enum LockError {
    Held { holder: String, since: u64, expires: u64 },
    Aws(ProviderError),
}

/// A held lock; renewed in the background until released.
pub struct Lock {
    ddb: Client,
    stack: String,
    holder: String,
    renew: JoinHandle<()>,
}

async fn ensure_table(ddb: &Client) -> Result<(), ProviderError> {
    match ddb.describe_table().table_name(TABLE).send().await {
        Ok(_) => return Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(crate::sdk::error(format!("read the lock table {TABLE}"), e)),
    }
    let created = ddb
        .create_table()
        .table_name(TABLE)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("stack")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("set"),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("stack").key_type(KeyType::Hash).build().expect("set"))
        .billing_mode(BillingMode::PayPerRequest)
        .tags(Tag::builder().key(TAG_MANAGED_BY).value("aira").build().expect("set"))
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Another run created it at the same moment.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(crate::sdk::error(format!("create the lock table {TABLE}"), e)),
    }
    for _ in 0..120 {
        let out = ddb.describe_table().table_name(TABLE).send().await;
        if out.ok().and_then(|o| o.table).and_then(|t| t.table_status).is_some_and(|s| s.as_str() == "ACTIVE") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ProviderError::new(format!("the lock table {TABLE} did not become active within a minute")))
}

async fn put(ddb: &Client, stack: &str, holder: &str, ttl: Duration, renewal: bool) -> Result<(), LockError> {
    let t = now();
    let mut req = ddb
        .put_item()
        .table_name(TABLE)
        .item("stack", AttributeValue::S(stack.into()))
        .item("holder", AttributeValue::S(holder.into()))
        .item("acquired_at", AttributeValue::N(t.to_string()))
        .item("expires_at", AttributeValue::N((t + ttl.as_secs().max(1)).to_string()));
    // Each condition gets only the values it uses: DynamoDB refuses a request with an unused
    // expression attribute value (ValidationException), which moto accepts.
    req = if renewal {
        req.condition_expression("holder = :me").expression_attribute_values(":me", AttributeValue::S(holder.into()))
    } else {
        req.condition_expression("attribute_not_exists(stack) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(t.to_string()))
    };
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
            let item = ddb
                .get_item()
                .table_name(TABLE)
                .key("stack", AttributeValue::S(stack.into()))
                .consistent_read(true)
                .send()
                .await
                .ok()
                .and_then(|o| o.item)
                .unwrap_or_default();
            let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
            Err(LockError::Held { holder: s("holder"), since: n("acquired_at"), expires: n("expires_at") })
        }
        Err(e) => Err(LockError::Aws(crate::sdk::error(format!("take the lock of `{stack}` in {TABLE}"), e))),
    }
}

/// Takes the stack's lock for `ttl`, renewed every third of it while held.
pub async fn acquire(ddb: &Client, stack: &str, ttl: Duration) -> Result<Lock, LockError> {
    ensure_table(ddb).await.map_err(LockError::Aws)?;
    let holder = holder();
    put(ddb, stack, &holder, ttl, false).await?;
    let renew = {
        let (ddb, stack, holder) = (ddb.clone(), stack.to_string(), holder.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let _ = put(&ddb, &stack, &holder, ttl, true).await;
            }
        })
    };
    Ok(Lock { ddb: ddb.clone(), stack: stack.into(), holder, renew })
}

impl Lock {
    pub async fn release(self) {
        self.renew.abort();
        let _ = self
            .ddb
            .delete_item()
            .table_name(TABLE)
            .key("stack", AttributeValue::S(self.stack.clone()))
            .condition_expression("holder = :me")
            .expression_attribute_values(":me", AttributeValue::S(self.holder.clone()))
            .send()
            .await;
    }
}

/// The current holder of a stack's lock, if it is held and not expired.
pub async fn holder_of(ddb: &Client, stack: &str) -> Option<serde_json::Value> {
    let item = ddb.get_item().table_name(TABLE).key("stack", AttributeValue::S(stack.into())).send().await.ok()?.item?;
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
    let expires = n("expires_at")?;
    (expires > now())
        .then(|| serde_json::json!({ "holder": s("holder"), "acquired_at": n("acquired_at"), "expires_at": expires }))
}

/// Removes the stack's lock whoever holds it.
pub async fn force_unlock(ddb: &Client, stack: &str) -> Result<(), ProviderError> {
    ensure_table(ddb).await?;
    ddb.delete_item()
        .table_name(TABLE)
        .key("stack", AttributeValue::S(stack.into()))
        .send()
        .await
        .map_err(|e| crate::sdk::error(format!("remove the lock of `{stack}`"), e))?;
    Ok(())
}
