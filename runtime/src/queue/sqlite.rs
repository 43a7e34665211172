//! An embedded queue on SQLite with the semantics of an SQS queue with a redrive policy:
//! a received message is hidden for its visibility timeout and counted; once a message has
//! been received `max_receives` times, the next receive moves it to the dead-letter queue.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::params;
use tokio::sync::Notify;

use super::{Queue, Received};
use crate::group_commit::{Cached, Db, Durability};
use crate::model::now_ms;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body TEXT NOT NULL,
    visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT);
CREATE INDEX IF NOT EXISTS queue_visible ON queue_messages(queue, visible_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS queue_receipt ON queue_messages(receipt);
";

/// Where messages go after too many receives.
#[derive(Debug, Clone)]
pub struct RedrivePolicy {
    pub dead_letter_queue: String,
    pub max_receives: u32,
}

/// A queue that a store in the same database file writes to directly: the row to insert
/// ([`QueueLink::SEND`]) and the receivers to wake once it is committed.
#[derive(Clone)]
pub struct QueueLink {
    pub name: String,
    pub notify: Arc<Notify>,
}

impl QueueLink {
    /// Inserts one message for `name` (?1), body ?2, visible at ?3 (ms).
    pub const SEND: &'static str = "INSERT INTO queue_messages (queue, body, visible_at) VALUES (?1, ?2, ?3)";
}

/// Moves the messages of a queue file written before the queue lived in the store's file
/// (`old`) into `new` (a database with [`SCHEMA`]), then removes `old`. A crash between the
/// two leaves `old` to be moved again at the next start: its messages are then delivered
/// twice, which the store's conditional claim makes harmless; none is lost.
pub fn move_queue_file(old: &Path, new: &Path) -> anyhow::Result<u64> {
    if !old.exists() {
        return Ok(0);
    }
    let c = rusqlite::Connection::open(new)?;
    c.execute_batch(SCHEMA)?;
    c.execute("ATTACH DATABASE ?1 AS old", [old.to_string_lossy()])?;
    let old_has_table: i64 =
        c.query_row("SELECT COUNT(*) FROM old.sqlite_master WHERE name = 'queue_messages'", [], |r| r.get(0))?;
    let moved = if old_has_table == 1 {
        c.execute(
            "INSERT INTO main.queue_messages (queue, body, visible_at, receive_count)
             SELECT queue, body, visible_at, receive_count FROM old.queue_messages ORDER BY id",
            [],
        )? as u64
    } else {
        0
    };
    c.execute_batch("DETACH DATABASE old")?;
    drop(c);
    for suffix in ["", "-wal", "-shm"] {
        let f = std::path::PathBuf::from(format!("{}{suffix}", old.display()));
        if f.exists() {
            std::fs::remove_file(&f).with_context(|| format!("remove {}", f.display()))?;
        }
    }
    Ok(moved)
}

#[derive(Clone)]
pub struct SqliteQueue {
    db: Db,
    name: String,
    redrive: Option<RedrivePolicy>,
    /// Wakes long-polling receivers of this process when a message is sent or handed back.
    notify: Arc<Notify>,
}

impl SqliteQueue {
    pub fn open_db(path: &Path, durability: Durability) -> anyhow::Result<Db> {
        Db::open(path, SCHEMA, durability)
    }

    pub fn new(db: Db, name: &str, redrive: Option<RedrivePolicy>) -> SqliteQueue {
        SqliteQueue { db, name: name.to_string(), redrive, notify: Arc::new(Notify::new()) }
    }

    /// What a store in the same database needs to send to this queue inside its own
    /// transactions (`SqliteStore::with_queue`).
    pub fn link(&self) -> QueueLink {
        QueueLink { name: self.name.clone(), notify: self.notify.clone() }
    }

    fn try_receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<Received>>> + Send + 'static {
        let name = self.name.clone();
        let redrive = self.redrive.clone();
        let db = self.db.clone();
        let vis_ms = visibility.as_millis() as i64;
        async move {
            // The worker's: ahead of the sends (group_commit's module doc).
            db.call_first(move |c| {
                let now = now_ms();
                // The job is its own savepoint (group_commit): an error undoes it whole.
                let mut out = Vec::new();
                {
                    let mut st = c.prepare_cached(
                        "SELECT id, body, receive_count FROM queue_messages
                         WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, id LIMIT ?3",
                    )?;
                    let rows: Vec<(i64, String, u32)> = st
                        .query_map(params![name, now, (max * 2) as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<rusqlite::Result<_>>()?;
                    for (id, body, count) in rows {
                        if out.len() >= max {
                            break;
                        }
                        if let Some(p) = &redrive {
                            if count >= p.max_receives {
                                c.exec(
                                    "UPDATE queue_messages SET queue = ?2, receive_count = 0, visible_at = ?3, receipt = NULL WHERE id = ?1",
                                    params![id, p.dead_letter_queue, now],
                                )?;
                                continue;
                            }
                        }
                        let receipt = uuid::Uuid::new_v4().to_string();
                        c.exec(
                            "UPDATE queue_messages SET receive_count = receive_count + 1, visible_at = ?2, receipt = ?3 WHERE id = ?1",
                            params![id, now + vis_ms, receipt],
                        )?;
                        out.push(Received { body, receipt, receive_count: count + 1 });
                    }
                }
                Ok(out)
            })
            .await
        }
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn send(&self, body: &str) -> anyhow::Result<()> {
        let (name, body) = (self.name.clone(), body.to_string());
        self.db.call(move |c| c.exec(QueueLink::SEND, params![name, body, now_ms()])).await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> anyhow::Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let got = self.try_receive(max.max(1), visibility).await?;
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            // Woken by a send in this process, or poll again soon (other processes, timeouts).
            let nap = tokio::time::Instant::now() + Duration::from_millis(100);
            let _ = tokio::time::timeout_at(nap.min(deadline), notified).await;
        }
    }

    async fn delete(&self, receipt: &str) -> anyhow::Result<()> {
        let r = receipt.to_string();
        self.db.call_first(move |c| c.exec("DELETE FROM queue_messages WHERE receipt = ?1", [r])).await?;
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> anyhow::Result<()> {
        let r = receipt.to_string();
        let at = now_ms() + timeout.as_millis() as i64;
        self.db
            .call_first(move |c| c.exec("UPDATE queue_messages SET visible_at = ?2 WHERE receipt = ?1", params![r, at]))
            .await?;
        if timeout.is_zero() {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn approximate_len(&self) -> anyhow::Result<u64> {
        let name = self.name.clone();
        Ok(self
            .db
            .read(move |c| {
                c.row("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1", [name], |r| r.get::<_, i64>(0))
            })
            .await? as u64)
    }
}
