//! The kinds of dynamodb.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Named, Props, ReplaceOrder::*};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    /// Attribute → its type (`S`, `N`, `B`): the partition key, then the sort key.
    pub keys: Named<String>,
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    pub billing: String,
    pub point_in_time_recovery: bool,
    /// The attribute items expire at (`null`: TTL off).
    pub ttl_attribute: Option<String>,
}

impl Props for Table {
    const KIND: Kind = Kind::Table;
    const SPEC: KindSpec = KindSpec {
        name: "dynamodb.table",
        replace_on: &[
            (field!(name), "a table's name cannot change"),
            (field!(keys), "a table's key schema cannot change"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}
