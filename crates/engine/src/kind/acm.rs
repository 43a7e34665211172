//! The kinds of acm.

use super::loose;

// The listener moves to the new certificate before the old one goes.
loose!(Certificate = "acm.certificate", CreateBeforeDelete, sets [], replace_on [
    ("domain", "a certificate's domain name cannot change"),
    ("zone_id", "its validation records live in the hosted zone"),
]);
