//! The kinds of iam.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{kind, Val};

kind! {
    /// A role a service assumes, with one inline policy (named `aira` on AWS).
    Role = "iam.role", DeleteBeforeCreate, sets [managed_policies],
    replace_on [
        name: "a role's name cannot change",
        path: "a role's path cannot change",
    ],
    {
        pub name: String,
        pub path: String,
        /// The service its trust policy lets assume it (`ecs-tasks.amazonaws.com`).
        pub trust_service: String,
        /// ARNs of the attached managed policies.
        pub managed_policies: Vec<String>,
        /// The inline policy (`null`: none).
        pub policy: Option<Policy>,
    }
}

/// An inline policy: aira's statements, or, observed, any other document IAM holds (edited
/// outside aira: a `Condition`, an `Action` string…), kept as it is so the plan shows it as drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Policy {
    Document(PolicyDocument),
    Other(Value),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

/// One `Allow` of actions on resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: String,
    #[serde(rename = "Effect")]
    pub effect: String,
    #[serde(rename = "Action")]
    pub action: Vec<String>,
    /// ARNs, or `*`.
    #[serde(rename = "Resource")]
    pub resource: Vec<Val<String>>,
    /// Operator → condition key → value (`StringEquals` → `kms:ViaService` → …).
    #[serde(rename = "Condition", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>>,
}
