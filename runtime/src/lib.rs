//! aira-runtime: the chat service that `aira` deploys.
//!
//! # Layout
//!
//! - [`config`]: command line and environment, parsed then resolved into [`config::Settings`].
//! - [`api`]: the HTTP API (`fn app(state) -> Router`), auth, rate limit, idempotency, SSE.
//! - [`store`]: the [`store::Store`] trait (users, sessions, conversations, messages, outbox)
//!   with an embedded SQLite and a DynamoDB implementation.
//! - [`queue`]: the [`queue::Queue`] trait (send, receive with visibility timeout and receive
//!   count, delete, change visibility) with an embedded SQLite and an SQS implementation.
//! - [`llm`]: the [`llm::Llm`] trait: OpenAI-compatible `/chat/completions` client and the
//!   offline echo model; error classification lives in [`llm::LlmError::disposition`].
//! - [`relay`]: moves outbox rows from the store to the queue.
//! - [`worker`]: consumes the queue, claims, calls the LLM, stores the answer.
//! - [`dlq`]: redrive of dead-letter messages back to the source queue.
//! - [`metrics`]: the Prometheus registry and every metric name.
//! - [`run`]: wiring of the `serve`, `api` and `worker` commands and the one shutdown path.
//!
//! Invariants: the queue body carries ids only; no user content or secrets in logs or
//! metric labels; only `store::dynamo` and `queue::sqs` import `aws-sdk-*`.

pub mod api;
pub mod config;
pub mod dlq;
pub mod error;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod relay;
pub mod run;
pub mod sqlite;
pub mod store;
pub mod worker;
