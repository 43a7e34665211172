//! CloudWatch alarms of the stack (`STACK-…`), on one metric or on an expression over several.
//!
//! `aws-sdk-cloudwatch` is pinned to 1.99, the last release that speaks the Query protocol: later
//! releases speak Smithy RPC v2 CBOR, which the moto server does not answer. AWS accepts both.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Statistic,
};
use serde_json::{json, Map, Value};

use crate::kinds::{Cx, KindOps, Observing};
use crate::{sdk, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

pub struct Alarm;

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
fn observed(id: LogicalId, a: &MetricAlarm) -> Observed {
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
        id,
        kind: Kind::Alarm,
        physical_id: arn.clone(),
        props,
        outputs: BTreeMap::from([
            ("arn".to_string(), Value::from(arn)),
            ("name".to_string(), Value::from(a.alarm_name().unwrap_or_default())),
        ]),
        depends_on: BTreeSet::new(),
        repair: None,
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
async fn put(p: &AwsProvider, scope: &Scope, res: &Resolved, what: &str) -> Result<Observed> {
    let v = &res.props;
    let name = str_of(v, "name");
    let actions: Vec<String> =
        v["actions"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
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
        .set_tags(Some(sdk::tag_list(scope, &res.id, &[])));
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
    call!(what, req.send());
    let out = call!(format!("{what}: read it back"), p.cloudwatch.describe_alarms().alarm_names(name).send());
    out.metric_alarms()
        .first()
        .map(|a| observed(res.id.clone(), a))
        .ok_or_else(|| ProviderError::new(format!("{what}: the alarm is not listed right after it was put")))
}

#[async_trait]
impl KindOps for Alarm {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let prefix = format!("{}-", scope.stack);
        let mut alarms = Vec::new();
        let mut pages = aws.cloudwatch.describe_alarms().alarm_name_prefix(&prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk::error(format!("list alarms `{prefix}*`"), e))?;
            alarms.extend(page.metric_alarms().iter().cloned());
        }
        let mut found = Vec::new();
        for a in alarms {
            let arn = a.alarm_arn().unwrap_or_default();
            let out = aws.cloudwatch.list_tags_for_resource().resource_arn(arn).send().await;
            let Some(out) = sdk::found(format!("read tags of alarm {arn}"), &["ResourceNotFound"], out)? else {
                continue;
            };
            let Some(id) = sdk::adopt_tags(scope, out.tags()) else { continue };
            found.push(observed(id, &a));
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        put(aws, scope, res, &format!("create alarm `{}` ({})", res.id, str_of(&res.props, "name"))).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, _: &Observed) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        put(aws, scope, res, &format!("update alarm `{}` ({})", res.id, str_of(&res.props, "name"))).await
    }

    /// Deleting an alarm that is not there succeeds (DeleteAlarms ignores unknown names).
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let name = current.outputs.get("name").and_then(Value::as_str).unwrap_or_default();
        call!(
            format!("delete alarm `{}` ({name})", current.id),
            aws.cloudwatch.delete_alarms().alarm_names(name).send()
        );
        Ok(())
    }
}
