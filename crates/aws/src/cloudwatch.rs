//! CloudWatch alarms of the stack (`STACK-…`), on one metric or on an expression over several.
//!
//! `aws-sdk-cloudwatch` is pinned to 1.99, the last release that speaks the Query protocol: later
//! releases speak Smithy RPC v2 CBOR, which the moto server does not answer. AWS accepts both.

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Statistic,
};

use crate::ops::{Cx, KindOps};
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, AlarmMetric, Named, Val};
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

pub struct Alarm;

fn metric_of(namespace: Option<&str>, name: Option<&str>, dims: &[Dimension], statistic: &str) -> AlarmMetric {
    let dimensions = dims.iter().map(|d| (d.name().unwrap_or_default(), Val::from(d.value().unwrap_or_default())));
    AlarmMetric {
        namespace: namespace.unwrap_or_default().to_string(),
        metric: name.unwrap_or_default().to_string(),
        dimensions: Named::from_iter(dimensions),
        statistic: statistic.to_string(),
    }
}

/// The alarm in the normal form of `expand::alarm`.
fn observed(id: LogicalId, a: &MetricAlarm) -> Observed {
    let mut props = kind::Alarm {
        name: a.alarm_name().unwrap_or_default().to_string(),
        description: a.alarm_description().unwrap_or_default().to_string(),
        period: a.period().unwrap_or(0),
        evaluation_periods: a.evaluation_periods().unwrap_or(0),
        threshold: a.threshold().unwrap_or(0.0),
        comparison: a.comparison_operator().map(|c| c.as_str()).unwrap_or_default().to_string(),
        treat_missing_data: a.treat_missing_data().unwrap_or_default().to_string(),
        actions: a.alarm_actions().iter().map(|arn| Val::from(arn.as_str())).collect(),
        metric: None,
        expression: None,
        metrics: None,
    };
    if a.metrics().is_empty() {
        let statistic = a.statistic().map(|s| s.as_str()).unwrap_or_default();
        props.metric = Some(metric_of(a.namespace(), a.metric_name(), a.dimensions(), statistic));
    } else {
        let mut metrics = Vec::new();
        for q in a.metrics() {
            match (q.expression(), q.metric_stat()) {
                (Some(expr), _) => props.expression = Some(expr.to_string()),
                (None, Some(stat)) => {
                    let m = stat.metric();
                    props.period = stat.period().unwrap_or(0);
                    let metric = metric_of(
                        m.and_then(|m| m.namespace()),
                        m.and_then(|m| m.metric_name()),
                        m.map(|m| m.dimensions()).unwrap_or_default(),
                        stat.stat().unwrap_or_default(),
                    );
                    metrics.push((q.id().unwrap_or_default().to_string(), metric));
                }
                (None, None) => {}
            }
        }
        props.metrics = Some(Named(metrics));
    }
    let arn = a.alarm_arn().unwrap_or_default();
    Observed::of(id, arn, &props).output("arn", arn).output("name", props.name.as_str())
}

fn dimensions(m: &AlarmMetric) -> Vec<Dimension> {
    m.dimensions.0.iter().map(|(k, v)| Dimension::builder().name(k).value(v.as_str()).build()).collect()
}

/// PutMetricAlarm sets every setting: creation and update are the same call.
async fn put(p: &Clients, scope: &Scope, res: &Resolved, verb: &str) -> Result<Observed> {
    let v: kind::Alarm = res.props()?;
    let what = format!("{verb} alarm `{}` ({})", res.id, v.name);
    let actions: Vec<String> = v.actions.iter().map(|a| a.get().clone()).collect();
    let mut req = p
        .cloudwatch
        .put_metric_alarm()
        .alarm_name(&v.name)
        .alarm_description(&v.description)
        .evaluation_periods(v.evaluation_periods)
        .threshold(v.threshold)
        .comparison_operator(ComparisonOperator::from(v.comparison.as_str()))
        .treat_missing_data(&v.treat_missing_data)
        .set_alarm_actions(Some(actions.clone()))
        .set_ok_actions(Some(actions))
        .set_tags(Some(sdk::tag_list(scope, &res.id, &[])));
    if let Some(m) = &v.metric {
        req = req
            .namespace(&m.namespace)
            .metric_name(&m.metric)
            .set_dimensions(Some(dimensions(m)))
            .statistic(Statistic::from(m.statistic.as_str()))
            .period(v.period);
    } else {
        for (id, m) in v.metrics.iter().flat_map(|m| &m.0) {
            let metric = Metric::builder()
                .namespace(&m.namespace)
                .metric_name(&m.metric)
                .set_dimensions(Some(dimensions(m)))
                .build();
            let stat = MetricStat::builder().metric(metric).period(v.period).stat(&m.statistic).build();
            req = req.metrics(MetricDataQuery::builder().id(id).metric_stat(stat).return_data(false).build());
        }
        let expression = v.expression.as_deref().unwrap_or_default();
        req = req.metrics(MetricDataQuery::builder().id("alarm").expression(expression).return_data(true).build());
    }
    call!(what, req.send());
    let out = call!(format!("{what}: read it back"), p.cloudwatch.describe_alarms().alarm_names(&v.name).send());
    out.metric_alarms()
        .first()
        .map(|a| observed(res.id.clone(), a))
        .ok_or_else(|| ProviderError::new(format!("{what}: the alarm is not listed right after it was put")))
}

#[async_trait]
impl KindOps for Alarm {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let prefix = format!("{}-", cx.scope.stack);
        let pages = cx.aws.cloudwatch.describe_alarms().alarm_name_prefix(&prefix).into_paginator().send();
        let pages = sdk::pages(format!("list alarms `{prefix}*`"), pages).await?;
        let tags = |a: &MetricAlarm| {
            let arn = a.alarm_arn().unwrap_or_default();
            let call = cx.aws.cloudwatch.list_tags_for_resource().resource_arn(arn).send();
            sdk::adopted(cx.scope, format!("read tags of alarm {arn}"), &["ResourceNotFound"], call)
        };
        let alarms: Vec<&MetricAlarm> = pages.iter().flat_map(|page| page.metric_alarms()).collect();
        sdk::adopt_each(alarms, tags, |a, id| std::future::ready(Ok(Some(observed(id, a))))).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        put(cx.aws, cx.scope, res, "create").await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, _: &Observed) -> Result<Observed> {
        put(cx.aws, cx.scope, res, "update").await
    }

    /// Deleting an alarm that is not there succeeds (DeleteAlarms ignores unknown names).
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let name = current.outputs.get("name").and_then(serde_json::Value::as_str).unwrap_or_default();
        call!(
            format!("delete alarm `{}` ({name})", current.id),
            cx.aws.cloudwatch.delete_alarms().alarm_names(name).send()
        );
        Ok(())
    }
}
