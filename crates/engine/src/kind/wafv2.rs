//! The kinds of wafv2.

use super::loose;

// AWS WAF (scope REGIONAL): the stack's rate-based rules. Its name is its identity in the
// region. The load balancer it protects is its property `load_balancer`, changed in place
// (AssociateWebACL, DisassociateWebACL) rather than a kind of its own: an association has no
// tags nor id, and the web ACL must let go of it before it can be deleted
// (crates/aws/src/waf.rs says why in full).
loose!(WebAcl = "wafv2.web-acl", DeleteBeforeCreate, sets [], replace_on [
    ("name", "a web ACL's name cannot change"),
]);
