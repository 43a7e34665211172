//! The store: users, profiles, tokens, conversations, messages, idempotency keys and the outbox;
//! [`Store`] is its four parts, [`AccountStore`], [`MessageStore`], [`LimitStore`] and
//! [`LeaseStore`].
//!
//! Every state change of a message is a conditional write, so that at-least-once delivery
//! never answers a message twice: `claim` takes a lease, `complete`/`fail`/`release` only
//! succeed for the holder of the lease (its `claim_token`).

use async_trait::async_trait;

use crate::model::{Conversation, Message, Profile, Status, TokenInfo, User};

/// Most items one page of a list returns.
pub const MAX_PAGE: usize = 200;
/// Live tokens (sessions and API tokens) one user holds: issuing another revokes the oldest,
/// so the token list and a password change's revocations stay bounded.
pub const MAX_TOKENS: usize = 100;
/// Most token index entries a listing reads (live ones, and expired ones not yet removed).
pub const TOKENS_READ: usize = 500;

pub mod dynamo;
pub mod notify;
pub mod sqlite;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    /// The account is deleted or being deleted: nothing more is written for it.
    #[error("account deleted")]
    Gone,
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
    /// The message and its outbox row (or queue entry) were written.
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
    /// Failed, and not set aside for a redrive: the delivery is a duplicate.
    Failed,
}

/// What posting a message needs to know, read in one round trip: the conversation, the
/// profile (consent, history), and today's model tokens of the user and of everyone.
#[derive(Debug, Clone, Default)]
pub struct PostContext {
    pub conversation: Option<Conversation>,
    pub profile: Option<Profile>,
    /// 0 when not read (its budget is off).
    pub user_tokens_today: u64,
    pub all_tokens_today: u64,
}

/// What [`LimitStore::charge_spend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged; everyone's count of the day after it.
    Charged { all_today: u64 },
    /// Not charged: the user's cap would be passed.
    OverUser,
    /// Not charged: everyone's cap would be passed.
    OverAll,
}

/// The spend counters of `day` that [`LimitStore::post_context`] reads: only those a budget is on
/// for (each read costs a read unit on DynamoDB).
#[derive(Debug, Clone, Copy)]
pub struct SpendReads {
    pub day: i64,
    pub user: bool,
    pub all: bool,
}

/// The store: every operation, in four parts that each backend implements in a file of its
/// own (`accounts.rs`, `messages.rs`, `limits.rs`, `lease.rs`); whatever implements the four
/// is a `Store`. An `Arc<dyn Store>` answers every part's methods with only `Store` imported;
/// a caller of a concrete store imports the part it calls.
pub trait Store: AccountStore + MessageStore + LimitStore + LeaseStore {}

impl<T: AccountStore + MessageStore + LimitStore + LeaseStore> Store for T {}

/// Users, profiles and tokens, and the deletion of an account with everything it owns.
#[async_trait]
pub trait AccountStore: Send + Sync {
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
    /// messages, their outbox rows and idempotency keys, spend counters. Idempotent, and safe
    /// against requests in flight: the account is marked first, and every write for it
    /// (token, conversation, message) is conditional on the mark's absence (`Gone`).
    async fn delete_user(&self, user: &User) -> Result<()>;
    /// Replaces the password hash (a password change).
    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()>;
    /// `Gone` when the account is deleted or being deleted.
    async fn create_token(&self, user_id: &str, token: &TokenInfo) -> Result<()>;
    /// The user of an unexpired token, `None` for an unknown one. A token never outlives its
    /// account: tokens are written only while the account exists, and deleted with it.
    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>>;
    /// The user's tokens that have not expired, newest first; at most [`TOKENS_READ`] entries
    /// are read.
    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>>;
    /// Revokes a session or API token (sign-out, revocation). No error when it does not exist.
    async fn delete_token(&self, token_hash: &str) -> Result<()>;
}

/// Conversations and messages: written, read back, retried, deleted and purged; and the
/// outbox the relay reads.
/// Which messages go back to the queue at a user's asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// A failed one, or one left on its last delivery by a worker that died
    /// (`model::shown_status`): the user's retry.
    Failed,
    /// An answered one, for another answer that replaces it.
    Answered,
}

