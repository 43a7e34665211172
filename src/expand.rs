//! Stack → desired resource graph.

use serde_json::{json, Value};

use crate::graph::{reference, Desired, Graph, Kind};
use crate::stack::Stack;

pub const QUEUE: &str = "queue";
pub const DEAD_LETTER_QUEUE: &str = "dlq";

pub fn expand(stack: &Stack) -> Graph {
    let name = &stack.stack.0;
    let q = &stack.queue;
    let queue_name = |id: &str| {
        if q.fifo {
            format!("{name}-{id}.fifo")
        } else {
            format!("{name}-{id}")
        }
    };
    let mut resources = Vec::new();
    let mut redrive = Value::Null;
    if let Some(dl) = &q.dead_letter {
        resources.push(Desired::new(
            DEAD_LETTER_QUEUE,
            Kind::SqsQueue,
            json!({
                "name": queue_name(DEAD_LETTER_QUEUE),
                "fifo": q.fifo,
                // Dead letters are only inspected and redriven: SQS's default, independent of the queue's.
                "visibility_timeout": 30,
                "retention": dl.retention.secs(),
                "receive_wait": q.receive_wait.secs(),
            }),
        ));
        redrive = json!({ "dead_letter_arn": reference(DEAD_LETTER_QUEUE, "arn"), "max_receives": dl.max_receives });
    }
    let mut props = json!({
        "name": queue_name(QUEUE),
        "fifo": q.fifo,
        "visibility_timeout": q.visibility_timeout.secs(),
        "retention": q.retention.secs(),
        "receive_wait": q.receive_wait.secs(),
    });
    if !redrive.is_null() {
        props["redrive"] = redrive;
    }
    resources.push(Desired::new(QUEUE, Kind::SqsQueue, props));
    Graph {
        stack: name.clone(),
        tags: stack.tags.clone(),
        resources,
    }
}
