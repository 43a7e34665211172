//! The kinds of aps.

use super::loose;

// The alias is a label; AWS names the workspace (`ws-…`).
loose!(PrometheusWorkspace = "aps.workspace", CreateBeforeDelete, sets [], replace_on []);

loose!(PrometheusRules = "aps.rule-groups", DeleteBeforeCreate, sets [], replace_on [
    ("workspace", "a rule groups namespace belongs to its workspace"),
    ("name", "a namespace's name is its identity"),
]);

// One definition per workspace.
loose!(AlertManager = "aps.alert-manager", DeleteBeforeCreate, sets [], replace_on [
    ("workspace", "an alert manager definition belongs to its workspace"),
]);
