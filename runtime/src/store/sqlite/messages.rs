//! Conversations and messages: written only while their account (and conversation) exists; a
//! message recorded with its idempotency key and its outbox row (or its queue entry) in one
//! transaction, retried, read back (pages, the history sent with a prompt), deleted with every
//! row that names it, and purged when kept without history; the outbox the relay reads.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::schema::{conversation_row, message_row, CONVERSATION_COLUMNS, INSERT_COLUMNS, MESSAGE_COLUMNS};
use super::SqliteStore;
use crate::group_commit::Cached;
use crate::model::{Conversation, Message};
use crate::store::{IdempotencyKey, MessageStore, Recorded, Requeue, Result, Stop, StoreError};

/// The conversation `id`, read in the caller's job.
pub(super) fn conversation(c: &Connection, id: &str) -> rusqlite::Result<Option<Conversation>> {
    c.row(&format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1"), [id], conversation_row).optional()
}

/// What an idempotency key was first used for: `(message_id, fingerprint)`.
fn idempotency_key_row(c: &Connection, scope: &str) -> rusqlite::Result<Option<(String, String)>> {
    c.row("SELECT message_id, fingerprint FROM idempotency WHERE scope = ?1", [scope], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Deletes messages by id and every row that names them (in the caller's transaction).
pub(super) fn delete_messages(c: &Connection, ids: &[String]) -> rusqlite::Result<()> {
    for id in ids {
        c.exec("DELETE FROM idempotency WHERE message_id = ?1", [id])?;
        c.exec("DELETE FROM outbox WHERE message_id = ?1", [id])?;
        c.exec("DELETE FROM messages WHERE id = ?1", [id])?;
    }
    Ok(())
}

/// The messages `sql` selects, newest first, of the conversation (`?1`) before the id `?2`, at
/// most `limit` (`?3`); returned oldest first.
async fn newest(
    store: &SqliteStore,
    sql: String,
    conversation_id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<Message>> {
    let (id, before) = (conversation_id.to_string(), before.map(str::to_string));
    let mut out: Vec<Message> = store
        .db
        .read(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(params![id, before, limit as i64], message_row)?;
            rows.collect()
        })
        .await?;
    out.reverse();
    Ok(out)
}

#[async_trait]
impl MessageStore for SqliteStore {
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
                let mut st = c.prepare_cached(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = ?1 AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3"
                ))?;
                let rows = st.query_map(params![u, before, limit as i64], conversation_row)?;
                rows.collect()
            })
            .await?)
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let id = id.to_string();
        Ok(self.db.read(move |c| conversation(c, &id)).await?)
    }

    async fn set_title(&self, conv: &Conversation, title: &str, if_untitled: bool) -> Result<bool> {
        let (id, title) = (conv.id.clone(), title.to_string());
        let changed = self
            .db
            .call(move |c| {
                c.exec(
                    "UPDATE conversations SET title = ?2 WHERE id = ?1 AND (?3 = 0 OR title IS NULL)",
                    params![id, title, if_untitled],
                )
            })
            .await?;
        Ok(changed == 1)
    }

    async fn delete_conversation(&self, conv: &Conversation) -> Result<()> {
        let id = conv.id.clone();
        self.db
            .call(move |c| {
                // One transaction: a message recorded meanwhile checks that its conversation exists.
                let tx = c.savepoint()?;
                let ids: Vec<String> = tx
                    .prepare_cached("SELECT id FROM messages WHERE conversation_id = ?1")?
                    .query_map([&id], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                delete_messages(&tx, &ids)?;
                tx.exec("DELETE FROM conversations WHERE id = ?1", [&id])?;
                tx.commit()
            })
            .await?;
        Ok(())
    }

    async fn list_messages(&self, conversation_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3"
        );
        newest(self, sql, conversation_id, before, limit).await
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
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND id < ?2 AND status = 'answered' AND purge_at = 0
                     ORDER BY id DESC LIMIT ?3"
        );
        newest(self, sql, conversation_id, Some(before_id), limit).await
    }

    async fn idempotency_key(&self, scope: &str) -> Result<Option<(String, String)>> {
        let scope = scope.to_string();
        Ok(self.db.read(move |c| idempotency_key_row(c, &scope)).await?)
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
                    if let Some((message_id, fingerprint)) = idempotency_key_row(c, &k.scope)? {
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

    async fn requeue_message(&self, message_id: &str, now_ms: i64, from: Requeue) -> Result<bool> {
        let (answer, condition) = match from {
            Requeue::Failed => {
                ("", "status = 'failed' OR (status = 'processing' AND last_delivery = 1 AND lease_until < ?2)")
            }
            Requeue::Answered => ("answer = NULL,", "status = 'answered'"),
        };
        let sql = format!(
            "UPDATE messages SET status = 'queued', {answer} error = NULL, claim_token = NULL, lease_until = 0,
             dead_lettered = 0, last_delivery = 0, stopped = 0, stop_requested = 0, updated_at = ?2
             WHERE id = ?1 AND ({condition})"
        );
        let id = message_id.to_string();
        let send = self.send_or_outbox();
        let requeued = self
            .db
            .call(move |c| {
                let n = c.exec(&sql, params![id, now_ms])?;
                if n == 1 {
                    send(c, &id, now_ms)?;
                }
                Ok(n == 1)
            })
            .await?;
        if requeued {
            self.sent();
        }
        Ok(requeued)
    }

    async fn request_stop(&self, message_id: &str, now_ms: i64) -> Result<Stop> {
        let id = message_id.to_string();
        Ok(self
            .db
            .call(move |c| {
                let queued = "UPDATE messages SET status = 'answered', answer = '', stopped = 1, updated_at = ?2
                              WHERE id = ?1 AND status = 'queued'";
                if c.exec(queued, params![id, now_ms])? == 1 {
                    return Ok(Stop::Stopped);
                }
                let held = "UPDATE messages SET stop_requested = 1 WHERE id = ?1 AND status = 'processing'";
                Ok(if c.exec(held, params![id])? == 1 { Stop::Stopping } else { Stop::NotInFlight })
            })
            .await?)
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
}
