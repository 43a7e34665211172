//! An expiring lock per stack, so that two runs (a laptop and CI) never apply one stack at once.
//!
//! One item per stack in the DynamoDB table `aira-locks` (created on first use, on demand
//! billing, shared by every stack of the account and region): `{stack, holder, acquired_at,
//! expires_at}`. Taking it is a conditional put: the item is absent, or expired. The holder
//! renews it while it runs (a conditional update of `expires_at`: still its holder, not yet
//! expired); a holder that died stops renewing, and its lock expires.
//!
//! A holder can lose the lock: another run took it (after `--force-unlock`, or after it
//! expired), or the renewals failed until it was about to expire. [`Lock::loss`] then holds why,
//! and the run stops changing anything (`aira_engine::apply::Stop`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, Tag,
};
use aws_sdk_dynamodb::Client;
use tokio::sync::watch;
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

/// A held lock; renewed in the background until released or lost.
pub struct Lock {
    ddb: Client,
    stack: String,
    holder: String,
    renew: JoinHandle<()>,
    loss: Loss,
}

/// Whether the lock was lost, and why ("held by … since …").
#[derive(Clone)]
pub struct Loss(watch::Receiver<Option<String>>);

impl Loss {
    /// The signal a run watches: it holds a reason once the lock is lost.
    pub fn signal(&self) -> watch::Receiver<Option<String>> {
        self.0.clone()
    }

    /// Why the lock was lost, once the renewal found out everything it could; `None` while held.
    pub async fn reason(&self) -> Option<String> {
        let mut rx = self.0.clone();
        rx.borrow().as_ref()?;
        // The renewal ends after it read who holds the lock now; its sender goes with it.
        while rx.changed().await.is_ok() {}
        let reason = rx.borrow().clone();
        reason
    }

    /// Waits until the lock is lost, and says why.
    pub async fn lost(&self) -> String {
        let mut rx = self.0.clone();
        if rx.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
        self.reason().await.unwrap_or_default()
    }
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

/// Writes the lock's record if it is absent or expired.
async fn put(ddb: &Client, stack: &str, holder: &str, ttl: Duration) -> Result<(), LockError> {
    let t = now();
    let req = ddb
        .put_item()
        .table_name(TABLE)
        .item("stack", AttributeValue::S(stack.into()))
        .item("holder", AttributeValue::S(holder.into()))
        .item("acquired_at", AttributeValue::N(t.to_string()))
        .item("expires_at", AttributeValue::N((t + ttl_secs(ttl)).to_string()))
        // Only the values the condition uses: DynamoDB refuses a request with an unused
        // expression attribute value (ValidationException), which moto accepts.
        .condition_expression("attribute_not_exists(stack) OR expires_at < :now")
        .expression_attribute_values(":now", AttributeValue::N(t.to_string()));
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
            let (holder, since, expires) = read(ddb, stack).await.unwrap_or_default();
            Err(LockError::Held { holder, since, expires })
        }
        Err(e) => Err(LockError::Aws(crate::sdk::error(format!("take the lock of `{stack}` in {TABLE}"), e))),
    }
}

/// The stack's lock, as `up`, `down`, `rollback` and `status` take and read it.
impl crate::AwsProvider {
    /// Takes the stack's lock for `ttl`, renewed every third of it while held.
    pub async fn lock(&self, stack: &str, ttl: Duration) -> Result<Lock, LockError> {
        acquire(&self.clients.dynamodb, stack, ttl).await
    }

    /// The current holder of a stack's lock, if it is held and not expired.
    pub async fn lock_holder(&self, stack: &str) -> Option<serde_json::Value> {
        holder_of(&self.clients.dynamodb, stack).await
    }

    /// Removes the stack's lock whoever holds it.
    pub async fn force_unlock(&self, stack: &str) -> Result<(), ProviderError> {
        force_unlock(&self.clients.dynamodb, stack).await
    }
}

/// Takes the stack's lock for `ttl`, renewed every third of it while held.
async fn acquire(ddb: &Client, stack: &str, ttl: Duration) -> Result<Lock, LockError> {
    ensure_table(ddb).await.map_err(LockError::Aws)?;
    let holder = holder();
    let taken = now();
    put(ddb, stack, &holder, ttl).await?;
    let (tx, rx) = watch::channel(None);
    let renew = {
        let (ddb, stack, holder) = (ddb.clone(), stack.to_string(), holder.clone());
        tokio::spawn(async move { renew(&ddb, &stack, &holder, ttl, taken + ttl_secs(ttl), tx).await })
    };
    Ok(Lock { ddb: ddb.clone(), stack: stack.into(), holder, renew, loss: Loss(rx) })
}

fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

/// Renews the lock every third of `ttl` until it is lost, then says why on `lost` and ends.
/// A refused renewal is retried every tenth of `ttl`; the lock counts as lost once the next try
/// could come after `expires` (the time another run may take it), so the run stops first.
async fn renew(
    ddb: &Client,
    stack: &str,
    holder: &str,
    ttl: Duration,
    mut expires: u64,
    lost: watch::Sender<Option<String>>,
) {
    let retry = ttl / 10;
    let mut wait = ttl / 3;
    let mut last_error = String::new();
    loop {
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let left = Duration::from_secs(expires).saturating_sub(clock);
        if left <= retry {
            let why = if last_error.is_empty() { "no renewal was answered in time" } else { &last_error };
            let _ = lost.send(Some(format!(
                "it could not be renewed before it expired at {} ({why})",
                aira_engine::time::rfc3339(expires)
            )));
            return;
        }
        if !wait.is_zero() {
            // Never past the point where the run must stop.
            tokio::time::sleep(wait.min(left - retry)).await;
            wait = Duration::ZERO;
            continue;
        }
        let t = now();
        let update = ddb
            .update_item()
            .table_name(TABLE)
            .key("stack", AttributeValue::S(stack.into()))
            .update_expression("SET expires_at = :exp")
            .condition_expression("holder = :me AND expires_at >= :now")
            .expression_attribute_values(":exp", AttributeValue::N((t + ttl_secs(ttl)).to_string()))
            .expression_attribute_values(":me", AttributeValue::S(holder.into()))
            .expression_attribute_values(":now", AttributeValue::N(t.to_string()))
            .send();
        // An attempt still unanswered when the lock expires is no renewal.
        match tokio::time::timeout(left - retry, update).await {
            Ok(Ok(_)) => {
                expires = t + ttl_secs(ttl);
                wait = ttl / 3;
            }
            Ok(Err(e)) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                // Stop the run at once; then find out who has the lock, for the message.
                let _ = lost.send(Some("the renewal's condition failed".into()));
                let reason = match read(ddb, stack).await {
                    Some((h, since, _)) if h != holder => {
                        format!("held by {h} since {}", aira_engine::time::rfc3339(since))
                    }
                    Some((_, _, exp)) => {
                        format!("it expired at {} before it was renewed", aira_engine::time::rfc3339(exp))
                    }
                    None => "its record was removed (`--force-unlock` by another run?)".into(),
                };
                let _ = lost.send(Some(reason));
                return;
            }
            Ok(Err(e)) => {
                last_error = crate::sdk::error(format!("renew the lock of `{stack}`"), e).message;
                wait = retry;
            }
            // A try that ran out of time says less than a refusal before it, which is kept.
            Err(_) => {}
        }
    }
}

/// The lock's record: holder, acquired at, expires at.
async fn read(ddb: &Client, stack: &str) -> Option<(String, u64, u64)> {
    let item = ddb
        .get_item()
        .table_name(TABLE)
        .key("stack", AttributeValue::S(stack.into()))
        .consistent_read(true)
        .send()
        .await
        .ok()?
        .item?;
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some((s("holder"), n("acquired_at"), n("expires_at")))
}

impl Lock {
    pub fn loss(&self) -> Loss {
        self.loss.clone()
    }

    /// Stops renewing and removes the record, unless the lock was lost: then the record is
    /// another run's (or expired, and harmless).
    pub async fn release(self) {
        self.renew.abort();
        if self.loss.0.borrow().is_some() {
            return;
        }
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
async fn holder_of(ddb: &Client, stack: &str) -> Option<serde_json::Value> {
    let item = ddb.get_item().table_name(TABLE).key("stack", AttributeValue::S(stack.into())).send().await.ok()?.item?;
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
    let expires = n("expires_at")?;
    (expires > now())
        .then(|| serde_json::json!({ "holder": s("holder"), "acquired_at": n("acquired_at"), "expires_at": expires }))
}

/// Removes the stack's lock whoever holds it.
async fn force_unlock(ddb: &Client, stack: &str) -> Result<(), ProviderError> {
    ensure_table(ddb).await?;
    call!(
        format!("remove the lock of `{stack}`"),
        ddb.delete_item().table_name(TABLE).key("stack", AttributeValue::S(stack.into())).send()
    );
    Ok(())
}
