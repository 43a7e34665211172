//! The kinds of cloudwatch.

use serde::{Deserialize, Serialize};

use super::{kind, Named, Val};

kind! {
    /// An alarm on one metric (`metric`) or on an expression (`expression`) over several metrics by
    /// id (`metrics`).
    Alarm = "cloudwatch.alarm", DeleteBeforeCreate, sets [actions],
    // PutMetricAlarm replaces every setting: any change is an update.
    replace_on [name: "an alarm's name is its identity"],
    {
        pub name: String,
        pub description: String,
        /// Seconds each datapoint covers.
        pub period: i32,
        /// Datapoints over the threshold before the alarm fires.
        pub evaluation_periods: i32,
        pub threshold: f64,
        /// `GreaterThanThreshold`, …
        pub comparison: String,
        /// `notBreaching`, …
        pub treat_missing_data: String,
        /// Notified when it fires and when it recovers.
        pub actions: Vec<Val<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub metric: Option<AlarmMetric>,
        /// Over the ids of `metrics`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub expression: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub metrics: Option<Named<AlarmMetric>>,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmMetric {
    pub namespace: String,
    pub metric: String,
    /// Dimension name → value, e.g. `QueueName`.
    pub dimensions: Named<Val<String>>,
    /// `Maximum`, `Sum`, …
    pub statistic: String,
}
