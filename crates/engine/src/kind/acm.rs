//! The kinds of acm.

use super::kind;

use serde::{Deserialize, Serialize};

kind! {
    /// The public name's certificate, validated through a record in the stack's hosted zone.
    Certificate = "acm.certificate", CreateBeforeDelete, sets [],
    // The listener moves to the new certificate before the old one goes.
    replace_on [
        domain: "a certificate's domain name cannot change",
        wildcard: "a certificate's names cannot change",
        zone_id: "its validation records live in the hosted zone",
    ],
    {
        pub domain: String,
        /// It also covers `*.DOMAIN`, the previews' host names (`aira up --preview NAME`), in a
        /// second name ACM validates with the same DNS record as the first.
        #[serde(default)]
        pub wildcard: bool,
        pub validation: Validation,
        /// The hosted zone of its validation record, kept in its tag `aira:dns-zone` so that `down`
        /// removes that record without the stack file (absent when the tag is).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub zone_id: Option<String>,
    }
}

/// How ACM checks the domain is ours: aira requests DNS validation only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validation {
    #[serde(rename = "DNS")]
    Dns,
}
