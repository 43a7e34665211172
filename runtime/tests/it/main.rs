//! One integration test binary (the AWS SDK links once).
//!
//! - `abuse`: password guessing and sign-in floods against the `serve` binary.
//! - `api`: the HTTP API on the embedded backends, through `oneshot` and a real socket.
//! - `faults`: worker and relay under failures, with the fake LLM server.
//! - `binary`: the `serve` binary end to end, SIGTERM included.
//! - `metric_names`: every metric the monitoring templates use exists in `/metrics`.
//! - `privacy`: consent, unkept history, deletion to the last byte, budgets, retries, pages, caps.
//! - `web`: the web page: pages, security headers, CSRF, `/v1/me` (profile, export, deletion).
//! - `remote_write`: metrics pushed with Prometheus remote write: into a real Prometheus, to
//!   receivers that are down (requests unaffected), SigV4-signed to a capture server.
//! - `katan`: the OpenAI and Bedrock providers against llm-katan (answers, SigV4, faults).
//! - `aws`: the same paths on SQS + DynamoDB, against the moto server (`AIRA_TEST_ENDPOINT`).
//! - `life`: what only shows over a deployment's life: bounds that hold past their counts,
//!   limits that hold across api tasks, one message's failure that stays its own.
//! - `stream`: answers streamed as written, resumed with `Last-Event-ID`, stopped mid-answer.

mod abuse;
mod api;
mod aws;
mod binary;
mod common;
mod faults;
mod katan;
mod life;
mod metric_names;
mod privacy;
mod remote_write;
mod sigv4;
mod stream;
mod web;
