//! The embedded store on SQLite (the `serve` command and the local target). The worker's
//! writes (claim, lease, answer, failure, release, spend) go ahead of the API's in the writer's
//! next group (`Db::call_first`), so a flood of posts cannot starve the backlog's drain.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};

use super::{status_of, Charge, Claim, IdempotencyKey, PostContext, Recorded, Result, SpendReads, Store, StoreError};
use crate::group_commit::{Cached, Db, Durability};
use crate::model::{
    now_ms, shown_status, Conversation, Message, Profile, QueueBody, Status, TokenInfo, User, SET_ASIDE,
};
use crate::queue::sqlite::{QueueLink, SCHEMA as QUEUE_SCHEMA};

/// Adds `delta` to the user's count of `day` (while the account exists) and to everyone's.
fn add_spend_rows(c: &rusqlite::Connection, day: i64, user_id: &str, delta: i64) -> rusqlite::Result<()> {
    for who in [user_id, ""] {
        c.exec(
            "INSERT INTO spend (day, user_id, tokens) SELECT ?1, ?2, ?3
             WHERE ?2 = '' OR EXISTS (SELECT 1 FROM users WHERE id = ?2)
             ON CONFLICT(day, user_id) DO UPDATE SET tokens = tokens + excluded.tokens",
            params![day, who, delta],
        )?;
    }
    Ok(())
}

const SCHEMA: &str = "
-- Deleted rows are overwritten with zeros, in the file and in the log: a deleted account's
-- email and messages are not left in free pages (see `delete_user`).
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations(user_id, created_at);
CREATE INDEX IF NOT EXISTS conversations_user_id ON conversations(user_id, id);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, user_id TEXT NOT NULL,
    content TEXT NOT NULL, status TEXT NOT NULL, answer TEXT, error TEXT,
    claim_token TEXT, lease_until INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, created_at);
CREATE INDEX IF NOT EXISTS messages_conversation_id ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS outbox (message_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY, display_name TEXT, keep_history INTEGER NOT NULL, consented_at INTEGER);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_id);
-- A token's kind and creation time, beside `tokens` so that files written before need no change.
CREATE TABLE IF NOT EXISTS token_meta (
    token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS messages_user ON messages(user_id);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, message_id TEXT NOT NULL);
-- Model tokens per day (UTC days since the epoch) and user; user_id '' is everyone's total.
CREATE TABLE IF NOT EXISTS spend (
    day INTEGER NOT NULL, user_id TEXT NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (day, user_id));
";

/// Columns added to `messages` after its first release, added to older files at open:
/// `purge_at` (ms; 0 = kept) and `dead_lettered` (1 = a redrive may claim it).
/// `last_delivery` (1 = claimed on the queue's last delivery).
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("purge_at", "ALTER TABLE messages ADD COLUMN purge_at INTEGER NOT NULL DEFAULT 0"),
    ("dead_lettered", "ALTER TABLE messages ADD COLUMN dead_lettered INTEGER NOT NULL DEFAULT 0"),
    ("last_delivery", "ALTER TABLE messages ADD COLUMN last_delivery INTEGER NOT NULL DEFAULT 0"),
];

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

fn migrate(path: &Path) -> anyhow::Result<()> {
    let c = rusqlite::Connection::open(path)?;
    c.execute_batch(SCHEMA)?;
    for (column, ddl) in ADDED_COLUMNS {
        let n: i64 =
            c.row("SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = ?1", [column], |r| r.get(0))?;
        if n == 0 {
            c.execute_batch(ddl)?;
        }
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_purge ON messages(purge_at) WHERE purge_at > 0;
         CREATE INDEX IF NOT EXISTS messages_user_open ON messages(user_id) WHERE status IN ('queued', 'processing');",
    )?;
    Ok(())
}

/// The columns [`message_row`] reads, in its order.
const MESSAGE_COLUMNS: &str = "id, conversation_id, user_id, content, status, answer, error, created_at, updated_at, \
                               purge_at, lease_until, last_delivery";
/// The columns a new message is written with (the rest take their defaults).
const INSERT_COLUMNS: &str =
    "id, conversation_id, user_id, content, status, answer, error, created_at, updated_at, purge_at";

