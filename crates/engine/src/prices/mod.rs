//! The price table (`prices.json`): AWS on-demand prices of what a stack bills by the hour or
//! the month, for the regions it covers, with the date they were read and where from. Used by
//! the cost module (the plan's estimate) and by the reachability check's fixes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Deserialize)]
pub struct Table {
    pub checked: String,
    pub source: String,
    pub currency: String,
    pub hours_per_month: f64,
    pub usage: Usage,
    pub regions: BTreeMap<String, Prices>,
}

/// What the estimate assumes of usage-billed resources.
#[derive(Deserialize)]
pub struct Usage {
    pub load_balancer_lcu: f64,
    pub log_gb_per_group_month: f64,
    /// Series a runtime task pushes to the Prometheus workspace (123 after one message; every
    /// route and status of a day's traffic brings it near this).
    pub prometheus_series_per_task: f64,
    /// How often a task pushes them (the runtime's default).
    pub remote_write_interval_secs: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub load_balancer_hour: f64,
    pub lcu_hour: f64,
    pub public_ipv4_hour: f64,
    pub interface_endpoint_zone_hour: f64,
    pub nat_gateway_hour: f64,
    pub nat_gateway_gb: f64,
    /// The NAT instance (`kind::NAT_INSTANCE_TYPE`, Linux, on demand) and its gp3 root volume.
    pub nat_instance_hour: f64,
    pub ebs_gb_month: f64,
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    pub alarm_metric_month: f64,
    pub log_ingest_gb: f64,
    pub log_storage_gb_month: f64,
    pub hosted_zone_month: f64,
    pub secret_month: f64,
    /// Managed Prometheus: ingestion per 10 million samples (the first tier: 2 billion a month).
    pub prometheus_samples_10m: f64,
    /// AWS WAF: a web ACL a month, each of its rules a month, and a million requests it inspects.
    pub waf_web_acl_month: f64,
    pub waf_rule_month: f64,
    pub waf_requests_million: f64,
}

/// The root volume of Amazon Linux 2023's image (gp3), which the NAT instance keeps.
pub const NAT_INSTANCE_VOLUME_GB: f64 = 8.0;

impl Prices {
    /// The NAT instance a month, with its volume (its address is priced as an Elastic IP).
    pub fn nat_instance_month(&self) -> f64 {
        self.nat_instance_hour * table().hours_per_month + NAT_INSTANCE_VOLUME_GB * self.ebs_gb_month
    }
}

pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| serde_json::from_str(include_str!("prices.json")).expect("prices.json is a price table"))
}

/// The region's prices, or us-east-1's where the table lacks the region (for quoting a fix's
/// order of magnitude only; the plan's estimate refuses to guess).
pub fn near(region: Option<&str>) -> &'static Prices {
    let t = table();
    region.and_then(|r| t.regions.get(r)).unwrap_or_else(|| &t.regions["us-east-1"])
}

/// Rounded to the cent (and never -0: an empty sum of f64 is -0.0).
pub fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0 + 0.0
}
