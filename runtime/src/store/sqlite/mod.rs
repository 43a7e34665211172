//! The embedded store on SQLite (the `serve` command and the local target). The worker's
//! writes (claim, lease, answer, failure, release, spend) go ahead of the API's in the writer's
//! next group (`Db::call_first`), so a flood of posts cannot starve the backlog's drain.
//!
//! This file holds the store itself; each part of [`Store`] is implemented in the file of its
//! concern:
//! - `schema`: the tables, the columns added since (migrated at open), rows read back.
//! - `accounts` ([`AccountStore`]): users, profiles, tokens, the account's deletion.
//! - `messages` ([`MessageStore`]): conversations, messages, idempotency keys, the outbox, the
//!   purge.
//! - `limits` ([`LimitStore`]): what a post is checked against: its context, the daily spend,
//!   open messages.
//! - `lease` ([`LeaseStore`]): the worker's writes, each conditional: the claim, then the
//!   lease holder's extension, answer, failure and release.
//!
//! [`Store`]: crate::store::Store
//! [`AccountStore`]: crate::store::AccountStore
//! [`MessageStore`]: crate::store::MessageStore
//! [`LimitStore`]: crate::store::LimitStore
//! [`LeaseStore`]: crate::store::LeaseStore

mod accounts;
mod lease;
mod limits;
mod messages;
mod schema;

use std::path::Path;

use rusqlite::params;

use self::schema::{migrate, SCHEMA};
use crate::group_commit::{Cached, Db, Durability};
use crate::model::QueueBody;
use crate::queue::sqlite::{QueueLink, SCHEMA as QUEUE_SCHEMA};

pub struct SqliteStore {
    db: Db,
    /// The queue in this same file, when there is one (`with_queue`): a recorded message is
    /// then sent in its own transaction, with no outbox row and no send after.
    queue: Option<QueueLink>,
}

impl SqliteStore {
    /// Opens the store's file; it also holds the queue's table (`queue::sqlite::SCHEMA`), for
    /// a queue on [`SqliteStore::db`].
    pub fn open(path: &Path, durability: Durability) -> anyhow::Result<SqliteStore> {
        migrate(path)?;
        Ok(SqliteStore { db: Db::open(path, &format!("{SCHEMA}{QUEUE_SCHEMA}"), durability)?, queue: None })
    }

    /// The database, for a queue in the same file.
    pub fn db(&self) -> Db {
        self.db.clone()
    }

    /// Writes each recorded (or retried) message's queue entry in the same transaction as the
    /// message, in place of an outbox row: one write per accepted message instead of three
    /// (message and outbox row; the queue's send; the outbox row's removal), and no window in
    /// which a message is recorded but not queued. `queue` must be on this store's [`Db`].
    pub fn with_queue(self, queue: QueueLink) -> SqliteStore {
        SqliteStore { queue: Some(queue), ..self }
    }

    /// The message's queue entry, or its outbox row when there is no queue in this file.
    fn send_or_outbox(&self) -> impl Fn(&rusqlite::Connection, &str, i64) -> rusqlite::Result<usize> + Send + 'static {
        let queue = self.queue.as_ref().map(|q| q.name.clone());
        move |c, id, now| match &queue {
            Some(name) => c.exec(QueueLink::SEND, params![name, QueueBody::encode(id), now]),
            None => c.exec("INSERT OR REPLACE INTO outbox (message_id, created_at) VALUES (?1, ?2)", params![id, now]),
        }
    }

    /// Wakes the queue's receivers once a message sent by [`Self::send_or_outbox`] is committed.
    fn sent(&self) {
        if let Some(q) = &self.queue {
            q.notify.notify_waiters();
        }
    }
}
