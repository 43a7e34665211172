//! The kinds of ecr.

use super::loose;

loose!(Repository = "ecr.repository", DeleteBeforeCreate, sets [], replace_on [
    ("name", "a repository's name cannot change"),
]);
