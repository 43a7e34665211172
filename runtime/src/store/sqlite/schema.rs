//! The file's tables: the schema every open applies, the columns added since the first
//! release (added to older files at open), and how a row reads back (messages, conversations).

use std::path::Path;

use rusqlite::Row;

use crate::group_commit::Cached;
use crate::model::{now_ms, shown_status, Conversation, Message, SET_ASIDE};
use crate::store::status_of;

pub(super) const SCHEMA: &str = "
-- Deleted rows are overwritten with zeros, in the file and in the log: a deleted account's
-- email and messages are not left in free pages (see `delete_user`).
PRAGMA secure_delete = ON;
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at INTEGER NOT NULL, title TEXT);
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
/// `last_delivery` (1 = claimed on the queue's last delivery); `stopped` (1 = answered by the
/// user's stop), `stop_requested` (1 = the worker is to stop).
const ADDED_COLUMNS: [(&str, &str); 5] = [
    ("purge_at", "ALTER TABLE messages ADD COLUMN purge_at INTEGER NOT NULL DEFAULT 0"),
    ("dead_lettered", "ALTER TABLE messages ADD COLUMN dead_lettered INTEGER NOT NULL DEFAULT 0"),
    ("last_delivery", "ALTER TABLE messages ADD COLUMN last_delivery INTEGER NOT NULL DEFAULT 0"),
    ("stopped", "ALTER TABLE messages ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0"),
    ("stop_requested", "ALTER TABLE messages ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0"),
];

pub(super) fn migrate(path: &Path) -> anyhow::Result<()> {
    let c = rusqlite::Connection::open(path)?;
    c.execute_batch(SCHEMA)?;
    for (column, ddl) in ADDED_COLUMNS {
        let n: i64 =
            c.row("SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = ?1", [column], |r| r.get(0))?;
        if n == 0 {
            c.execute_batch(ddl)?;
        }
    }
    // Conversations' titles, since their first release.
    let n: i64 =
        c.row("SELECT COUNT(*) FROM pragma_table_info('conversations') WHERE name = 'title'", [], |r| r.get(0))?;
    if n == 0 {
        c.execute_batch("ALTER TABLE conversations ADD COLUMN title TEXT")?;
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS messages_purge ON messages(purge_at) WHERE purge_at > 0;
         CREATE INDEX IF NOT EXISTS messages_user_open ON messages(user_id) WHERE status IN ('queued', 'processing');",
    )?;
    Ok(())
}

/// The columns [`message_row`] reads, in its order.
pub(super) const MESSAGE_COLUMNS: &str =
    "id, conversation_id, user_id, content, status, answer, error, created_at, updated_at, \
                               purge_at, lease_until, last_delivery, stopped, stop_requested";
/// The columns a new message is written with (the rest take their defaults).
pub(super) const INSERT_COLUMNS: &str =
    "id, conversation_id, user_id, content, status, answer, error, created_at, updated_at, purge_at";

pub(super) fn message_row(r: &Row) -> rusqlite::Result<Message> {
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
        stopped: r.get(12)?,
        stop_requested: r.get(13)?,
        error: if status == stored { r.get(6)? } else { Some(SET_ASIDE.to_string()) },
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        purge_at: (purge_at > 0).then_some(purge_at),
        idem_scope: None,
    })
}

/// The columns [`conversation_row`] reads, in its order.
pub(super) const CONVERSATION_COLUMNS: &str = "id, user_id, created_at, title";

pub(super) fn conversation_row(r: &Row) -> rusqlite::Result<Conversation> {
    Ok(Conversation { id: r.get(0)?, user_id: r.get(1)?, created_at: r.get(2)?, title: r.get(3)? })
}
