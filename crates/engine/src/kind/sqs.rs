//! The kinds of sqs.

use super::loose;

loose!(SqsQueue = "sqs.queue", DeleteBeforeCreate, sets [], replace_on [
    ("name", "a queue's name cannot change"),
    ("fifo", "a queue cannot change between standard and FIFO"),
]);
