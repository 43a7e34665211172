//! The alert topic and the alarms.

use super::*;

pub const TOPIC: &str = "alerts";

pub fn topic_name(stack: &str) -> String {
    format!("{stack}-alerts")
}

/// A CloudWatch metric in an alarm: namespace, name, dimensions, statistic.
fn metric(namespace: &str, name: &str, dimensions: Value, statistic: &str) -> Value {
    json!({ "namespace": namespace, "metric": name, "dimensions": dimensions, "statistic": statistic })
}

/// An alarm on one metric (`metric`) or on an expression over several (`metrics` by id +
/// `expression`), notifying the stack's topic when it fires and when it recovers.
fn alarm(name: String, description: &str, source: Value, threshold: f64, comparison: &str, periods: u32) -> Value {
    let mut a = json!({
        "name": name,
        "description": description,
        "period": 60,
        "evaluation_periods": periods,
        "threshold": threshold,
        "comparison": comparison,
        "treat_missing_data": "notBreaching",
        "actions": [reference(TOPIC, "arn")],
    });
    for (k, v) in source.as_object().into_iter().flatten() {
        a[k] = v.clone();
    }
    a
}

/// The alert topic and the alarms: dead letters, queue age, 5xx rate and unhealthy targets.
pub(super) fn alarms(stack: &Stack, public: Option<&str>) -> Vec<Desired> {
    let name = &stack.stack.0;
    let alerts = &stack.alerts;
    let mut out = vec![Desired::new(
        TOPIC,
        Kind::Topic,
        json!({
            "name": topic_name(name),
            "subscriptions": alerts.email.iter().map(|e| format!("email:{e}")).collect::<Vec<_>>(),
            // The Prometheus workspace whose alert manager may publish (the topic's policy).
            "publisher": if stack.prometheus() { reference(super::monitoring::WORKSPACE, "arn") } else { Value::Null },
        }),
    )];
    let queue = json!({ "QueueName": reference(QUEUE, "name") });
    if stack.queue.dead_letter.is_some() {
        out.push(Desired::new(
            "alarm-dead-letters",
            Kind::Alarm,
            alarm(
                format!("{name}-dead-letters"),
                "Messages the worker gave up on are waiting in the dead-letter queue (aira dlq list).",
                json!({ "metric": metric("AWS/SQS", "ApproximateNumberOfMessagesVisible", json!({ "QueueName": reference(DEAD_LETTER_QUEUE, "name") }), "Maximum") }),
                1.0,
                "GreaterThanOrEqualToThreshold",
                1,
            ),
        ));
    }
    out.push(Desired::new(
        "alarm-queue-age",
        Kind::Alarm,
        alarm(
            format!("{name}-queue-age"),
            "The oldest queued chat request has waited too long: the workers do not keep up or are down.",
            json!({ "metric": metric("AWS/SQS", "ApproximateAgeOfOldestMessage", queue, "Maximum") }),
            alerts.oldest_message.secs() as f64,
            "GreaterThanThreshold",
            3,
        ),
    ));
    if let Some(svc) = public {
        let lb = json!({ "LoadBalancer": reference(LOAD_BALANCER, "arn_suffix") });
        let elb = |m: &str| metric("AWS/ApplicationELB", m, lb.clone(), "Sum");
        out.push(Desired::new(
            "alarm-5xx",
            Kind::Alarm,
            alarm(
                format!("{name}-5xx-rate"),
                "Too many requests through the load balancer end in a 5xx (percent of all requests).",
                json!({
                    "expression": "100 * (FILL(elb, 0) + FILL(target, 0)) / requests",
                    "metrics": {
                        "elb": elb("HTTPCode_ELB_5XX_Count"),
                        "target": elb("HTTPCode_Target_5XX_Count"),
                        "requests": elb("RequestCount"),
                    },
                }),
                alerts.error_rate as f64,
                "GreaterThanThreshold",
                3,
            ),
        ));
        out.push(Desired::new(
            "alarm-unhealthy",
            Kind::Alarm,
            alarm(
                format!("{name}-unhealthy-targets"),
                "Tasks of the public service fail the load balancer's health check.",
                json!({ "metric": metric(
                    "AWS/ApplicationELB",
                    "UnHealthyHostCount",
                    json!({ "LoadBalancer": reference(LOAD_BALANCER, "arn_suffix"), "TargetGroup": reference(&format!("tg-{svc}"), "arn_suffix") }),
                    "Maximum",
                ) }),
                1.0,
                "GreaterThanOrEqualToThreshold",
                3,
            ),
        ));
    }
    out
}
