//! Test support shared by the integration tests (`tests/it`) and the benchmarks (`bench/`):
//!
//! - [`proxy`]: a recording, fault-injecting HTTP proxy in front of the moto server.
//! - [`aws_rules`]: the proxy's conformance layer: AWS behaviours the moto server lacks.
//! - [`endpoint_zones`]: the proxy's rewrite of the zones an endpoint service is offered in.
//! - [`rewrite`]: answers of moto rewritten as AWS gives them (failed deployments, certificates
//!   not issued, roles not yet assumable), switched on by a test.
//! - [`canonical`]: parts of the canonical stack file (`stacks/aira.yaml`).

pub mod aws_rules;
pub mod canonical;
pub mod critical;
pub mod endpoint_zones;
pub mod proxy;
pub mod rewrite;
