//! The kinds of route53.

use super::loose;

// Name and type identify the record: two cannot exist at once.
loose!(DnsRecord = "route53.record", DeleteBeforeCreate, sets [], replace_on [
    ("zone_id", "a record cannot move to another hosted zone"),
    ("name", "a record's name is its identity"),
    ("type", "a record's type is its identity"),
]);
