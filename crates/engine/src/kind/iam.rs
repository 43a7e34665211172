//! The kinds of iam.

use super::loose;

loose!(Role = "iam.role", DeleteBeforeCreate, sets ["managed_policies"], replace_on [
    ("name", "a role's name cannot change"),
    ("path", "a role's path cannot change"),
]);