fn message_row(r: &Row) -> rusqlite::Result<Message> {
    let stored = status_of(&r.get::<_, String>(4)?);
    let purge_at: i64 = r.get(9)?;
    let status = shown_status(stored, r.get(11)?, r.get(10)?, now_ms());
    Ok(Message {
        id: r.get(0)?,
        conversation_id: r.get(1)?,
        user_id: r.get(2)?,
        content: r.get(3)?,
        status,
        answer: r.get(5)?,
        error: if status == stored { r.get(6)? } else { Some(SET_ASIDE.to_string()) },
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        purge_at: (purge_at > 0).then_some(purge_at),
        idem_scope: None,
    })
}

/// Deletes messages by id and every row that names them (in the caller's transaction).
fn delete_messages(c: &rusqlite::Connection, ids: &[String]) -> rusqlite::Result<()> {
    for id in ids {
        c.exec("DELETE FROM idempotency WHERE message_id = ?1", [id])?;
        c.exec("DELETE FROM outbox WHERE message_id = ?1", [id])?;
        c.exec("DELETE FROM messages WHERE id = ?1", [id])?;
    }
    Ok(())
}

fn user_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User { id: r.get(0)?, email: r.get(1)?, password_hash: r.get(2)?, deleting: false })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        let u = user.clone();
        let r = self
            .db
            .call(move |c| {
                match c.exec(
                    "INSERT INTO users (id, email, password_hash) VALUES (?1, ?2, ?3)",
                    params![u.id, u.email, u.password_hash],
                ) {
                    Ok(_) => Ok(true),
                    Err(e) if is_unique_violation(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if r {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.row("SELECT id, email, password_hash FROM users WHERE email = ?1", [email], user_row).optional()
            })
            .await?)
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let id = id.to_string();
        Ok(self
            .db
            .read(move |c| c.row("SELECT id, email, password_hash FROM users WHERE id = ?1", [id], user_row).optional())
            .await?)
    }

    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>> {
        let id = user_id.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.row("SELECT display_name, keep_history, consented_at FROM profiles WHERE user_id = ?1", [id], |r| {
                    Ok(Profile { display_name: r.get(0)?, keep_history: r.get(1)?, consented_at: r.get(2)? })
                })
                .optional()
            })
            .await?)
    }

    async fn put_profile(&self, user_id: &str, p: &Profile) -> Result<()> {
        let (id, p) = (user_id.to_string(), p.clone());
        // Only while the account exists: a `PUT /v1/me` that passed its checks just before the
        // account's deletion writes nothing after it.
        let written = self
            .db
            .call(move |c| {
                c.exec(
                    "INSERT INTO profiles (user_id, display_name, keep_history, consented_at)
                     SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1)
                     ON CONFLICT(user_id) DO UPDATE SET display_name = ?2, keep_history = ?3, consented_at = ?4",
                    params![id, p.display_name, p.keep_history, p.consented_at],
                )
            })
            .await?;
        if written == 0 {
            return Err(StoreError::Gone);
        }
        Ok(())
    }

    async fn delete_user(&self, user: &User) -> Result<()> {
        // One transaction: a request in flight finds the account whole or gone, and every
        // write for it checks that it still exists.
        let id = user.id.clone();
        self.db
            .call(move |c| {
                let tx = c.savepoint()?;
                let ids: Vec<String> = tx
                    .prepare("SELECT id FROM messages WHERE user_id = ?1")?
                    .query_map([&id], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                delete_messages(&tx, &ids)?;
                tx.exec("DELETE FROM conversations WHERE user_id = ?1", [&id])?;
                tx.exec(
                    "DELETE FROM token_meta WHERE token_hash IN (SELECT token_hash FROM tokens WHERE user_id = ?1)",
                    [&id],
                )?;
                tx.exec("DELETE FROM tokens WHERE user_id = ?1", [&id])?;
                tx.exec("DELETE FROM profiles WHERE user_id = ?1", [&id])?;
                tx.exec("DELETE FROM spend WHERE user_id = ?1", [&id])?;
                tx.exec("DELETE FROM users WHERE id = ?1", [&id])?;
                tx.commit()
            })
            .await?;
        // secure_delete zeroed the rows in the pages written; the log still holds the pages as
        // they were until a checkpoint copies the new ones back and truncates it.
        self.db
            .alone(|c| {
                for _ in 0..200 {
                    let busy: i64 = c.row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                    if busy == 0 {
                        return Ok(true);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(false)
            })
            .await
            .and_then(|done| if done { Ok(()) } else { Err(anyhow::anyhow!("the log stayed busy")) })
            .map_err(|e| StoreError::Backend(e.context("checkpoint after deleting an account")))?;
        Ok(())
    }

    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()> {
        let (id, h) = (user.id.clone(), password_hash.to_string());
        self.db.call(move |c| c.exec("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![id, h])).await?;
        Ok(())
    }

    async fn create_token(&self, user_id: &str, token: &TokenInfo) -> Result<()> {
        let (t, u) = (token.clone(), user_id.to_string());
        self.db
            .call(move |c| {
                let tx = c.savepoint()?;
                let n = tx.exec(
                    "INSERT INTO tokens (token_hash, user_id, expires_at)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2)",
                    params![t.hash, u, t.expires_at],
                )?;
                if n == 0 {
                    return Ok(false);
                }
                tx.exec(
                    "INSERT INTO token_meta (token_hash, kind, created_at) VALUES (?1, ?2, ?3)",
                    params![t.hash, t.kind, t.created_at],
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await?
            .then_some(())
            .ok_or(StoreError::Gone)
    }

    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>> {
        let u = user_id.to_string();
        Ok(self
            .db
            .read(move |c| {
                let mut st = c.prepare(
                    "SELECT t.token_hash, COALESCE(m.kind, 'unknown'), COALESCE(m.created_at, 0), t.expires_at
                     FROM tokens t LEFT JOIN token_meta m ON m.token_hash = t.token_hash
                     WHERE t.user_id = ?1 AND t.expires_at > ?2 ORDER BY 3 DESC, 1 LIMIT ?3",
                )?;
                let rows = st.query_map(params![u, now_ms, super::TOKENS_READ as i64], |r| {
                    Ok(TokenInfo { hash: r.get(0)?, kind: r.get(1)?, created_at: r.get(2)?, expires_at: r.get(3)? })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?)
    }

    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>> {
        let t = token_hash.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.row(
                    "SELECT t.user_id FROM tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = ?1 AND t.expires_at > ?2",
                    params![t, now_ms],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?)
    }

    async fn delete_token(&self, token_hash: &str) -> Result<()> {
        let t = token_hash.to_string();
        self.db
            .call(move |c| {
                let tx = c.savepoint()?;
                tx.exec("DELETE FROM tokens WHERE token_hash = ?1", [&t])?;
                tx.exec("DELETE FROM token_meta WHERE token_hash = ?1", [&t])?;
                tx.commit()
            })
            .await?;
        Ok(())
    }

    async fn create_conversation(&self, conv: &Conversation) -> Result<()> {
        let conv = conv.clone();
        self.db
            .call(move |c| {
                c.exec(
                    "INSERT INTO conversations (id, user_id, created_at)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2)",
                    params![conv.id, conv.user_id, conv.created_at],
                )
            })
            .await?
            .eq(&1)
            .then_some(())
            .ok_or(StoreError::Gone)
    }

    async fn list_conversations(&self, user_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        let (u, before) = (user_id.to_string(), before.map(str::to_string));
        Ok(self
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, user_id, created_at FROM conversations WHERE user_id = ?1 AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3",
                )?;
                let rows = st.query_map(params![u, before, limit as i64], |r| {
                    Ok(Conversation { id: r.get(0)?, user_id: r.get(1)?, created_at: r.get(2)? })
                })?;
                rows.collect()
            })
            .await?)
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let id = id.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.row("SELECT id, user_id, created_at FROM conversations WHERE id = ?1", [id], |r| {
                    Ok(Conversation { id: r.get(0)?, user_id: r.get(1)?, created_at: r.get(2)? })
                })
                .optional()
            })
            .await?)
    }

    async fn list_messages(&self, conversation_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Message>> {
        let (id, before) = (conversation_id.to_string(), before.map(str::to_string));
        let mut out: Vec<Message> = self
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3"
                ))?;
                let rows = st.query_map(params![id, before, limit as i64], message_row)?;
                rows.collect()
            })
            .await?;
        out.reverse();
        Ok(out)
    }

    async fn get_message(&self, id: &str) -> Result<Option<Message>> {
        let id = id.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"))?
                    .query_row([id], message_row)
                    .optional()
            })
            .await?)
    }

    async fn history(&self, conversation_id: &str, before_id: &str, limit: usize) -> Result<Vec<Message>> {
        let (c_id, b_id) = (conversation_id.to_string(), before_id.to_string());
        let mut out: Vec<Message> = self
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND id < ?2 AND status = 'answered' AND purge_at = 0
                     ORDER BY id DESC LIMIT ?3"
                ))?;
                let rows = st.query_map(params![c_id, b_id, limit as i64], message_row)?;
                rows.collect()
            })
            .await?;
        out.reverse();
        Ok(out)
    }

    async fn idempotency_key(&self, scope: &str) -> Result<Option<(String, String)>> {
        let scope = scope.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.row("SELECT message_id, fingerprint FROM idempotency WHERE scope = ?1", [scope], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .await?)
    }

    async fn record_message(&self, m: &Message, key: Option<&IdempotencyKey>) -> Result<Recorded> {
        let m = m.clone();
        let key = key.cloned();
        let send = self.send_or_outbox();
        let recorded = self
            .db
            .call(move |c| {
                // The job is its own savepoint (group_commit); nothing is written before the
                // last early return, so no savepoint of its own is needed.
                if let Some(k) = &key {
                    let prior: Option<(String, String)> = c
                        .row("SELECT message_id, fingerprint FROM idempotency WHERE scope = ?1", [&k.scope], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()?;
                    if let Some((message_id, fingerprint)) = prior {
                        return Ok(Some(Recorded::Existing { message_id, fingerprint }));
                    }
                }
                // The conversation is still there and the user's: an account deleted since the
                // request was authenticated gets nothing written.
                let n = c.exec(
                    &format!(
                        "INSERT INTO messages ({INSERT_COLUMNS})
                         SELECT ?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6, ?6, ?7
                         WHERE EXISTS (SELECT 1 FROM conversations WHERE id = ?2 AND user_id = ?3)"
                    ),
                    params![
                        m.id,
                        m.conversation_id,
                        m.user_id,
                        m.content,
                        m.status.as_str(),
                        m.created_at,
                        m.purge_at.unwrap_or(0)
                    ],
                )?;
                if n == 0 {
                    return Ok(None);
                }
                if let Some(k) = &key {
                    c.exec(
                        "INSERT INTO idempotency (scope, fingerprint, message_id) VALUES (?1, ?2, ?3)",
                        params![k.scope, k.fingerprint, m.id],
                    )?;
                }
                send(c, &m.id, m.created_at)?;
                Ok(Some(Recorded::New))
            })
            .await?
            .ok_or(StoreError::Gone)?;
        if recorded == Recorded::New {
            self.sent();
        }
        Ok(recorded)
    }

    async fn retry_message(&self, message_id: &str, now_ms: i64) -> Result<bool> {
        let id = message_id.to_string();
        let send = self.send_or_outbox();
        let retried = self
            .db
            .call(move |c| {
                let n = c.exec(
                    "UPDATE messages SET status = 'queued', error = NULL, claim_token = NULL, lease_until = 0,
                     dead_lettered = 0, last_delivery = 0, updated_at = ?2
                     WHERE id = ?1 AND (status = 'failed'
                                        OR (status = 'processing' AND last_delivery = 1 AND lease_until < ?2))",
                    params![id, now_ms],
                )?;
                if n == 1 {
                    send(c, &id, now_ms)?;
                }
                Ok(n == 1)
            })
            .await?;
        if retried {
            self.sent();
        }
        Ok(retried)
    }

    fn enqueues_on_record(&self) -> bool {
        self.queue.is_some()
    }

    async fn delete_message(&self, m: &Message) -> Result<()> {
        let ids = vec![m.id.clone()];
        self.db.call(move |c| delete_messages(c, &ids)).await?;
        Ok(())
    }

    async fn purge_due(&self, now_ms: i64, limit: usize) -> Result<u64> {
        Ok(self
            .db
            .call(move |c| {
                let ids: Vec<String> = c
                    .prepare_cached("SELECT id FROM messages WHERE purge_at > 0 AND purge_at <= ?1 LIMIT ?2")?
                    .query_map(params![now_ms, limit as i64], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                delete_messages(c, &ids)?;
                Ok(ids.len() as u64)
            })
            .await?)
    }

    async fn post_context(&self, user_id: &str, conversation_id: &str, spend: SpendReads) -> Result<PostContext> {
        let (u, conv) = (user_id.to_string(), conversation_id.to_string());
        Ok(self
            .db
            .read(move |c| {
                let conversation = c
                    .prepare_cached("SELECT id, user_id, created_at FROM conversations WHERE id = ?1")?
                    .query_row([&conv], |r| {
                        Ok(Conversation { id: r.get(0)?, user_id: r.get(1)?, created_at: r.get(2)? })
                    })
                    .optional()?;
                let profile = c
                    .prepare_cached("SELECT display_name, keep_history, consented_at FROM profiles WHERE user_id = ?1")?
                    .query_row([&u], |r| {
                        Ok(Profile { display_name: r.get(0)?, keep_history: r.get(1)?, consented_at: r.get(2)? })
                    })
                    .optional()?;
                let mut spent = c.prepare_cached("SELECT tokens FROM spend WHERE day = ?1 AND user_id = ?2")?;
                let mut read = |wanted: bool, user: &str| -> rusqlite::Result<Option<i64>> {
                    if !wanted {
                        return Ok(None);
                    }
                    spent.query_row(params![spend.day, user], |r| r.get(0)).optional()
                };
                let user_tokens = read(spend.user, &u)?;
                let all_tokens = read(spend.all, "")?;
                Ok(PostContext {
                    conversation,
                    profile,
                    user_tokens_today: user_tokens.unwrap_or(0).max(0) as u64,
                    all_tokens_today: all_tokens.unwrap_or(0).max(0) as u64,
                })
            })
            .await?)
    }

    async fn charge_spend(&self, user_id: &str, day: i64, tokens: u64, user_cap: u64, all_cap: u64) -> Result<Charge> {
        let u = user_id.to_string();
        Ok(self
            .db
            .call_first(move |c| {
                let read = |who: &str| -> rusqlite::Result<Option<i64>> {
                    c.prepare_cached("SELECT tokens FROM spend WHERE day = ?1 AND user_id = ?2")?
                        .query_row(params![day, who], |r| r.get(0))
                        .optional()
                };
                let (user, all) = (read(&u)?, read("")?);
                let over = |count: Option<i64>, cap: u64| cap > 0 && count.unwrap_or(0).max(0) as u64 + tokens > cap;
                if over(user, user_cap) {
                    return Ok(Charge::OverUser);
                }
                if over(all, all_cap) {
                    return Ok(Charge::OverAll);
                }
                if all.is_none() {
                    // The day's first charge: the counts of days gone are dropped (a budget reads today's).
                    c.exec("DELETE FROM spend WHERE day < ?1", [day - 2])?;
                }
                add_spend_rows(c, day, &u, tokens as i64)?;
                Ok(Charge::Charged { all_today: all.unwrap_or(0).max(0) as u64 + tokens })
            })
            .await?)
    }

    async fn add_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()> {
        let u = user_id.to_string();
        self.db.call_first(move |c| add_spend_rows(c, day, &u, delta)).await?;
        Ok(())
    }

    async fn take_slot(&self, user_id: &str, cap: u32, _now_ms: i64) -> Result<bool> {
        // The user's open messages, counted (one writer: a post between the count and its own
        // write is rare, and would let one more in).
        let u = user_id.to_string();
        let open: i64 = self
            .db
            .read(move |c| {
                c.row(
                    "SELECT COUNT(*) FROM messages WHERE user_id = ?1 AND status IN ('queued', 'processing')",
                    [&u],
                    |r| r.get(0),
                )
            })
            .await?;
        Ok(open < i64::from(cap))
    }

    async fn free_slot(&self, _user_id: &str, _now_ms: i64) -> Result<()> {
        Ok(())
    }

    async fn take_rate(&self, _key: &str, _limit: u32, _window_ms: i64, _now_ms: i64) -> Result<Option<i64>> {
        // One process: the API's in-process limits hold.
        Ok(None)
    }

    async fn outbox_pending(&self, created_before_ms: i64, limit: usize) -> Result<Vec<String>> {
        Ok(self
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT message_id FROM outbox WHERE created_at <= ?1 ORDER BY created_at LIMIT ?2",
                )?;
                let rows = st.query_map(params![created_before_ms, limit as i64], |r| r.get(0))?;
                rows.collect()
            })
            .await?)
    }

    async fn outbox_remove(&self, message_id: &str) -> Result<()> {
        let id = message_id.to_string();
        self.db.call(move |c| c.exec("DELETE FROM outbox WHERE message_id = ?1", [id])).await?;
        Ok(())
    }

    async fn outbox_len(&self) -> Result<u64> {
        Ok(self.db.read(|c| c.row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))).await? as u64)
    }

    async fn claim(
        &self,
        message_id: &str,
        claim_token: &str,
        now_ms: i64,
        lease_until_ms: i64,
        last_delivery: bool,
    ) -> Result<Claim> {
        let (id, tok) = (message_id.to_string(), claim_token.to_string());
        Ok(self
            .db
            .call_first(move |c| {
                let n = c.exec(
                    "UPDATE messages SET status = 'processing', claim_token = ?2, lease_until = ?3, updated_at = ?4,
                     dead_lettered = 0, last_delivery = ?5
                     WHERE id = ?1 AND (status = 'queued' OR (status = 'failed' AND dead_lettered = 1)
                                        OR (status = 'processing' AND lease_until < ?4))",
                    params![id, tok, lease_until_ms, now_ms, last_delivery],
                )?;
                let row: Option<(Message, i64)> = c
                    .row(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"), [&id], |r| {
                        Ok((message_row(r)?, r.get(10)?))
                    })
                    .optional()?;
                Ok(match row {
                    None => Claim::Missing,
                    Some((m, _)) if n == 1 => Claim::Claimed(m),
                    Some((m, _)) if m.status == Status::Answered => Claim::Answered,
                    Some((m, _)) if m.status == Status::Failed => Claim::Failed,
                    Some((_, lease)) => Claim::Busy { lease_until_ms: lease },
                })
            })
            .await?)
    }

    async fn extend_lease(&self, message_id: &str, claim_token: &str, lease_until_ms: i64) -> Result<bool> {
        let (id, tok) = (message_id.to_string(), claim_token.to_string());
        Ok(self
            .db
            .call_first(move |c| {
                c.exec(
                    "UPDATE messages SET lease_until = ?3 WHERE id = ?1 AND status = 'processing' AND claim_token = ?2",
                    params![id, tok, lease_until_ms],
                )
            })
            .await?
            == 1)
    }

    async fn complete(&self, message_id: &str, claim_token: &str, answer: &str, now_ms: i64) -> Result<bool> {
        let (id, tok, a) = (message_id.to_string(), claim_token.to_string(), answer.to_string());
        Ok(self
            .db
            .call_first(move |c| {
                c.exec(
                    "UPDATE messages SET status = 'answered', answer = ?3, error = NULL, updated_at = ?4
                     WHERE id = ?1 AND status = 'processing' AND claim_token = ?2",
                    params![id, tok, a, now_ms],
                )
            })
            .await?
            == 1)
    }

    async fn fail(
        &self,
        message_id: &str,
        claim_token: &str,
        reason: &str,
        now_ms: i64,
        dead_lettered: bool,
    ) -> Result<bool> {
        let (id, tok, e) = (message_id.to_string(), claim_token.to_string(), reason.to_string());
        Ok(self
            .db
            .call_first(move |c| {
                c.exec(
                    "UPDATE messages SET status = 'failed', error = ?3, claim_token = NULL, updated_at = ?4,
                     dead_lettered = ?5 WHERE id = ?1 AND status = 'processing' AND claim_token = ?2",
                    params![id, tok, e, now_ms, dead_lettered],
                )
            })
            .await?
            == 1)
    }

    async fn release(&self, message_id: &str, claim_token: &str, now_ms: i64) -> Result<bool> {
        let (id, tok) = (message_id.to_string(), claim_token.to_string());
        Ok(self
            .db
            .call_first(move |c| {
                c.exec(
                    "UPDATE messages SET status = 'queued', claim_token = NULL, lease_until = 0, updated_at = ?3
                     WHERE id = ?1 AND status = 'processing' AND claim_token = ?2",
                    params![id, tok, now_ms],
                )
            })
            .await?
            == 1)
    }
}
