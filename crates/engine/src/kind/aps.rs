//! The kinds of aps.

use super::{kind, Val};

kind! {
    PrometheusWorkspace = "aps.workspace", CreateBeforeDelete, sets [],
    // The alias is a label; AWS names the workspace (`ws-…`).
    replace_on [],
    {
        pub alias: String,
    }
}

kind! {
    /// A rule groups namespace of a workspace.
    PrometheusRules = "aps.rule-groups", DeleteBeforeCreate, sets [],
    replace_on [
        workspace: "a rule groups namespace belongs to its workspace",
        name: "a namespace's name is its identity",
    ],
    {
        /// The workspace's id.
        pub workspace: Val<String>,
        pub name: String,
        /// The Prometheus rule file, as text (uploaded as it is).
        pub data: String,
    }
}

kind! {
    /// A workspace's alert manager definition.
    AlertManager = "aps.alert-manager", DeleteBeforeCreate, sets [],
    // One definition per workspace.
    replace_on [workspace: "an alert manager definition belongs to its workspace"],
    {
        /// The workspace's id.
        pub workspace: Val<String>,
        /// The definition as the managed service takes it (YAML text, `alertmanager_config: |`).
        pub definition: String,
    }
}
