//! The kinds of sns.

use super::{kind, Val};

kind! {
    Topic = "sns.topic", DeleteBeforeCreate, sets [subscriptions],
    replace_on [name: "a topic's name cannot change"],
    {
        pub name: String,
        /// `protocol:endpoint`, e.g. `email:ops@example.com`.
        pub subscriptions: Vec<String>,
        /// The Prometheus workspace whose alert manager may publish (the topic's policy), if any.
        pub publisher: Option<Val<String>>,
    }
}
