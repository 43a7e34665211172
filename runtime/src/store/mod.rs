//! The store: users, profiles, tokens, conversations, messages, idempotency keys and the outbox.
//!
//! Every state change of a message is a conditional write, so that at-least-once delivery
//! never answers a message twice: `claim` takes a lease, `complete`/`fail`/`release` only
//! succeed for the holder of the lease (its `claim_token`).

use async_trait::async_trait;

use crate::model::{Conversation, Message, Profile, Status, TokenInfo, User};

pub mod dynamo;
pub mod notify;
pub mod sqlite;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("store backend: {0:#}")]
    Backend(anyhow::Error),
}

impl From<anyhow::Error> for StoreError {
    fn from(e: anyhow::Error) -> StoreError {
        StoreError::Backend(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An idempotency key as stored: scoped to its user, with a fingerprint of the request body.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub scope: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The message and its outbox row were written.
    New,
    /// The idempotency key was used before: nothing was written.
    Existing { message_id: String, fingerprint: String },
}

#[derive(Debug, Clone)]
pub enum Claim {
    /// This worker now holds the lease; the message as stored.
    Claimed(Message),
    /// Already answered: the queue message is a duplicate.
    Answered,
    /// Another worker holds an unexpired lease.
    Busy { lease_until_ms: i64 },
    /// No such message.
    Missing,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Fails with `Conflict` when the email is taken.
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    /// Called at each sign-in: makes sure `user_by_id` finds this user (DynamoDB writes the
    /// id → email item that accounts created before it existed lack). Default: nothing to do.
    async fn remember_user(&self, _user: &User) -> Result<()> {
        Ok(())
    }
    /// The profile and consent; `None` before the consent screen was answered.
    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>>;
    async fn put_profile(&self, user_id: &str, profile: &Profile) -> Result<()>;
    /// Deletes the account and everything stored for it: profile, tokens, conversations,
    /// messages. Idempotent. The SQLite store also deletes the messages' outbox rows and
    /// idempotency keys; the DynamoDB store leaves outbox rows (the worker finds the message
    /// missing and drops the queue message) and idempotency keys (to their TTL).
    async fn delete_user(&self, user: &User) -> Result<()>;
    /// Replaces the password hash (a password change).
    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()>;
    async fn create_token(&self, user_id: &str, token: &TokenInfo) -> Result<()>;
    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>>;
    /// The user's tokens that have not expired, newest first.
    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>>;
    /// Revokes a session or API token (sign-out, revocation). No error when it does not exist.
    async fn delete_token(&self, token_hash: &str) -> Result<()>;

    async fn create_conversation(&self, c: &Conversation) -> Result<()>;
    async fn list_conversations(&self, user_id: &str) -> Result<Vec<Conversation>>;
    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>>;

    async fn list_messages(&self, conversation_id: &str) -> Result<Vec<Message>>;
    async fn get_message(&self, id: &str) -> Result<Option<Message>>;
    /// Up to `limit` answered messages of the conversation older than `before_id`, oldest first.
    async fn history(&self, conversation_id: &str, before_id: &str, limit: usize) -> Result<Vec<Message>>;

    /// What an idempotency key was first used for: `(message_id, fingerprint)`.
    async fn idempotency_key(&self, scope: &str) -> Result<Option<(String, String)>>;
    /// Writes the message, its outbox row and the idempotency key in one transaction.
    async fn record_message(&self, m: &Message, key: Option<&IdempotencyKey>) -> Result<Recorded>;
    /// Message ids in the outbox recorded at or before `created_before_ms`, oldest first.
    async fn outbox_pending(&self, created_before_ms: i64, limit: usize) -> Result<Vec<String>>;
    async fn outbox_remove(&self, message_id: &str) -> Result<()>;
    async fn outbox_len(&self) -> Result<u64>;

    /// Conditional: succeeds when the message is queued or failed, or processing with an
    /// expired lease.
    async fn claim(&self, message_id: &str, claim_token: &str, now_ms: i64, lease_until_ms: i64) -> Result<Claim>;
    /// Conditional on holding the lease.
    async fn extend_lease(&self, message_id: &str, claim_token: &str, lease_until_ms: i64) -> Result<bool>;
    /// Conditional on holding the lease: stores the answer. False when the lease was lost.
    async fn complete(&self, message_id: &str, claim_token: &str, answer: &str, now_ms: i64) -> Result<bool>;
    /// Conditional on holding the lease: marks failed with a reason shown to the user.
    async fn fail(&self, message_id: &str, claim_token: &str, reason: &str, now_ms: i64) -> Result<bool>;
    /// Conditional on holding the lease: back to queued (a retry will come).
    async fn release(&self, message_id: &str, claim_token: &str, now_ms: i64) -> Result<bool>;
}

pub fn status_of(s: &str) -> Status {
    Status::parse(s).unwrap_or(Status::Failed)
}
