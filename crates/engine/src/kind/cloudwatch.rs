//! The kinds of cloudwatch.

use super::loose;

// PutMetricAlarm replaces every setting: any change is an update.
loose!(Alarm = "cloudwatch.alarm", DeleteBeforeCreate, sets ["actions"], replace_on [
    ("name", "an alarm's name is its identity"),
]);
