//! The requests several operations share: a consistent read of one item, a batch read (of
//! messages), a page of a partition, the keys of a partition, deletes by key, and transactions
//! tried again on a conflict. Errors become `StoreError::Backend` with the request named
//! ([`backend`]); [`condition_failed`] tells an update refused for its condition.

use anyhow::anyhow;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{KeysAndAttributes, TransactWriteItem};

use super::item::{get_s, key_item, message_from, s, Item};
use super::DynamoStore;
use crate::model::Message;
use crate::store::{Result, StoreError};

impl DynamoStore {
    /// One item by key, read consistently.
    pub(super) async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("dynamodb get item"))?;
        Ok(out.item)
    }

    /// The `UpdateItem` request of the item (`pk`, `sk`), for the caller to complete and send.
    pub(super) fn update_request(&self, pk: String, sk: impl Into<String>) -> UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.table).key("pk", s(pk)).key("sk", s(sk))
    }

    /// A `Query` of partition `pk` with `key_condition` (`:pk` bound to `pk`), for the caller to
    /// complete and send.
    pub(super) fn query_request(&self, key_condition: &str, pk: String) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression(key_condition)
            .expression_attribute_values(":pk", s(pk))
    }

    /// Items by key (BatchGetItem, 100 keys a request, consistent), in no particular order;
    /// keys without an item are left out.
    pub(super) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Backend(anyhow!("build batch get: {e}")))?,
            );
            while let Some(req) = pending.take() {
                let r = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(backend("dynamodb batch get"))?;
                if let Some(items) = r.responses.and_then(|mut m| m.remove(&self.table)) {
                    out.extend(items);
                }
                pending = r.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).filter(|k| !k.keys.is_empty());
            }
        }
        Ok(out)
    }

    /// Messages by id, sorted by creation.
    pub(super) async fn messages_by_id(&self, ids: &[String]) -> Result<Vec<Message>> {
        let keys = ids.iter().map(|id| key_item(format!("MSG#{id}"), "MSG")).collect();
        let mut out: Vec<Message> = self.batch_get(keys).await?.iter().filter_map(message_from).collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// A page of partition `pk`: the newest `limit` items whose sort key is `prefix` + an id
    /// below `before` (ids are UUIDv7, so they sort by time), newest first, as (id, item).
    pub(super) async fn newest(
        &self,
        pk: String,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
        consistent: bool,
    ) -> Result<Vec<(String, Item)>> {
        // BETWEEN is inclusive: one more is read, in case `before` itself is there.
        let hi = format!("{prefix}{}", before.unwrap_or("~"));
        let r = self
            .query_request("pk = :pk AND sk BETWEEN :lo AND :hi", pk)
            .expression_attribute_values(":lo", s(prefix))
            .expression_attribute_values(":hi", s(hi))
            .scan_index_forward(false)
            .limit(limit.saturating_add(1).min(1000) as i32)
            .consistent_read(consistent)
            .send()
            .await
            .map_err(backend("dynamodb query a page"))?;
        Ok(r.items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| Some((get_s(&i, "sk")?.strip_prefix(prefix)?.to_string(), i)))
            .filter(|(id, _)| before.is_none_or(|b| id.as_str() < b))
            .take(limit)
            .collect())
    }

    /// Every item of partition `pk` (all sort keys), as (pk, sk) keys.
    pub(super) async fn partition_keys(&self, pk: String) -> Result<Vec<(String, String)>> {
        let items = self
            .query_request("pk = :pk", pk)
            .projection_expression("pk, sk")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(backend("dynamodb query partition"))?;
        Ok(items.iter().filter_map(|i| Some((get_s(i, "pk")?, get_s(i, "sk")?))).collect())
    }

    /// Deletes items by key, 25 at a time in parallel. `DeleteItem` rather than
    /// `BatchWriteItem`, so the api's IAM policy needs no extra action.
    pub(super) async fn delete_keys(&self, keys: Vec<(String, String)>) -> Result<()> {
        for chunk in keys.chunks(25) {
            let deletes = chunk.iter().map(|(pk, sk)| {
                self.client.delete_item().table_name(&self.table).key("pk", s(pk)).key("sk", s(sk)).send()
            });
            futures_util::future::try_join_all(deletes).await.map_err(backend("dynamodb delete item"))?;
        }
        Ok(())
    }

    /// Writes `items` in one transaction: true when written, false when one of its conditions
    /// failed. A cancellation for a conflict with another transaction on one of the items (two
    /// posts checking one conversation, two answers adding to one spend item) is tried again,
    /// up to 5 times with growing pauses, since the other one ends in milliseconds.
    pub(super) async fn transact(&self, what: &'static str, items: Vec<TransactWriteItem>) -> Result<bool> {
        Ok(self.transact_which(what, items).await?.is_none())
    }

    /// Like [`Self::transact`]; on a failed condition, the index of the first item whose
    /// condition failed.
    pub(super) async fn transact_which(
        &self,
        what: &'static str,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<usize>> {
        let mut attempt = 0u32;
        loop {
            let r = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            let e = match r {
                Ok(_) => return Ok(None),
                Err(e) => e,
            };
            let reasons: Vec<String> = match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    c.cancellation_reasons().iter().filter_map(|r| r.code().map(str::to_string)).collect()
                }
                _ => return Err(backend(what)(e)),
            };
            if let Some(i) = reasons.iter().position(|c| c == "ConditionalCheckFailed") {
                return Ok(Some(i));
            }
            if attempt < 5 && reasons.iter().any(|c| c == "TransactionConflict") {
                attempt += 1;
                let pause = 20u64 << attempt;
                tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(pause / 2..=pause))).await;
                continue;
            }
            return Err(backend(what)(e));
        }
    }
}

pub(super) fn backend<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Backend(anyhow!("{what}: {}", DisplayErrorContext(e)))
}

/// True when an update was refused because its condition failed.
pub(super) fn condition_failed<R>(e: &SdkError<UpdateItemError, R>) -> bool {
    e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception())
}
