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
use self::item::{get_n, get_s, message_from, n, outbox_pk, put, s, Item};
use self::table::backend;
use super::{Claim, IdempotencyKey, Recorded, Result, Store, StoreError};
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
        let r = self
            .client
            .transact_write_items()
            .transact_items(put(&self.table, main, Some("attribute_not_exists(pk)"))?)
            .transact_items(put(&self.table, by_id, Some("attribute_not_exists(pk)"))?)
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            // The id is fresh, so only the email can collide.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(backend("dynamodb put user")(e)),
        }
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        match self.get(format!("USERID#{id}"), "USER").await?.and_then(|i| get_s(&i, "email")) {
            Some(email) => Ok(self.user_by_email(&email).await?.filter(|u| u.id == id)),
            None => Ok(None),
        }
    }

    async fn remember_user(&self, user: &User) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("USERID#{}", user.id)))
            .item("sk", s("USER"))
            .item("email", s(&user.email))
            .send()
            .await
            .map_err(backend("dynamodb put user id"))?;
        Ok(())
    }

    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>> {
        Ok(self.get(format!("USERID#{user_id}"), "PROFILE").await?.map(|i| Profile {
            display_name: get_s(&i, "display_name"),
            keep_history: i.get("keep_history").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
            consented_at: i.get("consented_at").map(|_| get_n(&i, "consented_at")),
        }))
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
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend("dynamodb put profile"))?;
        Ok(())
    }

    async fn delete_user(&self, user: &User) -> Result<()> {
        // Conversations and their messages first, the login item last, so an interrupted
        // deletion can be finished by signing in and deleting again.
        for c in self.list_conversations(&user.id).await? {
            let mut keys = Vec::new();
            for (pk, sk) in self.partition_keys(format!("CONV#{}", c.id)).await? {
                if let Some(mid) = sk.strip_prefix("MSG#") {
                    keys.push((format!("MSG#{mid}"), "MSG".to_string()));
                }
                keys.push((pk, sk));
            }
            self.delete_keys(keys).await?;
            self.delete_keys(vec![(format!("USERCONVS#{}", user.id), format!("CONV#{}", c.id))]).await?;
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
            Some(User { id: get_s(&i, "id")?, email: get_s(&i, "email")?, password_hash: get_s(&i, "password_hash")? })
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
        self.client
            .transact_write_items()
            .transact_items(put(&self.table, token, None)?)
            .transact_items(put(&self.table, index, None)?)
            .send()
            .await
            .map_err(backend("dynamodb put token"))?;
        Ok(())
    }

    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>> {
        Ok(self
            .get(format!("TOKEN#{token_hash}"), "TOKEN")
            .await?
            .filter(|i| get_n(i, "expires_at_ms") > now_ms)
            .and_then(|i| get_s(&i, "user_id")))
    }

    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>> {
        let items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :token)")
            .consistent_read(true)
            .expression_attribute_values(":pk", s(format!("USERID#{user_id}")))
            .expression_attribute_values(":token", s("TOKEN#"))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(backend("dynamodb query tokens"))?;
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
        // tokens whose own item is there count.
        let mut live = Vec::new();
        for t in out.into_iter().filter(|t| t.expires_at > now_ms) {
            if self.get(format!("TOKEN#{}", t.hash), "TOKEN").await?.is_some() {
                live.push(t);
            }
        }
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
        self.client
            .transact_write_items()
            .transact_items(put(&self.table, main, Some("attribute_not_exists(pk)"))?)
            .transact_items(put(&self.table, index, None)?)
            .send()
            .await
            .map_err(backend("dynamodb write conversation"))?;
        Ok(())
    }

    async fn list_conversations(&self, user_id: &str) -> Result<Vec<Conversation>> {
        let items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("USERCONVS#{user_id}")))
            .scan_index_forward(false)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(backend("dynamodb query conversations"))?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let id = get_s(i, "sk")?.strip_prefix("CONV#")?.to_string();
                Some(Conversation { id, user_id: user_id.to_string(), created_at: get_n(i, "created_at") })
            })
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

    async fn list_messages(&self, conversation_id: &str) -> Result<Vec<Message>> {
        let items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
            .expression_attribute_values(":pk", s(format!("CONV#{conversation_id}")))
            .expression_attribute_values(":m", s("MSG#"))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(backend("dynamodb query messages"))?;
        let ids: Vec<String> =
            items.iter().filter_map(|i| get_s(i, "sk")?.strip_prefix("MSG#").map(str::to_string)).collect();
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
            page.retain(|m| m.status == Status::Answered);
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
        let message: Item = HashMap::from([
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
        let mut tx = self.client.transact_write_items();
        if let Some(k) = key {
            let idem: Item = HashMap::from([
                ("pk".into(), s(format!("IDEM#{}", k.scope))),
                ("sk".into(), s("IDEM")),
                ("fingerprint".into(), s(&k.fingerprint)),
                ("message_id".into(), s(&m.id)),
                ("expires_at".into(), n(m.created_at / 1000 + 7 * 24 * 3600)),
            ]);
            tx = tx.transact_items(put(&self.table, idem, Some("attribute_not_exists(pk)"))?);
        }
        let r = tx
            .transact_items(put(&self.table, message, Some("attribute_not_exists(pk)"))?)
            .transact_items(put(&self.table, pointer, None)?)
            .transact_items(put(&self.table, outbox, None)?)
            .send()
            .await;
        match r {
            Ok(_) => Ok(Recorded::New),
            Err(e) => {
                let cancelled = e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception());
                if let (true, Some(k)) = (cancelled, key) {
                    if let Some((message_id, fingerprint)) = self.idempotency_key(&k.scope).await? {
                        return Ok(Recorded::Existing { message_id, fingerprint });
                    }
                }
                Err(backend("dynamodb record message")(e))
            }
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

    async fn claim(&self, message_id: &str, claim_token: &str, now_ms: i64, lease_until_ms: i64) -> Result<Claim> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("MSG#{message_id}")))
            .key("sk", s("MSG"))
            .update_expression("SET #s = :p, claim_token = :t, lease_until = :l, updated_at = :now")
            .condition_expression("attribute_exists(pk) AND (#s = :q OR #s = :f OR (#s = :p AND lease_until < :now))")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":p", s("processing"))
            .expression_attribute_values(":q", s("queued"))
            .expression_attribute_values(":f", s("failed"))
            .expression_attribute_values(":t", s(claim_token))
            .expression_attribute_values(":l", n(lease_until_ms))
            .expression_attribute_values(":now", n(now_ms))
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

    async fn fail(&self, message_id: &str, claim_token: &str, reason: &str, now_ms: i64) -> Result<bool> {
        self.update_message(
            message_id,
            "SET #s = :fl, #e = :err, updated_at = :now REMOVE claim_token",
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
