//! The kinds of sns.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*, Val};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub name: String,
    /// `protocol:endpoint`, e.g. `email:ops@example.com`.
    pub subscriptions: Vec<String>,
    /// The Prometheus workspace whose alert manager may publish (the topic's policy), if any.
    pub publisher: Option<Val<String>>,
}

impl Props for Topic {
    const KIND: Kind = Kind::Topic;
    const SPEC: KindSpec = KindSpec {
        name: "sns.topic",
        replace_on: &[(field!(name), "a topic's name cannot change")],
        replace_order: DeleteBeforeCreate,
        sets: &[field!(subscriptions)],
    };
}
