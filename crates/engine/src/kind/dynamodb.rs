//! The kinds of dynamodb.

use super::loose;

loose!(Table = "dynamodb.table", DeleteBeforeCreate, sets [], replace_on [
    ("name", "a table's name cannot change"),
    ("keys", "a table's key schema cannot change"),
]);
