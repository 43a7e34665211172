//! The store on one DynamoDB table with a string partition key `pk` and sort key `sk`.
//! Item layout (see runtime/README.md):
//!
//! | item          | pk                      | sk          |
//! |---------------|-------------------------|-------------|
//! | user          | `USER#{email}`          | `USER`      |
//! | user by id    | `USERID#{id}`           | `USER`      |
//! | profile       | `USERID#{id}`           | `PROFILE`   |
//! | user's token  | `USERID#{id}`           | `TOKEN#{sha256}` |
//! | token         | `TOKEN#{sha256}`        | `TOKEN`     |
//! | conversation  | `CONV#{id}`             | `CONV`      |
//! | user's conv.  | `USERCONVS#{user_id}`   | `CONV#{id}` |
//! | message       | `MSG#{id}`              | `MSG`       |
//! | conv.'s msg.  | `CONV#{conversation_id}`| `MSG#{id}`  |
//! | outbox row    | `OUTBOX#{0..7}`         | `{message_id}` |
//! | idempotency   | `IDEM#{sha256}`         | `IDEM`      |
//! | purge row     | `PURGE#{0..7}`          | `{purge_at}#{message_id}` |
//! | user's spend  | `USERID#{id}`           | `SPEND#{day}` |
//! | all spend     | `SPEND#{day}`           | `ALL`       |
//! | in flight     | `USERID#{id}`           | `INFLIGHT`  |
//! | shared rate   | `RATE#{kind}#{hash}`    | `{window}`  |
//! | tombstone     | `GONE#{sha256(id)}`     | `GONE`      |
//!
//! Ids are UUIDv7, so sort keys built from them sort by creation time. The outbox is spread
//! over [`OUTBOX_SHARDS`] partitions so its writes never make one hot partition.
//!
//! This file is the [`Store`] implementation: each operation is a function of the file of its
//! concern, which the implementation below names.
//! - `item`: the layout in code: attribute helpers, keys (the outbox's and purge rows' shards,
//!   the tombstone), items decoded (message, user, profile, conversation), the items several
//!   writes share, the transaction items (put, update, tombstone check).
//! - `table`: the requests several operations share (consistent get, batch get, a page of a
//!   partition, keys of a partition, deletes by key, transactions retried on conflict).
//! - `accounts`: users, profiles, tokens, the account's deletion.
//! - `messages`: conversations, messages, idempotency keys, the outbox, the purge.
//! - `limits`: what a post is checked against: its context, the daily spend, in-flight slots,
//!   shared rate limits.
//! - `lease`: the worker's writes, each conditional: the claim, then the lease holder's
//!   extension, answer, failure and release.

mod accounts;
mod item;
mod lease;
mod limits;
mod messages;
mod table;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

pub use self::item::OUTBOX_SHARDS;
use super::{Charge, Claim, IdempotencyKey, PostContext, Recorded, Result, SpendReads, Store};
use crate::model::{Conversation, Message, Profile, TokenInfo, User};

/// The store on the DynamoDB table `table` (created by `aira`).
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore { client, table: table.into() }
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        accounts::create_user(self, user).await
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        accounts::user_by_email(self, email).await
    }
    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        accounts::user_by_id(self, id).await
    }
    async fn remember_user(&self, user: &User) -> Result<()> {
        accounts::remember_user(self, user).await
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
    async fn create_token(&self, user_id: &str, t: &TokenInfo) -> Result<()> {
        accounts::create_token(self, user_id, t).await
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
    async fn create_conversation(&self, c: &Conversation) -> Result<()> {
        messages::create_conversation(self, c).await
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
    /// A DynamoDB transaction cannot send to SQS: the outbox row covers the send.
    fn enqueues_on_record(&self) -> bool {
        false
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
    async fn take_slot(&self, user_id: &str, cap: u32, now_ms: i64) -> Result<bool> {
        limits::take_slot(self, user_id, cap, now_ms).await
    }
    async fn free_slot(&self, user_id: &str, now_ms: i64) -> Result<()> {
        limits::free_slot(self, user_id, now_ms).await
    }
    async fn take_rate(&self, key: &str, limit: u32, window_ms: i64, now_ms: i64) -> Result<Option<i64>> {
        limits::take_rate(self, key, limit, window_ms, now_ms).await
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
