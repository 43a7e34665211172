//! Integration tests: one binary, so the AWS SDK links once. They run `aira` as a process
//! against the moto server that `scripts/test` starts, and read AWS back through the SDK.

// Shared with the benchmarks: `crate::proxy`, `crate::canonical`.
use aira_testkit::{canonical, proxy, rewrite};

mod alerts;
mod bedrock;
mod compute;
mod day2;
mod deployed;
mod dlq;
mod edge;
mod existing_vpc;
mod harness;
mod image;
mod inventory;
mod local_target;
mod lock;
mod monitoring;
mod nat_instance;
mod network;
mod preview;
mod queue_stack;
mod secret;
mod stack;
mod surface;
mod sweep;
mod terminal;
mod tls;
mod waf;
