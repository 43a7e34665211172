//! aira-runtime: the chat service that `aira` deploys.
//!
//! # Layout
//!
//! - [`config`]: command line and environment ([`config::Cli`]), resolved by the `resolve_*`
//!   functions into the worker's configuration, the API's limits and the LLM.
//! - [`api`]: the HTTP API (`fn app(state) -> Router`), auth, rate limit, idempotency, SSE,
//!   the web page.
//! - [`store`]: the [`store::Store`] trait, in four parts (accounts, messages, limits, the
//!   worker's lease writes), with an embedded SQLite and a DynamoDB implementation.
//! - [`queue`]: the [`queue::Queue`] trait (send, receive with visibility timeout and receive
//!   count, delete, change visibility) with an embedded SQLite and an SQS implementation.
//! - [`group_commit`]: the SQLite executor under both embedded backends: one writer thread
//!   that batches jobs into group commits, and reader threads.
//! - [`llm`]: the [`llm::Llm`] trait: OpenAI-compatible `/chat/completions` client, Amazon
//!   Bedrock's Converse API ([`llm::bedrock`], SigV4 with the AWS credential chain) and the
//!   offline echo model; error classification lives in [`llm::LlmError::disposition`].
//! - [`relay`]: moves outbox rows from the store to the queue.
//! - [`worker`]: consumes the queue, claims, calls the LLM, stores the answer.
//! - [`dlq`]: redrive of dead-letter messages back to the source queue (`aira-runtime redrive`).
//! - [`metrics`]: the Prometheus registry and every metric name.
//! - [`remote_write`]: pushes the registry to a Prometheus remote-write URL, on a task of its
//!   own that no request waits for.
//! - [`sigv4`]: SigV4 signing with the AWS credential chain's cached credentials (Bedrock,
//!   remote write).
//! - [`model`]: the plain data types (user, profile, conversation, message, queue body) and ids.
//! - [`error`]: [`error::AppError`], the API's one error type.
//! - [`run`]: wiring of the `serve`, `api` and `worker` commands and the one shutdown path.
//!
//! Invariants: the queue body carries ids only; no user content or secrets in logs or
//! metric labels; only `store::dynamo`, `queue::sqs`, `run` and the binary (`main.rs`)
//! import `aws-sdk-*`.

pub mod api;
pub mod config;
pub mod dlq;
pub mod error;
pub mod group_commit;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod relay;
pub mod remote_write;
pub mod run;
pub mod sigv4;
pub mod store;
pub mod worker;
