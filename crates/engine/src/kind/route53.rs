//! The kinds of route53.

use serde::{Deserialize, Serialize};

use super::{kind, Val};

kind! {
    /// An alias record (A or AAAA) of the public name, pointing at the load balancer.
    DnsRecord = "route53.record", DeleteBeforeCreate, sets [],
    // Name and type identify the record: two cannot exist at once.
    replace_on [
        zone_id: "a record cannot move to another hosted zone",
        name: "a record's name is its identity",
        r#type => "type": "a record's type is its identity",
    ],
    {
        /// The hosted zone's id (`Z…`).
        pub zone_id: String,
        /// Fully qualified, with its trailing dot.
        pub name: String,
        /// `A` or `AAAA`.
        pub r#type: String,
        pub alias: Alias,
    }
}

/// What an alias record points at: the load balancer's DNS name and hosted zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    pub dns_name: Val<String>,
    pub zone_id: Val<String>,
}
