//! The embedded store on SQLite (the `serve` command and the local target). The worker's
//! writes (claim, lease, answer, failure, release, spend) go ahead of the API's in the writer's
//! next group (`Db::call_first`), so a flood of posts cannot starve the backlog's drain.
//!
//! This file is the [`Store`] implementation: each operation is a function of the file of its
//! concern, which the implementation below names.
//! - `schema`: the tables, the columns added since (migrated at open), rows read back.
//! - `accounts`: users, profiles, tokens, the account's deletion.
//! - `messages`: conversations, messages, idempotency keys, the outbox, the purge.
//! - `limits`: what a post is checked against: its context, the daily spend, open messages.
//! - `lease`: the worker's writes, each conditional: the claim, then the lease holder's
//!   extension, answer, failure and release.

mod accounts;
mod lease;
mod limits;
mod messages;
mod schema;

use std::path::Path;

use async_trait::async_trait;
use rusqlite::params;

use self::schema::{migrate, SCHEMA};
use super::{Charge, Claim, IdempotencyKey, PostContext, Recorded, Result, SpendReads, Store};
use crate::group_commit::{Cached, Db, Durability};
use crate::model::{Conversation, Message, Profile, QueueBody, TokenInfo, User};
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

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        accounts::create_user(self, user).await
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        accounts::user_by_email(self, email).await
    }
    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        accounts::user_by_id(self, id).await
    }
    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>> {
        accounts::get_profile(self, user_id).await
    }
    async fn put_profile(&self, user_id: &str, p: &Profile) -> Result<()> {
        accounts::put_profile(self, user_id, p).await
    }
    async fn delete_user(&self, user: &User) -> Result<()> {
        accounts::delete_user(self, user).await
    }
    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()> {
        accounts::set_password_hash(self, user, password_hash).await
    }
    async fn create_token(&self, user_id: &str, token: &TokenInfo) -> Result<()> {
        accounts::create_token(self, user_id, token).await
    }
    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>> {
        accounts::token_user(self, token_hash, now_ms).await
    }
    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>> {
        accounts::list_tokens(self, user_id, now_ms).await
    }
    async fn delete_token(&self, token_hash: &str) -> Result<()> {
        accounts::delete_token(self, token_hash).await
    }
    async fn create_conversation(&self, conv: &Conversation) -> Result<()> {
        messages::create_conversation(self, conv).await
    }
    async fn list_conversations(&self, user_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        messages::list_conversations(self, user_id, before, limit).await
    }
    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>> {
        messages::get_conversation(self, id).await
    }
    async fn list_messages(&self, conversation_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Message>> {
        messages::list_messages(self, conversation_id, before, limit).await
    }
    async fn get_message(&self, id: &str) -> Result<Option<Message>> {
        messages::get_message(self, id).await
    }
    async fn history(&self, conversation_id: &str, before_id: &str, limit: usize) -> Result<Vec<Message>> {
        messages::history(self, conversation_id, before_id, limit).await
    }
    async fn idempotency_key(&self, scope: &str) -> Result<Option<(String, String)>> {
        messages::idempotency_key(self, scope).await
    }
    async fn record_message(&self, m: &Message, key: Option<&IdempotencyKey>) -> Result<Recorded> {
        messages::record_message(self, m, key).await
    }
    async fn retry_message(&self, message_id: &str, now_ms: i64) -> Result<bool> {
        messages::retry_message(self, message_id, now_ms).await
    }
    fn enqueues_on_record(&self) -> bool {
        self.queue.is_some()
    }
    async fn delete_message(&self, m: &Message) -> Result<()> {
        messages::delete_message(self, m).await
    }
    async fn purge_due(&self, now_ms: i64, limit: usize) -> Result<u64> {
        messages::purge_due(self, now_ms, limit).await
    }
    async fn post_context(&self, user_id: &str, conversation_id: &str, spend: SpendReads) -> Result<PostContext> {
        limits::post_context(self, user_id, conversation_id, spend).await
    }
    async fn charge_spend(&self, user_id: &str, day: i64, tokens: u64, user_cap: u64, all_cap: u64) -> Result<Charge> {
        limits::charge_spend(self, user_id, day, tokens, user_cap, all_cap).await
    }
    async fn add_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()> {
        limits::add_spend(self, user_id, day, delta).await
    }
    async fn take_slot(&self, user_id: &str, cap: u32, _now_ms: i64) -> Result<bool> {
        limits::take_slot(self, user_id, cap, _now_ms).await
    }
    /// Nothing to give back: `take_slot` counts the open messages.
    async fn free_slot(&self, _user_id: &str, _now_ms: i64) -> Result<()> {
        Ok(())
    }
    async fn take_rate(&self, _key: &str, _limit: u32, _window_ms: i64, _now_ms: i64) -> Result<Option<i64>> {
        // One process: the API's in-process limits hold.
        Ok(None)
    }
    async fn outbox_pending(&self, created_before_ms: i64, limit: usize) -> Result<Vec<String>> {
        messages::outbox_pending(self, created_before_ms, limit).await
    }
    async fn outbox_remove(&self, message_id: &str) -> Result<()> {
        messages::outbox_remove(self, message_id).await
    }
    async fn outbox_len(&self) -> Result<u64> {
        messages::outbox_len(self).await
    }
    async fn claim(
        &self,
        message_id: &str,
        claim_token: &str,
        now_ms: i64,
        lease_until_ms: i64,
        last_delivery: bool,
    ) -> Result<Claim> {
        lease::claim(self, message_id, claim_token, now_ms, lease_until_ms, last_delivery).await
    }
    async fn extend_lease(&self, message_id: &str, claim_token: &str, lease_until_ms: i64) -> Result<bool> {
        lease::extend_lease(self, message_id, claim_token, lease_until_ms).await
    }
    async fn complete(&self, message_id: &str, claim_token: &str, answer: &str, now_ms: i64) -> Result<bool> {
        lease::complete(self, message_id, claim_token, answer, now_ms).await
    }
    async fn fail(
        &self,
        message_id: &str,
        claim_token: &str,
        reason: &str,
        now_ms: i64,
        dead_lettered: bool,
    ) -> Result<bool> {
        lease::fail(self, message_id, claim_token, reason, now_ms, dead_lettered).await
    }
    async fn release(&self, message_id: &str, claim_token: &str, now_ms: i64) -> Result<bool> {
        lease::release(self, message_id, claim_token, now_ms).await
    }
}
