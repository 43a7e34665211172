//! The kinds of sqs.

use serde::{Deserialize, Serialize};

use super::{kind, Val};

kind! {
    /// Durations are in seconds.
    SqsQueue = "sqs.queue", DeleteBeforeCreate, sets [],
    replace_on [
        name: "a queue's name cannot change",
        fifo: "a queue cannot change between standard and FIFO",
    ],
    {
        /// With the `.fifo` suffix for a FIFO queue.
        pub name: String,
        pub fifo: bool,
        pub visibility_timeout: u64,
        pub retention: u64,
        /// How long a receive waits for a message (long polling).
        pub receive_wait: u64,
        /// Where messages received too often go; absent without a dead-letter queue.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub redrive: Option<QueueRedrive>,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRedrive {
    pub dead_letter_arn: Val<String>,
    /// Receives of a message before it moves to the dead-letter queue.
    pub max_receives: u32,
}
