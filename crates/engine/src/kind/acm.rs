//! The kinds of acm.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*};

/// The public name's certificate, validated through a record in the stack's hosted zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub domain: String,
    pub validation: Validation,
    /// The hosted zone of its validation record, kept in its tag `aira:dns-zone` so that `down`
    /// removes that record without the stack file (absent when the tag is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
}

/// How ACM checks the domain is ours: aira requests DNS validation only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validation {
    #[serde(rename = "DNS")]
    Dns,
}

impl Props for Certificate {
    const KIND: Kind = Kind::Certificate;
    // The listener moves to the new certificate before the old one goes.
    const SPEC: KindSpec = KindSpec {
        name: "acm.certificate",
        replace_on: &[
            (field!(domain), "a certificate's domain name cannot change"),
            (field!(zone_id), "its validation records live in the hosted zone"),
        ],
        replace_order: CreateBeforeDelete,
        sets: &[],
    };
}
