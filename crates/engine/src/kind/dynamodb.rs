//! The kinds of dynamodb.

use super::{kind, Named};

kind! {
    Table = "dynamodb.table", DeleteBeforeCreate, sets [],
    replace_on [
        name: "a table's name cannot change",
        keys: "a table's key schema cannot change",
    ],
    {
        pub name: String,
        /// Attribute → its type (`S`, `N`, `B`): the partition key, then the sort key.
        pub keys: Named<String>,
        /// `PAY_PER_REQUEST` or `PROVISIONED`.
        pub billing: String,
        pub point_in_time_recovery: bool,
        /// The attribute items expire at (`null`: TTL off).
        pub ttl_attribute: Option<String>,
    }
}
