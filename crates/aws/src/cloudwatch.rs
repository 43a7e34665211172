//! CloudWatch alarms of the stack (`STACK-…`), on one metric or on an expression over several.
//!
//! `aws-sdk-cloudwatch` is pinned to 1.99, the last release that speaks the Query protocol: later
//! releases speak Smithy RPC v2 CBOR, which the moto server does not answer. AWS accepts both.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Statistic, Tag,
};
use serde_json::{json, Map, Value};

use crate::AwsProvider;
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
    let prefix = format!("{}-", scope.stack);
    let mut alarms = Vec::new();
    let mut pages = p.cloudwatch.describe_alarms().alarm_name_prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::new(format!("list alarms `{prefix}*`: {}", crate::sdk::describe(&e))))?;
        alarms.extend(page.metric_alarms().iter().cloned());
    }
    let mut found = Vec::new();
    for a in alarms {
        let arn = a.alarm_arn().unwrap_or_default().to_string();
        let out = p.cloudwatch.list_tags_for_resource().resource_arn(&arn).send().await;
        let tags: BTreeMap<String, String> = match out {
            Ok(out) => out.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!("read tags of alarm {arn}: {}", crate::sdk::describe(&e))))
            }
        };
        if tags.get(TAG_STACK) != Some(&scope.stack) {
            continue;
        }
        let Some(id) = tags.get(TAG_ID) else { continue };
        found.push(observed(id, &a));
    }
    Ok(found)
}

fn dimensions_json(dims: &[Dimension]) -> Value {
    Value::Object(
        dims.iter()
            .map(|d| (d.name().unwrap_or_default().to_string(), Value::from(d.value().unwrap_or_default())))
            .collect::<Map<_, _>>(),
    )
}

fn metric_json(namespace: Option<&str>, name: Option<&str>, dims: &[Dimension], statistic: &str) -> Value {
    json!({
        "namespace": namespace.unwrap_or_default(),
        "metric": name.unwrap_or_default(),
        "dimensions": dimensions_json(dims),
        "statistic": statistic,
    })
}

/// The alarm in the normal form of `expand::alarm`.
fn observed(id: &str, a: &MetricAlarm) -> Observed {
    let actions: Vec<&str> = a.alarm_actions().iter().map(String::as_str).collect();
    let mut props = json!({
        "name": a.alarm_name().unwrap_or_default(),
        "description": a.alarm_description().unwrap_or_default(),
        "evaluation_periods": a.evaluation_periods().unwrap_or(0),
        "threshold": a.threshold().unwrap_or(0.0),
        "comparison": a.comparison_operator().map(|c| c.as_str()).unwrap_or_default(),
        "treat_missing_data": a.treat_missing_data().unwrap_or_default(),
        "actions": actions,
    });
    if a.metrics().is_empty() {
        props["period"] = json!(a.period().unwrap_or(0));
        props["metric"] = metric_json(
            a.namespace(),
            a.metric_name(),
            a.dimensions(),
            a.statistic().map(|s| s.as_str()).unwrap_or_default(),
        );
    } else {
        let mut metrics = Map::new();
        for q in a.metrics() {
            match (q.expression(), q.metric_stat()) {
                (Some(expr), _) => props["expression"] = json!(expr),
                (None, Some(stat)) => {
                    let m = stat.metric();
                    props["period"] = json!(stat.period().unwrap_or(0));
                    metrics.insert(
                        q.id().unwrap_or_default().to_string(),
                        metric_json(
                            m.and_then(|m| m.namespace()),
                            m.and_then(|m| m.metric_name()),
                            m.map(|m| m.dimensions()).unwrap_or_default(),
                            stat.stat().unwrap_or_default(),
                        ),
                    );
                }
                (None, None) => {}
            }
        }
        props["metrics"] = Value::Object(metrics);
    }
    let arn = a.alarm_arn().unwrap_or_default().to_string();
    Observed {
        id: id.into(),
        kind: Kind::Alarm,
        physical_id: arn.clone(),
        props,
        outputs: BTreeMap::from([
            ("arn".to_string(), Value::from(arn)),
            ("name".to_string(), Value::from(a.alarm_name().unwrap_or_default())),
        ]),
        depends_on: BTreeSet::new(),
    }
}

fn dimensions(v: &Value) -> Vec<Dimension> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| Dimension::builder().name(k).value(v.as_str().unwrap_or_default()).build())
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// PutMetricAlarm sets every setting: creation and update are the same call.
async fn put(p: &AwsProvider, scope: &Scope, res: &Resolved, what: &str) -> Result<Observed, ProviderError> {
    let v = &res.props;
    let name = str_of(v, "name");
    let actions: Vec<String> =
        v["actions"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
    let tags: Vec<Tag> =
        scope.tags_for(&res.id).into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    let period = v["period"].as_i64().unwrap_or(60) as i32;
    let mut req = p
        .cloudwatch
        .put_metric_alarm()
        .alarm_name(name)
        .alarm_description(str_of(v, "description"))
        .evaluation_periods(v["evaluation_periods"].as_i64().unwrap_or(1) as i32)
        .threshold(v["threshold"].as_f64().unwrap_or(0.0))
        .comparison_operator(ComparisonOperator::from(str_of(v, "comparison")))
        .treat_missing_data(str_of(v, "treat_missing_data"))
        .set_alarm_actions(Some(actions.clone()))
        .set_ok_actions(Some(actions))
        .set_tags(Some(tags));
    if let Some(m) = v.get("metric").filter(|m| m.is_object()) {
        req = req
            .namespace(str_of(m, "namespace"))
            .metric_name(str_of(m, "metric"))
            .set_dimensions(Some(dimensions(&m["dimensions"])))
            .statistic(Statistic::from(str_of(m, "statistic")))
            .period(period);
    } else {
        for (id, m) in v["metrics"].as_object().into_iter().flatten() {
            let metric = Metric::builder()
                .namespace(str_of(m, "namespace"))
                .metric_name(str_of(m, "metric"))
                .set_dimensions(Some(dimensions(&m["dimensions"])))
                .build();
            let stat = MetricStat::builder().metric(metric).period(period).stat(str_of(m, "statistic")).build();
            req = req.metrics(MetricDataQuery::builder().id(id).metric_stat(stat).return_data(false).build());
        }
        req = req.metrics(
            MetricDataQuery::builder().id("alarm").expression(str_of(v, "expression")).return_data(true).build(),
        );
    }
    req.send().await.map_err(|e| ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e))))?;
    let out = p
        .cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|e| ProviderError::new(format!("{what}: read it back: {}", crate::sdk::describe(&e))))?;
    out.metric_alarms()
        .first()
        .map(|a| observed(&res.id.0, a))
        .ok_or_else(|| ProviderError::new(format!("{what}: the alarm is not listed right after it was put")))
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved) -> Result<Observed, ProviderError> {
    put(p, scope, res, &format!("create alarm `{}` ({})", res.id, str_of(&res.props, "name"))).await
}

pub async fn update(
    p: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    current: &Observed,
) -> Result<Observed, ProviderError> {
    let _ = current;
    put(p, scope, res, &format!("update alarm `{}` ({})", res.id, str_of(&res.props, "name"))).await
}

pub async fn delete(p: &AwsProvider, current: &Observed) -> Result<(), ProviderError> {
    let name = current.outputs.get("name").and_then(Value::as_str).unwrap_or_default();
    p.cloudwatch.delete_alarms().alarm_names(name).send().await.map(drop).map_err(|e| {
        ProviderError::new(format!("delete alarm `{}` ({name}): {}", current.id, crate::sdk::describe(&e)))
    })
}
