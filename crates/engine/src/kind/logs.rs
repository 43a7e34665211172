//! The kinds of logs.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogGroup {
    pub name: String,
    /// `null`: events never expire.
    pub retention_days: Option<u64>,
}

impl Props for LogGroup {
    const KIND: Kind = Kind::LogGroup;
    const SPEC: KindSpec = KindSpec {
        name: "logs.log-group",
        replace_on: &[(field!(name), "a log group's name cannot change")],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}
