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
//! This file is the [`Store`] implementation, one method per operation. `item` holds the
//! attribute helpers, the outbox's shard key, the decoding of a message item and the
//! transactional put; `table` the requests several methods share (consistent get, batch get
//! of messages, keys of a partition, deletes by key, conditional update of a message).

mod item;
mod table;

use std::collections::HashMap;

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Select};
use aws_sdk_dynamodb::Client;

pub use self::item::OUTBOX_SHARDS;
use self::item::{get_n, get_s, gone_pk, message_from, n, not_gone, outbox_pk, purge_key, put, s, update, Item};
use self::table::backend;
use super::{Charge, Claim, IdempotencyKey, PostContext, Recorded, Result, SpendReads, Store, StoreError};
use crate::model::{Conversation, Message, Profile, Status, TokenInfo, User};

/// The store on the DynamoDB table `table` (created by `aira`).
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore { client, table: table.into() }
    }

    /// Adds `delta` to the user's count of `day`, unless the account is deleted.
    async fn add_user_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()> {
        let values = vec![(":t", n(delta)), (":x", n(spend_expiry(day)))];
        let key = (format!("USERID#{user_id}"), format!("SPEND#{day}"));
        let user = update(&self.table, key, "ADD tokens :t SET expires_at = :x", None, &[], values)?;
        // False when the account was deleted meanwhile: nothing to count for it.
        self.transact("dynamodb add user spend", vec![not_gone(&self.table, user_id)?, user]).await?;
        Ok(())
    }
}

/// A user's in-flight count untouched this long has leaked: it is reset at the next post.
const SLOT_LEAK_MS: i64 = 10 * 60 * 1000;

