//! A store decorator that announces message state changes on an in-process channel, so
//! event streams in the same process (the `serve` command) wake at once instead of at
//! their next poll. Streams still poll, so nothing depends on an announcement arriving.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    AccountStore, Charge, Claim, ClaimTerms, IdempotencyKey, Lease, LeaseStore, LimitStore, MessageStore, Partial,
    PostContext, Recorded, Requeue, Result, SpendReads, Stop, Store,
};
use crate::model::{Conversation, Message, Profile, TokenInfo, User};

pub struct Notifying {
    inner: Arc<dyn Store>,
    tx: broadcast::Sender<Arc<str>>,
}

impl Notifying {
    pub fn new(inner: Arc<dyn Store>) -> Notifying {
        Notifying { inner, tx: broadcast::channel(1024).0 }
    }

    /// The channel of changed message ids.
    pub fn updates(&self) -> broadcast::Sender<Arc<str>> {
        self.tx.clone()
    }

    fn announce(&self, changed: bool, id: &str) -> bool {
        if changed {
            let _ = self.tx.send(Arc::from(id));
        }
        changed
    }
}

#[async_trait]
impl AccountStore for Notifying {
    async fn create_user(&self, user: &User) -> Result<()> {
        self.inner.create_user(user).await
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        self.inner.user_by_email(email).await
    }
    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        self.inner.user_by_id(id).await
    }
    async fn remember_user(&self, user: &User) -> Result<()> {
        self.inner.remember_user(user).await
    }
    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>> {
        self.inner.get_profile(user_id).await
    }
    async fn put_profile(&self, user_id: &str, profile: &Profile) -> Result<()> {
        self.inner.put_profile(user_id, profile).await
    }
    async fn delete_user(&self, user: &User) -> Result<()> {
        self.inner.delete_user(user).await
    }
    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()> {
        self.inner.set_password_hash(user, password_hash).await
    }
    async fn create_token(&self, user_id: &str, token: &TokenInfo) -> Result<()> {
        self.inner.create_token(user_id, token).await
    }
    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>> {
        self.inner.token_user(token_hash, now_ms).await
    }
    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>> {
        self.inner.list_tokens(user_id, now_ms).await
    }
    async fn delete_token(&self, token_hash: &str) -> Result<()> {
        self.inner.delete_token(token_hash).await
    }
}

