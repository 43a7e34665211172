//! Test support shared by the integration tests (`tests/it`) and the benchmarks (`bench/`):
//!
//! - [`proxy`]: a recording, fault-injecting HTTP proxy in front of the moto server.
//! - [`endpoint_zones`]: the proxy's rewrite of the zones an endpoint service is offered in.
//! - [`canonical`]: parts of the canonical stack file (`stacks/aira.yaml`).

pub mod canonical;
pub mod endpoint_zones;
pub mod proxy;
