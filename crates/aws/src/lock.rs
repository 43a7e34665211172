//! An expiring lock per stack, so that two runs (a laptop and CI) never apply one stack at once.
//!
//! One item per stack in the DynamoDB table `aira-locks` (created on first use, on demand
//! billing, shared by every stack of the account and region): `{stack, holder, acquired_at,
//! expires_at}`. Taking it is a conditional put: the item is absent, or expired. The holder
//! renews it while it runs (a conditional update of `expires_at`: still its holder, not yet
//! expired); a holder that died stops renewing, and its lock expires.
//!
//! A holder that was killed on the machine of the next run is not waited for: the record also
//! names the holder's process (`boot`: this boot of the kernel and its process namespace; `pid`
//! and its start time), and a run that finds the record of a process of its own boot and
//! namespace that no longer runs takes the lock at once (a conditional put naming that very
//! record, so two runs cannot both take it). A holder on another machine is waited out as before.
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

/// This process, as another process on this machine can tell whether it still runs: the boot
/// of the kernel and the process namespace (a process id means something only within both), the
/// process id, and its start time (clock ticks after boot, field 22 of `/proc/PID/stat`: a
/// reused process id has another). `None` off Linux or where `/proc` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub boot: String,
    pub pid: u32,
    pub started: u64,
}

impl Process {
    pub fn this() -> Option<Process> {
        Some(Process { boot: boot()?, pid: std::process::id(), started: started(std::process::id())? })
    }

    /// Whether this process, recorded on this machine in this boot and namespace, is gone: its
    /// id names no process, or one started at another time.
    fn gone_from(&self, here: &Process) -> bool {
        self.boot == here.boot && started(self.pid) != Some(self.started)
    }
}

fn boot() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", id.trim(), ns.display()))
}