#[async_trait]
impl MessageStore for Notifying {
    async fn create_conversation(&self, c: &Conversation) -> Result<()> {
        self.inner.create_conversation(c).await
    }
    async fn list_conversations(&self, user_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        self.inner.list_conversations(user_id, before, limit).await
    }
    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>> {
        self.inner.get_conversation(id).await
    }
    async fn set_title(&self, c: &Conversation, title: &str, if_untitled: bool) -> Result<bool> {
        self.inner.set_title(c, title, if_untitled).await
    }
    async fn delete_conversation(&self, c: &Conversation) -> Result<()> {
        self.inner.delete_conversation(c).await
    }
    async fn list_messages(&self, conversation_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Message>> {
        self.inner.list_messages(conversation_id, before, limit).await
    }
    async fn get_message(&self, id: &str) -> Result<Option<Message>> {
        self.inner.get_message(id).await
    }
    async fn history(&self, conversation_id: &str, before_id: &str, limit: usize) -> Result<Vec<Message>> {
        self.inner.history(conversation_id, before_id, limit).await
    }
    async fn idempotency_key(&self, scope: &str) -> Result<Option<(String, String)>> {
        self.inner.idempotency_key(scope).await
    }
    async fn record_message(&self, m: &Message, key: Option<&IdempotencyKey>) -> Result<Recorded> {
        self.inner.record_message(m, key).await
    }
    async fn requeue_message(&self, message_id: &str, now_ms: i64, from: Requeue) -> Result<bool> {
        let ok = self.inner.requeue_message(message_id, now_ms, from).await?;
        Ok(self.announce(ok, message_id))
    }
    async fn request_stop(&self, message_id: &str, now_ms: i64) -> Result<Stop> {
        let stop = self.inner.request_stop(message_id, now_ms).await?;
        self.announce(stop == Stop::Stopped, message_id);
        Ok(stop)
    }
    async fn delete_message(&self, m: &Message) -> Result<()> {
        self.inner.delete_message(m).await
    }
    async fn purge_due(&self, now_ms: i64, limit: usize) -> Result<u64> {
        self.inner.purge_due(now_ms, limit).await
    }
    async fn outbox_pending(&self, created_before_ms: i64, limit: usize) -> Result<Vec<String>> {
        self.inner.outbox_pending(created_before_ms, limit).await
    }
    fn enqueues_on_record(&self) -> bool {
        self.inner.enqueues_on_record()
    }
    async fn outbox_remove(&self, message_id: &str) -> Result<()> {
        self.inner.outbox_remove(message_id).await
    }
    async fn outbox_len(&self) -> Result<u64> {
        self.inner.outbox_len().await
    }
}

#[async_trait]
impl LimitStore for Notifying {
    async fn post_context(&self, user_id: &str, conversation_id: &str, spend: SpendReads) -> Result<PostContext> {
        self.inner.post_context(user_id, conversation_id, spend).await
    }
    async fn charge_spend(&self, user_id: &str, day: i64, tokens: u64, user_cap: u64, all_cap: u64) -> Result<Charge> {
        self.inner.charge_spend(user_id, day, tokens, user_cap, all_cap).await
    }
    async fn add_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()> {
        self.inner.add_spend(user_id, day, delta).await
    }
    async fn take_slot(&self, user_id: &str, cap: u32, now_ms: i64) -> Result<bool> {
        self.inner.take_slot(user_id, cap, now_ms).await
    }
    async fn free_slot(&self, user_id: &str, now_ms: i64) -> Result<()> {
        self.inner.free_slot(user_id, now_ms).await
    }
    async fn take_rate(&self, key: &str, limit: u32, window_ms: i64, now_ms: i64) -> Result<Option<i64>> {
        self.inner.take_rate(key, limit, window_ms, now_ms).await
    }
}

#[async_trait]
impl LeaseStore for Notifying {
    async fn claim(&self, lease: &Lease, terms: ClaimTerms) -> Result<Claim> {
        let c = self.inner.claim(lease, terms).await?;
        self.announce(matches!(c, Claim::Claimed(_)), &lease.message_id);
        Ok(c)
    }
    async fn extend_lease(&self, lease: &Lease, lease_until_ms: i64) -> Result<bool> {
        self.inner.extend_lease(lease, lease_until_ms).await
    }
    async fn write_partial(&self, lease: &Lease, text: &str) -> Result<Partial> {
        let p = self.inner.write_partial(lease, text).await?;
        self.announce(p == Partial::Written, &lease.message_id);
        Ok(p)
    }
    async fn forget_partial(&self, message_id: &str) -> Result<()> {
        self.inner.forget_partial(message_id).await
    }
    async fn complete(&self, lease: &Lease, answer: &str, now_ms: i64, stopped: bool) -> Result<bool> {
        let ok = self.inner.complete(lease, answer, now_ms, stopped).await?;
        Ok(self.announce(ok, &lease.message_id))
    }
    async fn fail(&self, lease: &Lease, reason: &str, now_ms: i64, dead_lettered: bool) -> Result<bool> {
        let ok = self.inner.fail(lease, reason, now_ms, dead_lettered).await?;
        Ok(self.announce(ok, &lease.message_id))
    }
    async fn release(&self, lease: &Lease, now_ms: i64) -> Result<bool> {
        let ok = self.inner.release(lease, now_ms).await?;
        Ok(self.announce(ok, &lease.message_id))
    }
}
