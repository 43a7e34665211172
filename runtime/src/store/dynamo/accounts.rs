//! Accounts: users (by email, and by id), profiles, session and API tokens (each with its entry
//! in the user's index of tokens), and the deletion of an account with everything it owns.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{
    get_n, get_s, gone_pk, key_item, message_keys, n, not_gone, profile_from, put, s, update, user_from, user_id_item,
    Item,
};
use super::table::backend;
use super::DynamoStore;
use crate::model::{Profile, TokenInfo, User};
use crate::store::{AccountStore, Result, StoreError, TOKENS_READ};

#[async_trait]
impl AccountStore for DynamoStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        let main: Item = HashMap::from([
            ("pk".into(), s(format!("USER#{}", user.email))),
            ("sk".into(), s("USER")),
            ("id".into(), s(&user.id)),
            ("email".into(), s(&user.email)),
            ("password_hash".into(), s(&user.password_hash)),
        ]);
        let items = vec![
            put(&self.table, main, Some("attribute_not_exists(pk)"))?,
            put(&self.table, user_id_item(user), Some("attribute_not_exists(pk)"))?,
        ];
        // The id is fresh, so only the email can collide.
        self.transact("dynamodb put user", items).await?.then_some(()).ok_or(StoreError::Conflict)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        Ok(self.get(format!("USER#{email}"), "USER").await?.as_ref().and_then(user_from))
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        match self.get(format!("USERID#{id}"), "USER").await?.and_then(|i| get_s(&i, "email")) {
            Some(email) => Ok(self.user_by_email(&email).await?.filter(|u| u.id == id)),
            None => Ok(None),
        }
    }

    async fn remember_user(&self, user: &User) -> Result<()> {
        // With the tombstone's check: a sign-in that passed its checks just before the
        // account's deletion does not write the email back after it.
        let items = vec![not_gone(&self.table, &user.id)?, put(&self.table, user_id_item(user), None)?];
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
            self.delete_conversation_items(&user.id, c).await?;
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

    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()> {
        self.update_request(format!("USER#{}", user.email), "USER")
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
            .query_request("pk = :pk AND begins_with(sk, :token)", format!("USERID#{user_id}"))
            .consistent_read(true)
            .expression_attribute_values(":token", s("TOKEN#"))
            .into_paginator()
            .items()
            .send();
        let mut items: Vec<Item> = Vec::new();
        while items.len() < TOKENS_READ {
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
        let keys = out.iter().map(|t| key_item(format!("TOKEN#{}", t.hash), "TOKEN")).collect();
        let found: HashSet<String> = self
            .batch_get(keys)
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
}

impl DynamoStore {
    /// Deletes conversation `c` of `user_id`, its messages and every item naming them; each
    /// step idempotent, so that a deletion cut short is finished by the next.
    pub(super) async fn delete_conversation_items(&self, user_id: &str, c: &str) -> Result<()> {
        // The conversation item first: a message can no longer be written into it (its write
        // checks the item), so the partition read after it lists every message.
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
        self.delete_keys(vec![(format!("USERCONVS#{user_id}"), format!("CONV#{c}"))]).await
    }
}
