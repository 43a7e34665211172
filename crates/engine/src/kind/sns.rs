//! The kinds of sns.

use super::loose;

loose!(Topic = "sns.topic", DeleteBeforeCreate, sets ["subscriptions"], replace_on [
    ("name", "a topic's name cannot change"),
]);
