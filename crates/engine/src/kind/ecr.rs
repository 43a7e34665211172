//! The kinds of ecr.

use serde::{Deserialize, Serialize};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub name: String,
    pub scan_on_push: bool,
    /// Images kept, older ones expire (`null`: no lifecycle policy of aira's).
    pub keep_images: Option<u64>,
}

impl Props for Repository {
    const KIND: Kind = Kind::Repository;
    const SPEC: KindSpec = KindSpec {
        name: "ecr.repository",
        replace_on: &[(field!(name), "a repository's name cannot change")],
        replace_order: DeleteBeforeCreate,
        sets: &[],
    };
}