fn started(pid: u32) -> Option<u64> {
    start_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/PID/stat` line.
fn start_in(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses: count
    // after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
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
    /// The holder whose lock this run took because its process on this machine is gone.
    pub took_from: Option<String>,
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

/// The record a conditional put replaces: absent or expired, or (taking the lock of a process
/// that is gone) exactly the record that was read.
enum Replacing<'a> {
    Free,
    Gone(&'a Record),
}

/// Writes the lock's record if it replaces what `replacing` says; `Ok(false)` when the condition
/// failed (another run holds the lock, or took it first).
async fn put(
    ddb: &Client,
    stack: &str,
    holder: &str,
    ttl: Duration,
    replacing: Replacing<'_>,
) -> Result<bool, LockError> {
    let t = now();
    let mut req = ddb
        .put_item()
        .table_name(TABLE)
        .item("stack", AttributeValue::S(stack.into()))
        .item("holder", AttributeValue::S(holder.into()))
        .item("acquired_at", AttributeValue::N(t.to_string()))
        .item("expires_at", AttributeValue::N((t + ttl_secs(ttl)).to_string()));
    if let Some(p) = Process::this() {
        req = req
            .item("boot", AttributeValue::S(p.boot))
            .item("pid", AttributeValue::N(p.pid.to_string()))
            .item("pid_started", AttributeValue::N(p.started.to_string()));
    }
    // Only the values the condition uses: DynamoDB refuses a request with an unused expression
    // attribute value (ValidationException), which moto accepts.
    req = match replacing {
        Replacing::Free => req
            .condition_expression("attribute_not_exists(stack) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(t.to_string())),
        Replacing::Gone(old) => req
            .condition_expression("holder = :old AND acquired_at = :since")
            .expression_attribute_values(":old", AttributeValue::S(old.holder.clone()))
            .expression_attribute_values(":since", AttributeValue::N(old.acquired_at.to_string())),
    };
    match req.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
        Err(e) => Err(LockError::Aws(crate::sdk::error(format!("take the lock of `{stack}` in {TABLE}"), e))),
    }
}

/// Takes the lock if it is free, or held by a process of this machine that is gone (then the
/// record it replaced is returned); who holds it otherwise.
async fn take(ddb: &Client, stack: &str, holder: &str, ttl: Duration) -> Result<Option<Record>, LockError> {
    if put(ddb, stack, holder, ttl, Replacing::Free).await? {
        return Ok(None);
    }
    let Some(held) = read(ddb, stack).await else {
        // Released between the put and the read: one more try.
        return match put(ddb, stack, holder, ttl, Replacing::Free).await? {
            true => Ok(None),
            false => Err(LockError::Held { holder: "another run".into(), since: 0, expires: 0 }),
        };
    };
    let gone = match (&held.process, Process::this()) {
        (Some(p), Some(here)) => p.gone_from(&here),
        _ => false,
    };
    if gone && put(ddb, stack, holder, ttl, Replacing::Gone(&held)).await? {
        return Ok(Some(held));
    }
    Err(LockError::Held { holder: held.holder, since: held.acquired_at, expires: held.expires_at })
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
    let took_from = take(ddb, stack, &holder, ttl).await?.map(|r| r.holder);
    let (tx, rx) = watch::channel(None);
    let renew = {
        let (ddb, stack, holder) = (ddb.clone(), stack.to_string(), holder.clone());
        tokio::spawn(async move { renew(&ddb, &stack, &holder, ttl, taken + ttl_secs(ttl), tx).await })
    };
    Ok(Lock { ddb: ddb.clone(), stack: stack.into(), holder, renew, loss: Loss(rx), took_from })
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
                    Some(r) if r.holder != holder => {
                        format!("held by {} since {}", r.holder, aira_engine::time::rfc3339(r.acquired_at))
                    }
                    Some(r) => {
                        format!("it expired at {} before it was renewed", aira_engine::time::rfc3339(r.expires_at))
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

/// A lock's record.
struct Record {
    holder: String,
    acquired_at: u64,
    expires_at: u64,
    /// Absent in records written where `/proc` could not be read (and by earlier versions).
    process: Option<Process>,
}

/// The lock's record, read consistently.
async fn read(ddb: &Client, stack: &str) -> Option<Record> {
    let item = ddb
        .get_item()
        .table_name(TABLE)
        .key("stack", AttributeValue::S(stack.into()))
        .consistent_read(true)
        .send()
        .await
        .ok()?
        .item?;
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
    let pid = n("pid").and_then(|p| u32::try_from(p).ok());
    let process = match (s("boot"), pid, n("pid_started")) {
        (Some(boot), Some(pid), Some(started)) => Some(Process { boot, pid, started }),
        _ => None,
    };
    Some(Record {
        holder: s("holder").unwrap_or_default(),
        acquired_at: n("acquired_at").unwrap_or(0),
        expires_at: n("expires_at").unwrap_or(0),
        process,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_gone_when_its_id_names_none_or_another_start() {
        let here = Process::this().expect("/proc is readable here");
        assert!(!here.gone_from(&here), "this process runs");
        let restarted = Process { started: here.started + 1, ..here.clone() };
        assert!(restarted.gone_from(&here), "the id was reused by a process started later");
        let unused = Process { pid: 4_000_000_000, ..here.clone() };
        assert!(unused.gone_from(&here), "no process has this id");
        // Another machine (or boot, or process namespace): its processes cannot be seen from here.
        let elsewhere = Process { boot: "another-boot/pid:[1]".into(), pid: 4_000_000_000, ..here.clone() };
        assert!(!elsewhere.gone_from(&here));
    }

    #[test]
    fn the_start_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        let line = format!("4242 (a (b) c) {}", fields.join(" "));
        assert_eq!(start_in(&line), Some(22));
        assert_eq!(start_in("4242 (truncated"), None);
        // The parent's start time is earlier than (or equal to) this process's.
        let me = started(std::process::id()).unwrap();
        let parent = started(std::os::unix::process::parent_id()).unwrap();
        assert!(parent <= me, "{parent} > {me}");
    }
}
