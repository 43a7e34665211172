//! The kinds of ecr.

use super::kind;

kind! {
    Repository = "ecr.repository", DeleteBeforeCreate, sets [],
    replace_on [name: "a repository's name cannot change"],
    {
        pub name: String,
        pub scan_on_push: bool,
        /// Images kept, older ones expire (`null`: no lifecycle policy of aira's).
        pub keep_images: Option<u64>,
    }
}
