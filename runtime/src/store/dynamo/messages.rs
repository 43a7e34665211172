//! Conversations and messages: each written with its pointer in its owner's partition; a
//! message recorded with its outbox row and idempotency key in one transaction, retried, read
//! back (pages, the history sent with a prompt), deleted with every item that names it, and
//! purged when kept without history; the outbox the relay reads.

use std::collections::HashMap;

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Select, TransactWriteItem};

use super::item::{
    conversation_from, get_n, get_s, key_item, message_from, message_keys, n, not_gone, outbox_item, outbox_pk,
    purge_key, put, s, update, Item, OUTBOX_SHARDS, PARTIAL, PARTIAL_TTL_SECS,
};
use super::table::{backend, condition_failed};
use super::DynamoStore;
use crate::model::{Conversation, Message, Status};
use crate::store::{IdempotencyKey, MessageStore, Recorded, Requeue, Result, Stop, StoreError};

#[async_trait]
impl MessageStore for DynamoStore {
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
            .map(|(id, i)| Conversation {
                id,
                user_id: user_id.to_string(),
                created_at: get_n(&i, "created_at"),
                title: get_s(&i, "title"),
            })
            .collect())
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>> {
        Ok(self.get(format!("CONV#{id}"), "CONV").await?.and_then(|i| conversation_from(id, &i)))
    }

    async fn set_title(&self, c: &Conversation, title: &str, if_untitled: bool) -> Result<bool> {
        // Both items: the conversation's (a read of it) and its pointer in the user's
        // partition (the list); each only while the conversation is there.
        let condition =
            if if_untitled { "attribute_exists(pk) AND attribute_not_exists(title)" } else { "attribute_exists(pk)" };
        let set = |key: (String, String)| {
            update(&self.table, key, "SET title = :t", Some(condition), &[], vec![(":t", s(title))])
        };
        let items = vec![
            set((format!("CONV#{}", c.id), "CONV".to_string()))?,
            set((format!("USERCONVS#{}", c.user_id), format!("CONV#{}", c.id)))?,
        ];
        self.transact("dynamodb write conversation title", items).await
    }

    async fn delete_conversation(&self, c: &Conversation) -> Result<()> {
        self.delete_conversation_items(&c.user_id, &c.id).await
    }

    async fn list_messages(&self, conversation_id: &str, before: Option<&str>, limit: usize) -> Result<Vec<Message>> {
        let page = self.newest(format!("CONV#{conversation_id}"), "MSG#", before, limit, true).await?;
        let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
        self.messages_by_id(&ids).await
    }

    /// The message and its partial answer in one consistent query of their partition: while it
    /// is being answered, its answer is the text written so far.
    async fn get_message(&self, id: &str) -> Result<Option<Message>> {
        let out = self
            .query_request("pk = :pk", format!("MSG#{id}"))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("dynamodb query message"))?;
        let items = out.items();
        let of = |sk: &str| items.iter().find(|i| get_s(i, "sk").as_deref() == Some(sk));
        let Some(mut m) = of("MSG").and_then(message_from) else { return Ok(None) };
        if m.status == Status::Processing {
            if let Some(text) = of(PARTIAL).and_then(|p| get_s(p, "text")) {
                m.answer = Some(text);
            }
        }
        Ok(Some(m))
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
                .query_request("pk = :pk AND sk BETWEEN :lo AND :hi", format!("CONV#{conversation_id}"))
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
        // The conversation is still there and the user's: deleting an account deletes each
        // conversation item before listing its messages, so no message lands after that list.
        let conversation = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(format!("CONV#{}", m.conversation_id)))
            .key("sk", s("CONV"))
            .condition_expression("attribute_exists(pk) AND user_id = :u")
            .expression_attribute_values(":u", s(&m.user_id))
            .build()
            .map_err(|e| StoreError::Backend(anyhow!("build condition check: {e}")))?;
        let mut items = vec![TransactWriteItem::builder().condition_check(conversation).build()];
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
            items.push(put(&self.table, key_item(pk, sk), None)?);
        }
        items.push(put(&self.table, message, Some("attribute_not_exists(pk)"))?);
        items.push(put(&self.table, pointer, None)?);
        items.push(put(&self.table, outbox_item(&m.id, m.created_at), None)?);
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

    async fn requeue_message(&self, message_id: &str, now_ms: i64, from: Requeue) -> Result<bool> {
        let mut values = vec![(":q", s("queued")), (":zero", n(0)), (":now", n(now_ms))];
        let (answer, condition) = match from {
            Requeue::Failed => {
                values.extend([(":f", s("failed")), (":p", s("processing")), (":yes", AttributeValue::Bool(true))]);
                ("", "#s = :f OR (#s = :p AND last_delivery = :yes AND lease_until < :now)")
            }
            Requeue::Answered => {
                values.push((":a", s("answered")));
                ("answer, ", "#s = :a")
            }
        };
        let expression = format!(
            "SET #s = :q, lease_until = :zero, updated_at = :now \
             REMOVE {answer}#e, claim_token, dead_lettered, last_delivery, stopped, stop_requested"
        );
        let key = (format!("MSG#{message_id}"), "MSG".into());
        let requeue =
            update(&self.table, key, &expression, Some(condition), &[("#s", "status"), ("#e", "error")], values)?;
        let outbox = put(&self.table, outbox_item(message_id, now_ms), None)?;
        self.transact("dynamodb requeue message", vec![requeue, outbox]).await
    }

    /// A DynamoDB transaction cannot send to SQS: the outbox row covers the send.
    fn enqueues_on_record(&self) -> bool {
        false
    }

    /// A queued message is answered (stopped, no text) by one conditional update; one being
    /// answered is marked by another. Its outbox row or queue message, if any, finds it
    /// answered.
    async fn request_stop(&self, message_id: &str, now_ms: i64) -> Result<Stop> {
        let key = format!("MSG#{message_id}");
        let stopped = self
            .update_request(key.clone(), "MSG")
            .update_expression("SET #s = :a, answer = :empty, stopped = :yes, updated_at = :now")
            .condition_expression("#s = :q")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":a", s("answered"))
            .expression_attribute_values(":q", s("queued"))
            .expression_attribute_values(":empty", s(""))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match stopped {
            Ok(_) => return Ok(Stop::Stopped),
            Err(e) if condition_failed(&e) => {}
            Err(e) => return Err(backend("dynamodb update item (stop a queued message)")(e)),
        }
        let marked = self
            .update_request(key.clone(), "MSG")
            .update_expression("SET stop_requested = :now")
            .condition_expression("#s = :p")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":p", s("processing"))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        let claim_token = match marked {
            Ok(out) => out.attributes.as_ref().and_then(|i| get_s(i, "claim_token")).unwrap_or_default(),
            Err(e) if condition_failed(&e) => return Ok(Stop::NotInFlight),
            Err(e) => return Err(backend("dynamodb update item (stop a message being answered)")(e)),
        };
        // The mark the worker's next partial write is refused on: for this attempt only (a
        // later one, after a regenerate, writes under another claim token).
        self.update_request(key, PARTIAL)
            .update_expression("SET stop_token = :t, expires_at = :exp")
            .expression_attribute_values(":t", s(claim_token))
            .expression_attribute_values(":exp", n(now_ms / 1000 + PARTIAL_TTL_SECS))
            .send()
            .await
            .map_err(backend("dynamodb update item (the partial answer's stop mark)"))?;
        Ok(Stop::Stopping)
    }

    async fn delete_message(&self, m: &Message) -> Result<()> {
        self.delete_keys(message_keys(m)).await
    }

    async fn purge_due(&self, now_ms: i64, limit: usize) -> Result<u64> {
        let mut purged = 0u64;
        for shard in 0..OUTBOX_SHARDS {
            let r = self
                .query_request("pk = :pk AND sk < :due", format!("PURGE#{shard}"))
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

    async fn outbox_pending(&self, created_before_ms: i64, limit: usize) -> Result<Vec<String>> {
        let mut out: Vec<(i64, String)> = Vec::new();
        for shard in 0..OUTBOX_SHARDS {
            let mut start = None;
            loop {
                let r = self
                    .query_request("pk = :pk", format!("OUTBOX#{shard}"))
                    .filter_expression("created_at <= :before")
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
                    .query_request("pk = :pk", format!("OUTBOX#{shard}"))
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
}