/// Spend counts are kept two days past their day, then DynamoDB's TTL removes them.
fn spend_expiry(day: i64) -> i64 {
    (day + 3) * 86_400
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        let main: Item = HashMap::from([
            ("pk".into(), s(format!("USER#{}", user.email))),
            ("sk".into(), s("USER")),
            ("id".into(), s(&user.id)),
            ("email".into(), s(&user.email)),
            ("password_hash".into(), s(&user.password_hash)),
        ]);
        let by_id: Item = HashMap::from([
            ("pk".into(), s(format!("USERID#{}", user.id))),
            ("sk".into(), s("USER")),
            ("email".into(), s(&user.email)),
        ]);
        let items = vec![
            put(&self.table, main, Some("attribute_not_exists(pk)"))?,
            put(&self.table, by_id, Some("attribute_not_exists(pk)"))?,
        ];
        // The id is fresh, so only the email can collide.
        self.transact("dynamodb put user", items).await?.then_some(()).ok_or(StoreError::Conflict)
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        match self.get(format!("USERID#{id}"), "USER").await?.and_then(|i| get_s(&i, "email")) {
            Some(email) => Ok(self.user_by_email(&email).await?.filter(|u| u.id == id)),
            None => Ok(None),
        }
    }

    async fn remember_user(&self, user: &User) -> Result<()> {
        let by_id: Item = HashMap::from([
            ("pk".into(), s(format!("USERID#{}", user.id))),
            ("sk".into(), s("USER")),
            ("email".into(), s(&user.email)),
        ]);
        // With the tombstone's check: a sign-in that passed its checks just before the
        // account's deletion does not write the email back after it.
        let items = vec![not_gone(&self.table, &user.id)?, put(&self.table, by_id, None)?];
        self.transact("dynamodb put user id", items).await?.then_some(()).ok_or(StoreError::Gone)
    }

    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>> {
        Ok(self.get(format!("USERID#{user_id}"), "PROFILE").await?.as_ref().map(profile_from))
    }

    async fn put_profile(&self, user_id: &str, p: &Profile) -> Result<()> {
        let mut item: Item = HashMap::from([
            ("pk".into(), s(format!("USERID#{user_id}"))),
            ("sk".into(), s("PROFILE")),
            ("keep_history".into(), AttributeValue::Bool(p.keep_history)),
        ]);
        if let Some(name) = &p.display_name {
            item.insert("display_name".into(), s(name));
        }
        if let Some(at) = p.consented_at {
            item.insert("consented_at".into(), n(at));
        }
        // Only while the account has no tombstone: a `PUT /v1/me` racing the deletion writes
        // nothing after it.
        let items = vec![not_gone(&self.table, user_id)?, put(&self.table, item, None)?];
        self.transact("dynamodb put profile", items).await?.then_some(()).ok_or(StoreError::Gone)
    }

    async fn delete_user(&self, user: &User) -> Result<()> {
        // The mark first: a tombstone every write for the account checks (tokens,
        // conversations, spend) and `deleting` on the login item, which sign-ins check.
        let now = crate::model::now_ms();
        let tombstone: Item = HashMap::from([
            ("pk".into(), s(gone_pk(&user.id))),
            ("sk".into(), s("GONE")),
            ("expires_at".into(), n(now / 1000 + 24 * 3600)),
        ]);
        let mark = update(
            &self.table,
            (format!("USER#{}", user.email), "USER".into()),
            "SET deleting = :now",
            Some("attribute_exists(pk)"),
            &[],
            vec![(":now", n(now))],
        )?;
        let items = vec![put(&self.table, tombstone.clone(), None)?, mark];
        if !self.transact("dynamodb mark account deleted", items).await? {
            // The login item is gone: a deletion that ended after its last step; the rest is
            // swept again below (idempotent), under a tombstone alone.
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(tombstone))
                .send()
                .await
                .map_err(backend("dynamodb put tombstone"))?;
        }
        // No write for the account succeeds any more, so what the reads below find is all.
        let convs = self.partition_keys(format!("USERCONVS#{}", user.id)).await?;
        for c in convs.iter().filter_map(|(_, sk)| sk.strip_prefix("CONV#")) {
            // The conversation item first: a message can no longer be written into it (its
            // write checks the item), so the partition read after it lists every message.
            self.delete_keys(vec![(format!("CONV#{c}"), "CONV".to_string())]).await?;
            let ids: Vec<String> = self
                .partition_keys(format!("CONV#{c}"))
                .await?
                .into_iter()
                .filter_map(|(_, sk)| sk.strip_prefix("MSG#").map(str::to_string))
                .collect();
            let mut keys = Vec::new();
            for m in self.messages_by_id(&ids).await? {
                keys.extend(message_keys(&m));
            }
            // Pointers of messages whose item is gone already.
            keys.extend(ids.iter().map(|id| (format!("CONV#{c}"), format!("MSG#{id}"))));
            self.delete_keys(keys).await?;
            self.delete_keys(vec![(format!("USERCONVS#{}", user.id), format!("CONV#{c}"))]).await?;
        }
        let mut keys = Vec::new();
        for (pk, sk) in self.partition_keys(format!("USERID#{}", user.id)).await? {
            if let Some(hash) = sk.strip_prefix("TOKEN#") {
                keys.push((format!("TOKEN#{hash}"), "TOKEN".to_string()));
            }
            keys.push((pk, sk));
        }
        self.delete_keys(keys).await?;
        self.delete_keys(vec![(format!("USER#{}", user.email), "USER".to_string())]).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        Ok(self.get(format!("USER#{email}"), "USER").await?.and_then(|i| {
            Some(User {
                id: get_s(&i, "id")?,
                email: get_s(&i, "email")?,
                password_hash: get_s(&i, "password_hash")?,
                deleting: i.contains_key("deleting"),
            })
        }))
    }

    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("USER#{}", user.email)))
            .key("sk", s("USER"))
            .update_expression("SET password_hash = :h")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":h", s(password_hash))
            .send()
            .await
            .map_err(backend("dynamodb update password"))?;
        Ok(())
    }

    async fn create_token(&self, user_id: &str, t: &TokenInfo) -> Result<()> {
        let token: Item = HashMap::from([
            ("pk".into(), s(format!("TOKEN#{}", t.hash))),
            ("sk".into(), s("TOKEN")),
            ("user_id".into(), s(user_id)),
            ("expires_at_ms".into(), n(t.expires_at)),
            ("expires_at".into(), n(t.expires_at / 1000)),
        ]);
        // The user's index of tokens: what the token list shows, and what deleting the account
        // revokes. Revoking a token deletes both items.
        let index: Item = HashMap::from([
            ("pk".into(), s(format!("USERID#{user_id}"))),
            ("sk".into(), s(format!("TOKEN#{}", t.hash))),
            ("kind".into(), s(&t.kind)),
            ("created_at".into(), n(t.created_at)),
            ("expires_at_ms".into(), n(t.expires_at)),
            ("expires_at".into(), n(t.expires_at / 1000)),
        ]);
        let items =
            vec![not_gone(&self.table, user_id)?, put(&self.table, token, None)?, put(&self.table, index, None)?];
        self.transact("dynamodb put token", items).await?.then_some(()).ok_or(StoreError::Gone)
    }

    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>> {
        Ok(self
            .get(format!("TOKEN#{token_hash}"), "TOKEN")
            .await?
            .filter(|i| get_n(i, "expires_at_ms") > now_ms)
            .and_then(|i| get_s(&i, "user_id")))
    }

    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :token)")
            .consistent_read(true)
            .expression_attribute_values(":pk", s(format!("USERID#{user_id}")))
            .expression_attribute_values(":token", s("TOKEN#"))
            .into_paginator()
            .items()
            .send();
        let mut items: Vec<Item> = Vec::new();
        while items.len() < super::TOKENS_READ {
            match pages.next().await {
                Some(item) => items.push(item.map_err(backend("dynamodb query tokens"))?),
                None => break,
            }
        }
        let mut out = Vec::new();
        for i in &items {
            let Some(hash) = get_s(i, "sk").and_then(|sk| sk.strip_prefix("TOKEN#").map(str::to_string)) else {
                continue;
            };
            // Index items written before `expires_at_ms` was kept have the TTL's seconds.
            let expires_at = match get_n(i, "expires_at_ms") {
                0 => get_n(i, "expires_at") * 1000,
                ms => ms,
            };
            let kind = get_s(i, "kind").unwrap_or_else(|| "unknown".into());
            out.push(TokenInfo { hash, kind, created_at: get_n(i, "created_at"), expires_at });
        }
        // Sign-outs before revocation deleted both items left their index item behind: only
        // tokens whose own item is there count (read together, 100 a request).
        out.retain(|t| t.expires_at > now_ms);
        let keys = out.iter().map(|t| {
            HashMap::from([("pk".to_string(), s(format!("TOKEN#{}", t.hash))), ("sk".to_string(), s("TOKEN"))])
        });
        let found: std::collections::HashSet<String> = self
            .batch_get(keys.collect())
            .await?
            .iter()
            .filter_map(|i| get_s(i, "pk")?.strip_prefix("TOKEN#").map(str::to_string))
            .collect();
        let mut live: Vec<TokenInfo> = out.into_iter().filter(|t| found.contains(&t.hash)).collect();
        live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.hash.cmp(&b.hash)));
        Ok(live)
    }

    async fn delete_token(&self, token_hash: &str) -> Result<()> {
        // Its owner, from the token item, names the index item to delete with it.
        let owner = self.get(format!("TOKEN#{token_hash}"), "TOKEN").await?.and_then(|i| get_s(&i, "user_id"));
        let mut keys = vec![(format!("TOKEN#{token_hash}"), "TOKEN".to_string())];
        if let Some(user_id) = owner {
            keys.push((format!("USERID#{user_id}"), format!("TOKEN#{token_hash}")));
        }
        self.delete_keys(keys).await
    }

    async fn create_conversation(&self, c: &Conversation) -> Result<()> {
        let main: Item = HashMap::from([
            ("pk".into(), s(format!("CONV#{}", c.id))),
            ("sk".into(), s("CONV")),
            ("user_id".into(), s(&c.user_id)),
            ("created_at".into(), n(c.created_at)),
        ]);
        let index: Item = HashMap::from([
            ("pk".into(), s(format!("USERCONVS#{}", c.user_id))),
            ("sk".into(), s(format!("CONV#{}", c.id))),
            ("created_at".into(), n(c.created_at)),
        ]);
        // The id is fresh: only the tombstone's check can fail.
        let items = vec![
            not_gone(&self.table, &c.user_id)?,
            put(&self.table, main, Some("attribute_not_exists(pk)"))?,
            put(&self.table, index, None)?,
        ];
        self.transact("dynamodb write conversation", items).await?.then_some(()).ok_or(StoreError::Gone)
    }

    async fn list_conversations(&self, user_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Conversation>> {
        let page = self.newest(format!("USERCONVS#{user_id}"), "CONV#", before, limit, false).await?;
        Ok(page
            .into_iter()
            .map(|(id, i)| Conversation { id, user_id: user_id.to_string(), created_at: get_n(&i, "created_at") })
            .collect())
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>> {
        Ok(self.get(format!("CONV#{id}"), "CONV").await?.and_then(|i| {
            Some(Conversation {
                id: id.to_string(),
                user_id: get_s(&i, "user_id")?,
                created_at: get_n(&i, "created_at"),
            })
        }))
    }

    async fn list_messages(&self, conversation_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Message>> {
        let page = self.newest(format!("CONV#{conversation_id}"), "MSG#", before, limit, true).await?;
        let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
        self.messages_by_id(&ids).await
    }

    async fn history(&self, conversation_id: &str, before_id: &str, limit: usize) -> Result<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Newest first, a page at a time, until `limit` answered ones are found.
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let r = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(format!("CONV#{conversation_id}")))
                .expression_attribute_values(":lo", s("MSG#"))
                .expression_attribute_values(":hi", s(format!("MSG#{before_id}")))
                .scan_index_forward(false)
                .limit((limit * 2).min(100) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend("dynamodb query history"))?;
            let ids: Vec<String> = r
                .items()
                .iter()
                .filter_map(|i| get_s(i, "sk")?.strip_prefix("MSG#").map(str::to_string))
                .filter(|id| id.as_str() < before_id)
                .collect();
            let mut page = self.messages_by_id(&ids).await?;
            page.retain(|m| m.status == Status::Answered && !m.ephemeral());
            page.reverse();
            out.extend(page);
            start = r.last_evaluated_key;
            if out.len() >= limit || start.is_none() {
                break;
            }
        }
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }

    async fn get_message(&self, id: &str) -> Result<Option<Message>> {
        Ok(self.get(format!("MSG#{id}"), "MSG").await?.as_ref().and_then(message_from))
    }

    async fn idempotency_key(&self, scope: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .get(format!("IDEM#{scope}"), "IDEM")
            .await?
            .map(|i| (get_s(&i, "message_id").unwrap_or_default(), get_s(&i, "fingerprint").unwrap_or_default())))
    }

    async fn record_message(&self, m: &Message, key: Option<&IdempotencyKey>) -> Result<Recorded> {
        let mut message: Item = HashMap::from([
            ("pk".into(), s(format!("MSG#{}", m.id))),
            ("sk".into(), s("MSG")),
            ("id".into(), s(&m.id)),
            ("conversation_id".into(), s(&m.conversation_id)),
            ("user_id".into(), s(&m.user_id)),
            ("content".into(), s(&m.content)),
            ("status".into(), s(m.status.as_str())),
            ("lease_until".into(), n(0)),
            ("created_at".into(), n(m.created_at)),
            ("updated_at".into(), n(m.updated_at)),
        ]);
        let pointer: Item = HashMap::from([
            ("pk".into(), s(format!("CONV#{}", m.conversation_id))),
            ("sk".into(), s(format!("MSG#{}", m.id))),
        ]);
        let outbox: Item = HashMap::from([
            ("pk".into(), s(outbox_pk(&m.id))),
            ("sk".into(), s(&m.id)),
            ("created_at".into(), n(m.created_at)),
        ]);
        // The conversation is still there and the user's: deleting an account deletes each
        // conversation item before listing its messages, so no message lands after that list.
        let conversation = aws_sdk_dynamodb::types::ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(format!("CONV#{}", m.conversation_id)))
            .key("sk", s("CONV"))
            .condition_expression("attribute_exists(pk) AND user_id = :u")
            .expression_attribute_values(":u", s(&m.user_id))
            .build()
            .map_err(|e| StoreError::Backend(anyhow!("build condition check: {e}")))?;
        let mut items =
            vec![aws_sdk_dynamodb::types::TransactWriteItem::builder().condition_check(conversation).build()];
        if let Some(k) = key {
            message.insert("idem".into(), s(&k.scope));
            let idem: Item = HashMap::from([
                ("pk".into(), s(format!("IDEM#{}", k.scope))),
                ("sk".into(), s("IDEM")),
                ("fingerprint".into(), s(&k.fingerprint)),
                ("message_id".into(), s(&m.id)),
                ("expires_at".into(), n(m.created_at / 1000 + 7 * 24 * 3600)),
            ]);
            items.push(put(&self.table, idem, Some("attribute_not_exists(pk)"))?);
        }
        if let Some(at) = m.purge_at {
            message.insert("purge_at".into(), n(at));
            // DynamoDB's own TTL as a second net, should no api task run the purge.
            message.insert("expires_at".into(), n(at / 1000 + 3600));
            let (pk, sk) = purge_key(&m.id, at);
            let row: Item = HashMap::from([("pk".into(), s(pk)), ("sk".into(), s(sk))]);
            items.push(put(&self.table, row, None)?);
        }
        items.push(put(&self.table, message, Some("attribute_not_exists(pk)"))?);
        items.push(put(&self.table, pointer, None)?);
        items.push(put(&self.table, outbox, None)?);
        if self.transact("dynamodb record message", items).await? {
            return Ok(Recorded::New);
        }
        // A condition failed: the key was used first, or the conversation is gone (the
        // message id is fresh).
        if let Some(k) = key {
            if let Some((message_id, fingerprint)) = self.idempotency_key(&k.scope).await? {
                return Ok(Recorded::Existing { message_id, fingerprint });
            }
        }
        Err(StoreError::Gone)
    }

    async fn retry_message(&self, message_id: &str, now_ms: i64) -> Result<bool> {
        let requeue = update(
            &self.table,
            (format!("MSG#{message_id}"), "MSG".into()),
            "SET #s = :q, lease_until = :zero, updated_at = :now REMOVE #e, claim_token, dead_lettered, last_delivery",
            // Failed, or left on its last delivery by a worker that died (`model::shown_status`).
            Some("#s = :f OR (#s = :p AND last_delivery = :yes AND lease_until < :now)"),
            &[("#s", "status"), ("#e", "error")],
            vec![
                (":q", s("queued")),
                (":zero", n(0)),
                (":now", n(now_ms)),
                (":f", s("failed")),
                (":p", s("processing")),
                (":yes", AttributeValue::Bool(true)),
            ],
        )?;
        let outbox: Item = HashMap::from([
            ("pk".into(), s(outbox_pk(message_id))),
            ("sk".into(), s(message_id)),
            ("created_at".into(), n(now_ms)),
        ]);
        self.transact("dynamodb retry message", vec![requeue, put(&self.table, outbox, None)?]).await
    }

    async fn delete_message(&self, m: &Message) -> Result<()> {
        self.delete_keys(message_keys(m)).await
    }

    async fn purge_due(&self, now_ms: i64, limit: usize) -> Result<u64> {
        let mut purged = 0u64;
        for shard in 0..OUTBOX_SHARDS {
            let r = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk < :due")
                .expression_attribute_values(":pk", s(format!("PURGE#{shard}")))
                .expression_attribute_values(":due", s(format!("{now_ms:013}~")))
                .limit(limit.min(100) as i32)
                .send()
                .await
                .map_err(backend("dynamodb query purge rows"))?;
            let rows: Vec<(String, String)> =
                r.items().iter().filter_map(|i| Some((get_s(i, "pk")?, get_s(i, "sk")?))).collect();
            let ids: Vec<String> =
                rows.iter().filter_map(|(_, sk)| sk.split_once('#').map(|(_, id)| id.to_string())).collect();
            let mut keys = rows.clone();
            for m in self.messages_by_id(&ids).await? {
                keys.extend(message_keys(&m));
            }
            self.delete_keys(keys).await?;
            purged += ids.len() as u64;
        }
        Ok(purged)
    }

    async fn post_context(&self, user_id: &str, conversation_id: &str, spend: SpendReads) -> Result<PostContext> {
        let key = |pk: String, sk: String| HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))]);
        let day = spend.day;
        let conv_key = (format!("CONV#{conversation_id}"), "CONV".to_string());
        let profile_key = (format!("USERID#{user_id}"), "PROFILE".to_string());
        let user_spend = (format!("USERID#{user_id}"), format!("SPEND#{day}"));
        let all_spend = (format!("SPEND#{day}"), "ALL".to_string());
        let wanted = [(&conv_key, true), (&profile_key, true), (&user_spend, spend.user), (&all_spend, spend.all)];
        let keys = wanted.iter().filter(|(_, w)| *w).map(|((pk, sk), _)| key(pk.clone(), sk.clone()));
        let items = self.batch_get(keys.collect()).await?;
        let find = |k: &(String, String)| {
            items.iter().find(|i| {
                get_s(i, "pk").as_deref() == Some(k.0.as_str()) && get_s(i, "sk").as_deref() == Some(k.1.as_str())
            })
        };
        Ok(PostContext {
            conversation: find(&conv_key).and_then(|i| {
                Some(Conversation {
                    id: conversation_id.to_string(),
                    user_id: get_s(i, "user_id")?,
                    created_at: get_n(i, "created_at"),
                })
            }),
            profile: find(&profile_key).map(profile_from),
            user_tokens_today: find(&user_spend).map_or(0, |i| get_n(i, "tokens").max(0) as u64),
            all_tokens_today: find(&all_spend).map_or(0, |i| get_n(i, "tokens").max(0) as u64),
        })
    }

    async fn charge_spend(&self, user_id: &str, day: i64, tokens: u64, user_cap: u64, all_cap: u64) -> Result<Charge> {
        if user_cap > 0 && tokens > user_cap {
            return Ok(Charge::OverUser);
        }
        if all_cap > 0 && tokens > all_cap {
            return Ok(Charge::OverAll);
        }
        // The user's count in a transaction with the account's tombstone check (nothing is
        // counted for a deleted account); conditional on the room left under the cap.
        let t = tokens as i64;
        let (expr, expires) = ("ADD tokens :t SET expires_at = :x", spend_expiry(day));
        let room = "attribute_not_exists(tokens) OR tokens <= :room";
        let mut values = vec![(":t", n(t)), (":x", n(expires))];
        if user_cap > 0 {
            values.push((":room", n(user_cap as i64 - t)));
        }
        let key = (format!("USERID#{user_id}"), format!("SPEND#{day}"));
        let user = update(&self.table, key, expr, (user_cap > 0).then_some(room), &[], values)?;
        let items = vec![not_gone(&self.table, user_id)?, user];
        match self.transact_which("dynamodb charge user spend", items).await? {
            None => {}
            Some(1) => return Ok(Charge::OverUser),
            // The account is deleted: its message goes with it; nothing to spend on it.
            Some(_) => return Ok(Charge::OverUser),
        }
        // Everyone's count apart, not in the transaction: one item every charge writes, where
        // transactions would conflict with each other; a plain update waits its turn instead.
        let mut all = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("SPEND#{day}")))
            .key("sk", s("ALL"))
            .update_expression(expr)
            .expression_attribute_values(":t", n(t))
            .expression_attribute_values(":x", n(expires))
            .return_values(ReturnValue::UpdatedNew);
        if all_cap > 0 {
            all = all.condition_expression(room).expression_attribute_values(":room", n(all_cap as i64 - t));
        }
        match all.send().await {
            Ok(out) => {
                let today = out.attributes.as_ref().map_or(0, |a| get_n(a, "tokens").max(0) as u64);
                Ok(Charge::Charged { all_today: today })
            }
            Err(e) => {
                let over = e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception());
                // Undo the user's part: the message is not sent (or not now).
                self.add_user_spend(user_id, day, -t).await?;
                if over {
                    Ok(Charge::OverAll)
                } else {
                    Err(backend("dynamodb charge spend")(e))
                }
            }
        }
    }

    async fn add_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()> {
        self.add_user_spend(user_id, day, delta).await?;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("SPEND#{day}")))
            .key("sk", s("ALL"))
            .update_expression("ADD tokens :t SET expires_at = :x")
            .expression_attribute_values(":t", n(delta))
            .expression_attribute_values(":x", n(spend_expiry(day)))
            .send()
            .await
            .map_err(backend("dynamodb add spend"))?;
        Ok(())
    }

    async fn take_slot(&self, user_id: &str, cap: u32, now_ms: i64) -> Result<bool> {
        let take = || {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(format!("USERID#{user_id}")))
                .key("sk", s("INFLIGHT"))
                .update_expression("ADD n :one SET touched = :now")
                .condition_expression("attribute_not_exists(n) OR n < :cap")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":cap", n(i64::from(cap)))
                .send()
        };
        let refused = |e: &aws_sdk_dynamodb::error::SdkError<_, _>| {
            e.as_service_error().is_some_and(|e: &aws_sdk_dynamodb::operation::update_item::UpdateItemError| {
                e.is_conditional_check_failed_exception()
            })
        };
        match take().await {
            Ok(_) => return Ok(true),
            Err(e) if refused(&e) => {}
            Err(e) => return Err(backend("dynamodb take in-flight slot")(e)),
        }
        // All taken. Untouched for 10 minutes, the count has leaked (no answer or failure gave a
        // slot back in that time): it starts again at this message.
        let Some(item) = self.get(format!("USERID#{user_id}"), "INFLIGHT").await? else { return Ok(false) };
        let touched = get_n(&item, "touched");
        if now_ms - touched < SLOT_LEAK_MS {
            return Ok(false);
        }
        let reset = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("USERID#{user_id}")))
            .key("sk", s("INFLIGHT"))
            .update_expression("SET n = :one, touched = :now")
            .condition_expression("touched = :then")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":then", n(touched))
            .send()
            .await;
        match reset {
            Ok(_) => Ok(true),
            Err(e) if refused(&e) => Ok(false),
            Err(e) => Err(backend("dynamodb reset in-flight slots")(e)),
        }
    }

    async fn free_slot(&self, user_id: &str, now_ms: i64) -> Result<()> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("USERID#{user_id}")))
            .key("sk", s("INFLIGHT"))
            .update_expression("ADD n :minus SET touched = :now")
            .condition_expression("n > :zero")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match r {
            // Already at 0 (a reset, or a redriven message given back twice): nothing to give.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            r => r.map(|_| ()).map_err(backend("dynamodb free in-flight slot")),
        }
    }

    async fn take_rate(&self, key: &str, limit: u32, window_ms: i64, now_ms: i64) -> Result<Option<i64>> {
        let window = now_ms.div_euclid(window_ms);
        let ends = (window + 1) * window_ms;
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("RATE#{key}")))
            .key("sk", s(window.to_string()))
            .update_expression("ADD uses :one SET expires_at = :x")
            .condition_expression("attribute_not_exists(uses) OR uses < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(i64::from(limit)))
            // Gone with DynamoDB's TTL a day after the window.
            .expression_attribute_values(":x", n(ends / 1000 + 86_400))
            .send()
            .await;
        match r {
            Ok(_) => Ok(None),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(Some((ends - now_ms).max(1)))
            }
            Err(e) => Err(backend("dynamodb take rate")(e)),
        }
    }

    async fn outbox_pending(&self, created_before_ms: i64, limit: usize) -> Result<Vec<String>> {
        let mut out: Vec<(i64, String)> = Vec::new();
        for shard in 0..OUTBOX_SHARDS {
            let mut start = None;
            loop {
                let r = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .filter_expression("created_at <= :before")
                    .expression_attribute_values(":pk", s(format!("OUTBOX#{shard}")))
                    .expression_attribute_values(":before", n(created_before_ms))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(backend("dynamodb query outbox"))?;
                out.extend(r.items().iter().filter_map(|i| Some((get_n(i, "created_at"), get_s(i, "sk")?))));
                start = r.last_evaluated_key;
                if start.is_none() || out.len() >= limit * OUTBOX_SHARDS as usize {
                    break;
                }
            }
        }
        out.sort();
        Ok(out.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    /// A DynamoDB transaction cannot send to SQS: the outbox row covers the send.
    fn enqueues_on_record(&self) -> bool {
        false
    }

    async fn outbox_remove(&self, message_id: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(outbox_pk(message_id)))
            .key("sk", s(message_id))
            .send()
            .await
            .map_err(backend("dynamodb delete outbox row"))?;
        Ok(())
    }

    async fn outbox_len(&self) -> Result<u64> {
        let mut total = 0u64;
        for shard in 0..OUTBOX_SHARDS {
            let mut start = None;
            loop {
                let r = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(format!("OUTBOX#{shard}")))
                    .select(Select::Count)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(backend("dynamodb count outbox"))?;
                total += r.count.max(0) as u64;
                start = r.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(total)
    }

    async fn claim(
        &self,
        message_id: &str,
        claim_token: &str,
        now_ms: i64,
        lease_until_ms: i64,
        last_delivery: bool,
    ) -> Result<Claim> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("MSG#{message_id}")))
            .key("sk", s("MSG"))
            .update_expression(
                "SET #s = :p, claim_token = :t, lease_until = :l, updated_at = :now, last_delivery = :last \
                 REMOVE dead_lettered",
            )
            .condition_expression(
                "attribute_exists(pk) AND (#s = :q OR (#s = :f AND attribute_exists(dead_lettered)) \
                 OR (#s = :p AND lease_until < :now))",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":p", s("processing"))
            .expression_attribute_values(":q", s("queued"))
            .expression_attribute_values(":f", s("failed"))
            .expression_attribute_values(":t", s(claim_token))
            .expression_attribute_values(":l", n(lease_until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":last", AttributeValue::Bool(last_delivery))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match r {
            Ok(out) => match out.attributes.as_ref().and_then(message_from) {
                Some(m) => Ok(Claim::Claimed(m)),
                None => Err(StoreError::Backend(anyhow!("dynamodb claim returned no message"))),
            },
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                match self.get(format!("MSG#{message_id}"), "MSG").await? {
                    None => Ok(Claim::Missing),
                    Some(i) if get_s(&i, "status").as_deref() == Some(Status::Answered.as_str()) => Ok(Claim::Answered),
                    Some(i) if get_s(&i, "status").as_deref() == Some(Status::Failed.as_str()) => Ok(Claim::Failed),
                    Some(i) => Ok(Claim::Busy { lease_until_ms: get_n(&i, "lease_until") }),
                }
            }
            Err(e) => Err(backend("dynamodb claim")(e)),
        }
    }

    async fn extend_lease(&self, message_id: &str, claim_token: &str, lease_until_ms: i64) -> Result<bool> {
        self.update_message(
            message_id,
            "SET lease_until = :l",
            "#s = :p AND claim_token = :t",
            vec![(":l", n(lease_until_ms)), (":p", s("processing")), (":t", s(claim_token))],
        )
        .await
    }

    async fn complete(&self, message_id: &str, claim_token: &str, answer: &str, now_ms: i64) -> Result<bool> {
        self.update_message(
            message_id,
            "SET #s = :a, answer = :ans, updated_at = :now REMOVE #e",
            "#s = :p AND claim_token = :t",
            vec![
                (":a", s("answered")),
                (":ans", s(answer)),
                (":now", n(now_ms)),
                (":p", s("processing")),
                (":t", s(claim_token)),
            ],
        )
        .await
    }

    async fn fail(
        &self,
        message_id: &str,
        claim_token: &str,
        reason: &str,
        now_ms: i64,
        dead_lettered: bool,
    ) -> Result<bool> {
        let set = if dead_lettered {
            "SET #s = :fl, #e = :err, updated_at = :now, dead_lettered = :now REMOVE claim_token"
        } else {
            "SET #s = :fl, #e = :err, updated_at = :now REMOVE claim_token"
        };
        self.update_message(
            message_id,
            set,
            "#s = :p AND claim_token = :t",
            vec![
                (":fl", s("failed")),
                (":err", s(reason)),
                (":now", n(now_ms)),
                (":p", s("processing")),
                (":t", s(claim_token)),
            ],
        )
        .await
    }

    async fn release(&self, message_id: &str, claim_token: &str, now_ms: i64) -> Result<bool> {
        self.update_message(
            message_id,
            "SET #s = :q, lease_until = :zero, updated_at = :now REMOVE claim_token",
            "#s = :p AND claim_token = :t",
            vec![
                (":q", s("queued")),
                (":zero", n(0)),
                (":now", n(now_ms)),
                (":p", s("processing")),
                (":t", s(claim_token)),
            ],
        )
        .await
    }
}

fn profile_from(i: &Item) -> Profile {
    Profile {
        display_name: get_s(i, "display_name"),
        keep_history: i.get("keep_history").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        consented_at: i.get("consented_at").map(|_| get_n(i, "consented_at")),
    }
}

/// Every item that names a message: the message, its conversation's pointer, its outbox row,
/// its idempotency key and its purge row.
fn message_keys(m: &Message) -> Vec<(String, String)> {
    let mut keys = vec![
        (format!("MSG#{}", m.id), "MSG".to_string()),
        (format!("CONV#{}", m.conversation_id), format!("MSG#{}", m.id)),
        (outbox_pk(&m.id), m.id.clone()),
    ];
    if let Some(scope) = &m.idem_scope {
        keys.push((format!("IDEM#{scope}"), "IDEM".to_string()));
    }
    if let Some(at) = m.purge_at {
        keys.push(purge_key(&m.id, at));
    }
    keys
}
