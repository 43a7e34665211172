//! The alert topic and the alarms.

use super::*;

pub const TOPIC: &str = "alerts";

pub fn topic_name(stack: &str) -> String {
    format!("{stack}-alerts")
}

/// A CloudWatch metric in an alarm: namespace, name, dimensions, statistic.
fn metric<'a>(
    namespace: &str,
    name: &str,
    dimensions: impl IntoIterator<Item = (&'a str, Val<String>)>,
    statistic: &str,
) -> kind::AlarmMetric {
    kind::AlarmMetric {
        namespace: namespace.into(),
        metric: name.into(),
        dimensions: kind::Named::from_iter(dimensions),
        statistic: statistic.into(),
    }
}

/// An alarm notifying the stack's topic when it fires and when it recovers; what it watches
/// (`metric`, or `metrics` and their `expression`) is the caller's.
fn alarm(name: String, description: &str, threshold: f64, comparison: &str, periods: i32) -> kind::Alarm {
    kind::Alarm {
        name,
        description: description.into(),
        period: 60,
        evaluation_periods: periods,
        threshold,
        comparison: comparison.into(),
        treat_missing_data: "notBreaching".into(),
        actions: vec![Val::to(TOPIC, "arn")],
        metric: None,
        expression: None,
        metrics: None,
    }
}

/// The alert topic and the alarms: dead letters, queue age, 5xx rate and unhealthy targets.
pub(super) fn alarms(stack: &Stack, public: Option<&str>) -> Vec<Desired> {
    let name = &stack.stack.0;
    let alerts = &stack.alerts;
    let topic = kind::Topic {
        name: topic_name(name),
        subscriptions: alerts.email.iter().map(|e| format!("email:{e}")).collect(),
        // The Prometheus workspace whose alert manager may publish (the topic's policy).
        publisher: stack.prometheus().then(|| Val::to(super::monitoring::WORKSPACE, "arn")),
    };
    let mut out = vec![Desired::of(TOPIC, &topic)];
    let queue = [("QueueName", Val::to(QUEUE, "name"))];
    if stack.queue.dead_letter.is_some() {
        let dead_letters = [("QueueName", Val::to(DEAD_LETTER_QUEUE, "name"))];
        let visible = metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", dead_letters, "Maximum");
        let description = "Messages the worker gave up on are waiting in the dead-letter queue (aira dlq list).";
        let a = alarm(format!("{name}-dead-letters"), description, 1.0, "GreaterThanOrEqualToThreshold", 1);
        out.push(Desired::of("alarm-dead-letters", &kind::Alarm { metric: Some(visible), ..a }));
    }
    let age = metric("AWS/SQS", "ApproximateAgeOfOldestMessage", queue, "Maximum");
    let a = alarm(
        format!("{name}-queue-age"),
        "The oldest queued chat request has waited too long: the workers do not keep up or are down.",
        alerts.oldest_message.secs() as f64,
        "GreaterThanThreshold",
        3,
    );
    out.push(Desired::of("alarm-queue-age", &kind::Alarm { metric: Some(age), ..a }));
    if let Some(svc) = public {
        let lb = ("LoadBalancer", Val::to(LOAD_BALANCER, "arn_suffix"));
        let elb = |m: &str| metric("AWS/ApplicationELB", m, [lb.clone()], "Sum");
        let a = alarm(
            format!("{name}-5xx-rate"),
            "Too many requests through the load balancer end in a 5xx (percent of all requests).",
            alerts.error_rate as f64,
            "GreaterThanThreshold",
            3,
        );
        let rate = kind::Alarm {
            expression: Some("100 * (FILL(elb, 0) + FILL(target, 0)) / requests".into()),
            metrics: Some(kind::Named::from_iter([
                ("elb", elb("HTTPCode_ELB_5XX_Count")),
                ("target", elb("HTTPCode_Target_5XX_Count")),
                ("requests", elb("RequestCount")),
            ])),
            ..a
        };
        out.push(Desired::of("alarm-5xx", &rate));
        let targets = [lb.clone(), ("TargetGroup", Val::to(&format!("tg-{svc}"), "arn_suffix"))];
        let unhealthy = metric("AWS/ApplicationELB", "UnHealthyHostCount", targets, "Maximum");
        let a = alarm(
            format!("{name}-unhealthy-targets"),
            "Tasks of the public service fail the load balancer's health check.",
            1.0,
            "GreaterThanOrEqualToThreshold",
            3,
        );
        out.push(Desired::of("alarm-unhealthy", &kind::Alarm { metric: Some(unhealthy), ..a }));
    }
    out
}
