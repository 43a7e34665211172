//! Items of the table: attribute values, the outbox's shard key, a message read back from its
//! item, and the transactional put every multi-item write uses.

use std::collections::HashMap;

use anyhow::anyhow;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use crate::model::Message;
use crate::store::{status_of, StoreError};

pub(super) type Item = HashMap<String, AttributeValue>;

/// Partitions of the outbox: `OUTBOX#0` .. `OUTBOX#7`.
pub const OUTBOX_SHARDS: u32 = 8;

pub(super) fn outbox_pk(message_id: &str) -> String {
    let h = message_id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("OUTBOX#{}", h % OUTBOX_SHARDS)
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub(super) fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}
pub(super) fn get_n(item: &Item, k: &str) -> i64 {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub(super) fn message_from(item: &Item) -> Option<Message> {
    Some(Message {
        id: get_s(item, "id")?,
        conversation_id: get_s(item, "conversation_id")?,
        user_id: get_s(item, "user_id")?,
        content: get_s(item, "content").unwrap_or_default(),
        status: status_of(&get_s(item, "status")?),
        answer: get_s(item, "answer"),
        error: get_s(item, "error"),
        created_at: get_n(item, "created_at"),
        updated_at: get_n(item, "updated_at"),
    })
}

pub(super) fn put(
    table: &str,
    item: Item,
    condition: Option<&str>,
) -> std::result::Result<TransactWriteItem, StoreError> {
    let p = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .set_condition_expression(condition.map(str::to_string))
        .build()
        .map_err(|e| StoreError::Backend(anyhow!("build put: {e}")))?;
    Ok(TransactWriteItem::builder().put(p).build())
}
