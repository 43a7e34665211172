//! The kinds of logs.

use super::loose;

loose!(LogGroup = "logs.log-group", DeleteBeforeCreate, sets [], replace_on [
    ("name", "a log group's name cannot change"),
]);
