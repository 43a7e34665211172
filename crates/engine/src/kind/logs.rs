//! The kinds of logs.

use super::kind;

kind! {
    LogGroup = "logs.log-group", DeleteBeforeCreate, sets [],
    replace_on [name: "a log group's name cannot change"],
    {
        pub name: String,
        /// `null`: events never expire.
        pub retention_days: Option<u64>,
    }
}
