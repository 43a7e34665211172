//! The kinds of aps.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*, Val};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusWorkspace {
    pub alias: String,
}

impl Props for PrometheusWorkspace {
    const KIND: Kind = Kind::PrometheusWorkspace;
    // The alias is a label; AWS names the workspace (`ws-…`).
    const SPEC: KindSpec =
        KindSpec { name: "aps.workspace", replace_on: &[], replace_order: CreateBeforeDelete, sets: &[] };
}

/// A rule groups namespace of a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRules {
    /// The workspace's id.
    pub workspace: Val<String>,
    pub name: String,
    /// The Prometheus rule file, as text (uploaded as it is).
    pub data: String,
}

impl Props for PrometheusRules {
    const KIND: Kind = Kind::PrometheusRules;
    const SPEC: KindSpec = KindSpec {
        name: "aps.rule-groups",
        replace_on: &[
            (field!(workspace), "a rule groups namespace belongs to its workspace"),
            (field!(name), "a namespace's name is its identity"),
        ],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}

/// A workspace's alert manager definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertManager {
    /// The workspace's id.
    pub workspace: Val<String>,
    /// The definition as the managed service takes it (YAML text, `alertmanager_config: |`).
    pub definition: String,
}

impl Props for AlertManager {
    const KIND: Kind = Kind::AlertManager;
    // One definition per workspace.
    const SPEC: KindSpec = KindSpec {
        name: "aps.alert-manager",
        replace_on: &[(field!(workspace), "an alert manager definition belongs to its workspace")],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}
