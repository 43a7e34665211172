//! Test support shared by the integration tests (`tests/it`) and the benchmarks (`bench/`):
//!
//! - [`proxy`]: a recording, fault-injecting HTTP proxy in front of the moto server.
//! - [`rewrite`]: answers of moto rewritten as AWS gives them (failed deployments, certificates
//!   not issued, roles not yet assumable), switched on by a test.
//! - [`canonical`]: parts of the canonical stack file (`stacks/aira.yaml`).

pub mod canonical;
pub mod proxy;
pub mod rewrite;