/// What asking to stop a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It was still queued: answered now, stopped, with no text; no model was called.
    Stopped,
    /// It is being answered: marked, and its worker stops at its next look (its partial
    /// answer's next write, or its next read of the mark).
    Stopping,
    /// Answered or failed already (or gone): nothing to stop.
    NotInFlight,
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// `Gone` when the account is deleted or being deleted.
    async fn create_conversation(&self, c: &Conversation) -> Result<()>;
    /// Up to `limit` of the user's conversations older than `before` (an id), newest first.
    async fn list_conversations(&self, user_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Conversation>>;
    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>>;
    /// Names the conversation; with `if_untitled`, only one that has no title yet (the title
    /// its first message gives). Whether it was set (`false`: it is gone, or had a title).
    async fn set_title(&self, c: &Conversation, title: &str, if_untitled: bool) -> Result<bool>;
    /// Deletes the conversation and every message in it (with each one's outbox row and
    /// idempotency key); a message being answered meanwhile finds itself gone.
    async fn delete_conversation(&self, c: &Conversation) -> Result<()>;

    /// The newest `limit` messages of the conversation older than `before` (an id), oldest first.
    async fn list_messages(&self, conversation_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Message>>;
    async fn get_message(&self, id: &str) -> Result<Option<Message>>;
    /// Up to `limit` answered messages of the conversation older than `before_id`, oldest first.
    async fn history(&self, conversation_id: &str, before_id: &str, limit: usize) -> Result<Vec<Message>>;

    /// What an idempotency key was first used for: `(message_id, fingerprint)`.
    async fn idempotency_key(&self, scope: &str) -> Result<Option<(String, String)>>;
    /// Writes the message, its outbox row (or its queue entry: [`MessageStore::enqueues_on_record`])
    /// and the idempotency key in one transaction; `Gone` when the account or the
    /// conversation was deleted meanwhile.
    async fn record_message(&self, m: &Message, key: Option<&IdempotencyKey>) -> Result<Recorded>;
    /// The message back to queued with a new outbox row (or queue entry), in one conditional
    /// write, if it is in the state `from` names (an answered one loses its answer, which the
    /// next replaces). False when it is not.
    async fn requeue_message(&self, message_id: &str, now_ms: i64, from: Requeue) -> Result<bool>;
    /// True when `record_message` and `requeue_message` write the queue's entry themselves, in
    /// the message's transaction (a store and a queue in one database): nothing is left to
    /// send. Otherwise they write an outbox row, and the caller sends, then clears the row.
    /// No default: a wrapper that forgot to forward it would have every message sent twice.
    fn enqueues_on_record(&self) -> bool;
    /// Stops a message that is not answered yet (see [`Stop`]), with conditional writes.
    async fn request_stop(&self, message_id: &str, now_ms: i64) -> Result<Stop>;
    /// Deletes a message and every item that names it (outbox row, idempotency key).
    async fn delete_message(&self, m: &Message) -> Result<()>;
    /// Deletes up to `limit` messages kept without history whose `purge_at` has passed;
    /// returns how many.
    async fn purge_due(&self, now_ms: i64, limit: usize) -> Result<u64>;
    /// Message ids in the outbox recorded at or before `created_before_ms`, oldest first.
    async fn outbox_pending(&self, created_before_ms: i64, limit: usize) -> Result<Vec<String>>;
    async fn outbox_remove(&self, message_id: &str) -> Result<()>;
    async fn outbox_len(&self) -> Result<u64>;
}

/// What a post is checked against: its context, the daily spend, a user's in-flight slots, the
/// limits every process shares.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Reads what posting into `conversation_id` needs (see [`PostContext`]).
    async fn post_context(&self, user_id: &str, conversation_id: &str, spend: SpendReads) -> Result<PostContext>;
    /// Charges `tokens` to the user and to everyone for `day`, unless that would take the
    /// user's count past `user_cap` or everyone's past `all_cap` (0: no cap); then nothing is
    /// charged. Atomic against other tasks charging at once.
    async fn charge_spend(&self, user_id: &str, day: i64, tokens: u64, user_cap: u64, all_cap: u64) -> Result<Charge>;
    /// Corrects the user's and everyone's count for `day` by `delta` (negative: a refund), once
    /// a call's cost is known. No cap: the tokens are spent.
    async fn add_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()>;
    /// Takes one of the user's `cap` slots of messages waiting or being answered (a post or a
    /// retry). False when all are taken. DynamoDB keeps a count per user, taken and given back
    /// by conditional updates; a count that leaked (a worker died between the answer and the
    /// give-back) is reset once the user's slots went 10 minutes untouched. SQLite counts the
    /// user's open messages.
    async fn take_slot(&self, user_id: &str, cap: u32, now_ms: i64) -> Result<bool>;
    /// Gives back a slot: the message was answered or failed, or its post was not recorded.
    async fn free_slot(&self, user_id: &str, now_ms: i64) -> Result<()>;
    /// A limit shared by every process on this store: takes one of the `limit` uses of `key`
    /// in the current window of `window_ms` (windows start at multiples of it). `None`: taken;
    /// `Some(ms)`: refused, the window ends in `ms`. The embedded store (one process) keeps
    /// none and takes every use: its callers' in-process limits hold there.
    async fn take_rate(&self, key: &str, limit: u32, window_ms: i64, now_ms: i64) -> Result<Option<i64>>;
}

