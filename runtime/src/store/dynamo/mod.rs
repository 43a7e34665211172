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
//! | partial answer| `MSG#{id}`              | `PARTIAL`   |
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
//! This file holds the store itself; each part of [`Store`] is implemented in the file of its
//! concern, beside the layout and the requests they share:
//! - `item`: the layout in code: attribute helpers, keys (the outbox's and purge rows' shards,
//!   the tombstone), items decoded (message, user, profile, conversation), the items several
//!   writes share, the transaction items (put, update, tombstone check).
//! - `table`: the requests several operations share (an item's update and a partition's query
//!   to complete, consistent get, batch get, a page of a partition, keys of a partition,
//!   deletes by key, transactions retried on conflict).
//! - `accounts` ([`AccountStore`]): users, profiles, tokens, the account's deletion.
//! - `messages` ([`MessageStore`]): conversations, messages, idempotency keys, the outbox, the
//!   purge.
//! - `limits` ([`LimitStore`]): what a post is checked against: its context, the daily spend,
//!   in-flight slots, shared rate limits.
//! - `lease` ([`LeaseStore`]): the worker's writes, each conditional: the claim, then the
//!   lease holder's extension, answer, failure and release.
//!
//! [`Store`]: crate::store::Store
//! [`AccountStore`]: crate::store::AccountStore
//! [`MessageStore`]: crate::store::MessageStore
//! [`LimitStore`]: crate::store::LimitStore
//! [`LeaseStore`]: crate::store::LeaseStore

mod accounts;
mod item;
mod lease;
mod limits;
mod messages;
mod table;

use aws_sdk_dynamodb::Client;

pub use self::item::OUTBOX_SHARDS;

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
