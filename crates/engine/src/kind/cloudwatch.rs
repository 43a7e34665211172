//! The kinds of cloudwatch.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{field, Kind, KindSpec, Props, ReplaceOrder::*, Val};

/// An alarm on one metric (`metric`) or on an expression (`expression`) over several metrics by
/// id (`metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
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
    pub metrics: Option<Keyed<AlarmMetric>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmMetric {
    pub namespace: String,
    pub metric: String,
    /// Dimension name → value, e.g. `QueueName`.
    pub dimensions: Keyed<Val<String>>,
    /// `Maximum`, `Sum`, …
    pub statistic: String,
}

impl Props for Alarm {
    const KIND: Kind = Kind::Alarm;
    // PutMetricAlarm replaces every setting: any change is an update.
    const SPEC: KindSpec = KindSpec {
        name: "cloudwatch.alarm",
        replace_on: &[(field!(name), "an alarm's name is its identity")],
        replace_order: DeleteBeforeCreate,
        sets: &[field!(actions)],
    };
}

/// A JSON object whose keys are data (dimension names, metric ids), in the order they were
/// given: the plan's JSON shows them as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyed<T>(pub Vec<(String, T)>);

impl<T> Keyed<T> {
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a str, T)>) -> Self {
        Keyed(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

impl<T: Serialize> Serialize for Keyed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Keyed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Keyed<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keyed<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Keyed(out))
            }
        }

        d.deserialize_map(Entries(PhantomData))
    }
}