/// A worker's hold on a message: the message, and the token its claim writes. Every write
/// after the claim is conditional on it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub message_id: String,
    pub claim_token: String,
}

/// A claim's timing: when it is made, when its lease ends, and whether the queue will deliver
/// the message again.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTerms {
    pub now_ms: i64,
    pub lease_until_ms: i64,
    /// The queue will not deliver the message again (see [`LeaseStore::claim`]).
    pub last_delivery: bool,
}

/// What a worker's write of its partial answer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// Written: event streams read it.
    Written,
    /// Not written: the user asked to stop the message (the lease still holds).
    Stop,
    /// Not written: the lease is lost.
    Lost,
}

/// The worker's writes to a message, each conditional on its `status` and `claim_token`.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Conditional: succeeds when the message is queued, failed and set aside for the
    /// dead-letter queue (a redrive; claiming clears the mark), or processing with an expired
    /// lease. A failed message without the mark is `Claim::Failed`. `terms.last_delivery`: the queue
    /// will not deliver it again, so should this worker die, the message reads as failed
    /// once the lease expires (`model::shown_status`).
    async fn claim(&self, lease: &Lease, terms: ClaimTerms) -> Result<Claim>;
    /// Conditional on holding the lease.
    async fn extend_lease(&self, lease: &Lease, lease_until_ms: i64) -> Result<bool>;
    /// Conditional on holding the lease and on no stop asked: the answer as written so far
    /// (the whole text, which a later write replaces), so event streams can send it on.
    async fn write_partial(&self, lease: &Lease, text: &str) -> Result<Partial>;
    /// Deletes the partial answer kept apart from the message (DynamoDB; SQLite keeps it in the
    /// message's row, where the answer replaces it): the message is answered, failed or back in
    /// the queue. No error when there is none.
    async fn forget_partial(&self, message_id: &str) -> Result<()>;
    /// Conditional on holding the lease: stores the answer (`stopped`: the part written until
    /// the user stopped it). False when the lease was lost.
    async fn complete(&self, lease: &Lease, answer: &str, now_ms: i64, stopped: bool) -> Result<bool>;
    /// Conditional on holding the lease: marks failed with a reason shown to the user (and
    /// drops any partial answer);
    /// `dead_lettered` when the delivery goes to the dead-letter queue, so that its redrive
    /// (and only that) may claim it again.
    async fn fail(&self, lease: &Lease, reason: &str, now_ms: i64, dead_lettered: bool) -> Result<bool>;
    /// Conditional on holding the lease: back to queued (a retry will come). A partial answer
    /// stays until the next attempt writes its own.
    async fn release(&self, lease: &Lease, now_ms: i64) -> Result<bool>;
}

pub fn status_of(s: &str) -> Status {
    Status::parse(s).unwrap_or(Status::Failed)
}
