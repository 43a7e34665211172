//! Items of the table (the layout in `mod.rs`) in code: attribute values, keys (the outbox's
//! and purge rows' shards, the tombstone), items read back (message, user, profile,
//! conversation), the items more than one write makes, and the transaction items (put, update,
//! tombstone check) every multi-item write uses.

use std::collections::HashMap;

use anyhow::anyhow;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};

use crate::model::{now_ms, sha256_hex, shown_status, Conversation, Message, Profile, User, SET_ASIDE};
use crate::store::{status_of, StoreError};

pub(super) type Item = HashMap<String, AttributeValue>;

/// Partitions of the outbox: `OUTBOX#0` .. `OUTBOX#7`.
pub const OUTBOX_SHARDS: u32 = 8;

pub(super) fn outbox_pk(message_id: &str) -> String {
    let h = message_id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("OUTBOX#{}", h % OUTBOX_SHARDS)
}

/// The tombstone of a deleted (or being deleted) account: named by a hash of the id, holding
/// nothing else; every write for the account checks it is absent. Kept a day (TTL).
pub(super) fn gone_pk(user_id: &str) -> String {
    format!("GONE#{}", sha256_hex(user_id.as_bytes()))
}

/// The row that deletes a message kept without history at its `purge_at` (ms):
/// `PURGE#{shard}` / `{purge_at, 13 digits}#{id}`, so a shard's due rows are a key range.
pub(super) fn purge_key(message_id: &str, purge_at: i64) -> (String, String) {
    (outbox_pk(message_id).replacen("OUTBOX", "PURGE", 1), format!("{purge_at:013}#{message_id}"))
}

/// An item's key, as a request names it.
pub(super) fn key_item(pk: String, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// The sort key of a message's partial answer, beside the message (`MSG#{id}`): the text a
/// worker has written so far, in an item of its own so that each write is billed by the
/// answer's size, not by the prompt's.
pub(super) const PARTIAL: &str = "PARTIAL";
/// A partial answer's item expires (TTL) a day after its last write, if the worker that wrote
/// it died before deleting it (`forget_partial`); the message's deletion deletes it too.
pub(super) const PARTIAL_TTL_SECS: i64 = 24 * 3600;

/// Every item that names a message: the message, its partial answer, its conversation's
/// pointer, its outbox row, its idempotency key and its purge row.
pub(super) fn message_keys(m: &Message) -> Vec<(String, String)> {
    let mut keys = vec![
        (format!("MSG#{}", m.id), "MSG".to_string()),
        (format!("MSG#{}", m.id), PARTIAL.to_string()),
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
    let stored = status_of(&get_s(item, "status")?);
    let last_delivery = item.get("last_delivery").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
    let status = shown_status(stored, last_delivery, get_n(item, "lease_until"), now_ms());
    Some(Message {
        id: get_s(item, "id")?,
        conversation_id: get_s(item, "conversation_id")?,
        user_id: get_s(item, "user_id")?,
        content: get_s(item, "content").unwrap_or_default(),
        status,
        answer: get_s(item, "answer"),
        stopped: item.get("stopped").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        stop_requested: item.contains_key("stop_requested"),
        error: if status == stored { get_s(item, "error") } else { Some(SET_ASIDE.to_string()) },
        created_at: get_n(item, "created_at"),
        updated_at: get_n(item, "updated_at"),
        purge_at: item.get("purge_at").map(|_| get_n(item, "purge_at")),
        idem_scope: get_s(item, "idem"),
    })
}

pub(super) fn user_from(i: &Item) -> Option<User> {
    Some(User {
        id: get_s(i, "id")?,
        email: get_s(i, "email")?,
        password_hash: get_s(i, "password_hash")?,
        deleting: i.contains_key("deleting"),
    })
}

pub(super) fn profile_from(i: &Item) -> Profile {
    Profile {
        display_name: get_s(i, "display_name"),
        keep_history: i.get("keep_history").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        consented_at: i.get("consented_at").map(|_| get_n(i, "consented_at")),
    }
}

/// The conversation `id` from its item.
pub(super) fn conversation_from(id: &str, i: &Item) -> Option<Conversation> {
    Some(Conversation {
        id: id.to_string(),
        user_id: get_s(i, "user_id")?,
        created_at: get_n(i, "created_at"),
        title: get_s(i, "title"),
    })
}

/// The user-by-id item: the email, which names the user's item.
pub(super) fn user_id_item(user: &User) -> Item {
    HashMap::from([
        ("pk".into(), s(format!("USERID#{}", user.id))),
        ("sk".into(), s("USER")),
        ("email".into(), s(&user.email)),
    ])
}

/// A message's outbox row, recorded at `created_at` (ms).
pub(super) fn outbox_item(message_id: &str, created_at: i64) -> Item {
    HashMap::from([
        ("pk".into(), s(outbox_pk(message_id))),
        ("sk".into(), s(message_id)),
        ("created_at".into(), n(created_at)),
    ])
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

/// A transaction item that holds only if the account has no tombstone.
pub(super) fn not_gone(table: &str, user_id: &str) -> std::result::Result<TransactWriteItem, StoreError> {
    let c = ConditionCheck::builder()
        .table_name(table)
        .key("pk", s(gone_pk(user_id)))
        .key("sk", s("GONE"))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(|e| StoreError::Backend(anyhow!("build condition check: {e}")))?;
    Ok(TransactWriteItem::builder().condition_check(c).build())
}

/// A transactional update of one item.
pub(super) fn update(
    table: &str,
    key: (String, String),
    expression: &str,
    condition: Option<&str>,
    names: &[(&str, &str)],
    values: Vec<(&str, AttributeValue)>,
) -> std::result::Result<TransactWriteItem, StoreError> {
    let mut u = Update::builder()
        .table_name(table)
        .key("pk", s(key.0))
        .key("sk", s(key.1))
        .update_expression(expression)
        .set_condition_expression(condition.map(str::to_string));
    for (k, v) in names {
        u = u.expression_attribute_names(*k, *v);
    }
    for (k, v) in values {
        u = u.expression_attribute_values(k, v);
    }
    let u = u.build().map_err(|e| StoreError::Backend(anyhow!("build update: {e}")))?;
    Ok(TransactWriteItem::builder().update(u).build())
}
