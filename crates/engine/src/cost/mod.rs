//! What a stack costs a month, by resource, from the price table ([`crate::prices`]: its date,
//! source and the regions it covers are in the file). Priced: what AWS bills by the hour or the month
//! whatever the traffic, plus a stated usage (`usage`: load balancer capacity units, log volume).
//! Not priced: requests and data (DynamoDB, SQS, AWS WAF's inspections, bytes through NAT gateways
//! and endpoints), which
//! docs/performance.md prices per answered message. A region the table lacks gets no figures and
//! a note saying so, never a guess.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use crate::expand::{service_id, task_id};
use crate::graph::LogicalId;
use crate::kind::{self, AnyProps, Kind, VpcEndpointType};
use crate::prices::{cents, table, Prices, NAT_INSTANCE_VOLUME_GB};

/// One resource to price: desired or observed, both in the same normal form.
#[derive(Debug, Clone)]
pub struct Priced<'a> {
    pub id: &'a LogicalId,
    pub props: AnyProps,
}

impl<'a> Priced<'a> {
    /// Every resource read as its kind's struct; one that does not fit is a note, never a $0 line.
    pub fn all(
        resources: impl Iterator<Item = (&'a LogicalId, Kind, &'a Value)>,
        notes: &mut Vec<String>,
    ) -> Vec<Self> {
        let mut out = Vec::new();
        for (id, kind, props) in resources {
            match AnyProps::parse(kind, props) {
                Ok(props) => out.push(Priced { id, props }),
                Err(e) => notes.push(format!("`{id}` ({kind}) is not priced: its properties do not fit: {e}")),
            }
        }
        out
    }
}

/// The stack's monthly cost after the plan, and what exists costs now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Estimate {
    pub region: String,
    pub currency: String,
    /// The date the table's prices were read, and where from.
    pub prices_checked: String,
    pub source: String,
    /// The figures; absent when the table has no prices for the region.
    #[serde(flatten)]
    pub totals: Option<Totals>,
    /// One per priced resource of the stack after the plan.
    pub lines: Vec<Line>,
    /// What the figures assume and leave out.
    pub notes: Vec<String>,
    /// A preview's: what the base's resources it uses cost a month, counted in the base's own
    /// plan and not in `monthly`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_monthly: Option<f64>,
}

impl Estimate {
    /// Sets what a preview shares from `base`, the estimate of the base's resources it uses.
    pub fn shared(&mut self, base: Estimate) {
        let Some(totals) = base.totals else { return };
        let mut lines: Vec<&Line> = base.lines.iter().collect();
        lines.sort_by(|a, b| b.monthly.total_cmp(&a.monthly));
        let named: Vec<String> = lines.iter().take(4).map(|l| format!("{} ${:.2}", l.id, l.monthly)).collect();
        self.notes.push(format!(
            "shared with the base and counted in its plan: ${:.2} a month ({}, …); the figures above are the preview's own",
            totals.monthly,
            named.join(", ")
        ));
        self.shared_monthly = Some(totals.monthly);
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Totals {
    /// After the plan, auto-scaled services at their minimum count.
    pub monthly: f64,
    /// After the plan, every auto-scaled service at its maximum count.
    pub monthly_at_max: f64,
    /// What exists now, by the same table.
    pub current_monthly: f64,
    /// `monthly - current_monthly`: what the plan changes.
    pub change: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    pub id: String,
    pub kind: String,
    pub what: String,
    pub monthly: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_at_max: Option<f64>,
}

/// Prices `desired` (the stack after the plan) and `current` (what exists) in `region`.
pub fn estimate(region: &str, desired: &[Priced], current: &[Priced]) -> Estimate {
    let t = table();
    let mut estimate = Estimate {
        region: region.to_string(),
        currency: t.currency.clone(),
        prices_checked: t.checked.clone(),
        source: t.source.clone(),
        totals: None,
        lines: Vec::new(),
        notes: Vec::new(),
        shared_monthly: None,
    };
    let model = model_note(desired, t.hours_per_month);
    let Some(prices) = t.regions.get(region) else {
        let covered: Vec<&str> = t.regions.keys().map(String::as_str).collect();
        estimate.notes.push(format!(
            "the price table has no prices for {region} (it covers {}): no estimate rather than a guess",
            covered.join(", ")
        ));
        estimate.notes.extend(model);
        return estimate;
    };
    estimate.lines = lines(prices, desired);
    let total = |lines: &[Line]| cents(lines.iter().map(|l| l.monthly).sum());
    let (after, now) = (total(&estimate.lines), total(&lines(prices, current)));
    estimate.totals = Some(Totals {
        monthly: after,
        monthly_at_max: cents(estimate.lines.iter().map(|l| l.monthly_at_max.unwrap_or(l.monthly)).sum()),
        current_monthly: now,
        change: cents(after - now),
    });
    estimate.notes = vec![
        format!(
            "usage assumed: {} load balancer capacity unit, {} GB of logs per log group a month, \
             {} Prometheus series a task pushed every {} s (storage and queries of the workspace not included)",
            t.usage.load_balancer_lcu,
            t.usage.log_gb_per_group_month,
            t.usage.prometheus_series_per_task,
            t.usage.remote_write_interval_secs
        ),
        format!(
            "not included: requests (DynamoDB on demand, SQS: about $12 per million answered messages, docs/performance.md), \
             data through NAT gateways (${}/GB) and endpoints, data out to the internet, the model",
            prices.nat_gateway_gb
        ),
    ];
    estimate.notes.extend(model);
    estimate
}

/// The model is priced by its provider, not by the table: what bounds its cost is the tokens
/// the runtime lets all users spend a day, read from the tasks' environment (`expand::spend_env`).
fn model_note(desired: &[Priced], hours_per_month: f64) -> Option<String> {
    let task = desired.iter().find_map(|r| match &r.props {
        AnyProps::TaskDefinition(task) => Some(task),
        _ => None,
    })?;
    let env = &task.container.as_ref()?.environment;
    // The offline echo model (no `llm`) costs nothing.
    let model = env.get("AIRA_LLM_MODEL")?.known()?;
    let daily: u64 = env.get("AIRA_DAILY_TOKENS")?.known()?.parse().ok()?;
    Some(if daily == 0 {
        format!("the model ({model}): no daily token bound (`llm.daily_tokens: 0`); its price is not in the table")
    } else {
        let monthly = daily as f64 * hours_per_month / 24.0 / 1e6;
        format!(
            "the model ({model}): at most {daily} tokens a day for all users together (`llm.daily_tokens`), \
             {monthly:.1} million a month; its price is not in the table"
        )
    })
}

fn lines(p: &Prices, resources: &[Priced]) -> Vec<Line> {
    let t = table();
    let month = |per_hour: f64| cents(per_hour * t.hours_per_month);
    let mut out = Vec::new();
    let (mut zones, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for r in resources {
        let mut at_max = None;
        // Every kind is named: a new kind does not compile until it is priced or said to be free.
        let (what, monthly) = match &r.props {
            AnyProps::LoadBalancer(lb) => {
                if let Some(zone) = &lb.dns_zone {
                    zones.insert(zone.clone());
                }
                let (lcu, ips) = (t.usage.load_balancer_lcu, lb.subnets.len());
                (
                    format!("load balancer, {lcu} capacity unit, {ips} public IPv4 addresses (one a zone)"),
                    month(p.load_balancer_hour + lcu * p.lcu_hour + ips as f64 * p.public_ipv4_hour),
                )
            }
            AnyProps::VpcEndpoint(e) => {
                // Gateway endpoints (S3, DynamoDB) are free.
                if e.r#type != VpcEndpointType::Interface {
                    continue;
                }
                let service = e.service.as_str();
                let service = service.rsplit_once(".amazonaws.").map(|(_, s)| s).unwrap_or(service);
                let zones = e.subnets.as_ref().map_or(0, Vec::len);
                let service = service.split_once('.').map(|(_, s)| s).unwrap_or(service);
                (
                    format!("interface endpoint ({service}) in {zones} zone{}", plural(zones)),
                    month(zones as f64 * p.interface_endpoint_zone_hour),
                )
            }
            AnyProps::NatGateway(_) => {
                (format!("NAT gateway (and ${}/GB it processes)", p.nat_gateway_gb), month(p.nat_gateway_hour))
            }
            AnyProps::NatInstance(n) => (
                format!(
                    "NAT instance ({}, its {NAT_INSTANCE_VOLUME_GB} GB volume; nothing per GB it forwards)",
                    n.instance_type
                ),
                cents(p.nat_instance_month()),
            ),
            AnyProps::ElasticIp(_) => ("public IPv4 address".to_string(), month(p.public_ipv4_hour)),
            AnyProps::Service(svc) => {
                // By logical ids (`service-NAME` runs `task-NAME`): a preview's ECS names differ.
                let name = r.id.0.strip_prefix(&service_id("")).unwrap_or(&svc.name);
                let task = resources.iter().find_map(|t| match &t.props {
                    AnyProps::TaskDefinition(task) if t.id.0 == task_id(name) => Some(task),
                    _ => None,
                });
                let Some(task) = task else { continue };
                let vcpu = task.cpu as f64 / 1024.0;
                let gb = task.memory as f64 / 1024.0;
                let per_task = p.fargate_vcpu_hour * vcpu + p.fargate_gb_hour * gb;
                let (low, high) = task_counts(svc);
                let tasks = match high {
                    Some(high) => {
                        at_max = Some(month(per_task * high as f64));
                        format!("{low} to {high} tasks")
                    }
                    None => format!("{low} task{}", plural(low as usize)),
                };
                (format!("Fargate: {tasks} of {vcpu} vCPU and {gb} GB"), month(per_task * low as f64))
            }
            AnyProps::Alarm(alarm) => {
                let metrics = alarm.metrics.as_ref().map_or(1, |m| m.0.len());
                (format!("alarm on {metrics} metric{}", plural(metrics)), cents(metrics as f64 * p.alarm_metric_month))
            }
            AnyProps::LogGroup(group) => {
                let gb = t.usage.log_gb_per_group_month;
                let days = group.retention_days;
                let kept_months = days.map_or(30.0, |d| d as f64) / 30.0;
                (
                    format!("logs: {gb} GB a month, kept {} days", days.map_or("null".into(), |d| d.to_string())),
                    cents(gb * p.log_ingest_gb + gb * kept_months * p.log_storage_gb_month),
                )
            }
            AnyProps::PrometheusWorkspace(_) => {
                let (what, monthly, max) = prometheus(p, resources);
                at_max = max;
                (what, monthly)
            }
            AnyProps::WebAcl(acl) => {
                let rules = acl.rules.len();
                (
                    format!(
                        "AWS WAF web ACL and {rules} rule{} (and ${}/million requests it inspects)",
                        plural(rules),
                        p.waf_requests_million
                    ),
                    cents(p.waf_web_acl_month + rules as f64 * p.waf_rule_month),
                )
            }
            AnyProps::TaskDefinition(task) => {
                let named = task.container.iter().flat_map(|c| c.secrets.iter().map(|(_, arn)| arn.clone()));
                secrets.extend(named);
                continue;
            }
            // Billed by use only (requests, storage, data), which the table does not price, or free.
            AnyProps::SqsQueue(_)
            | AnyProps::Vpc(_)
            | AnyProps::Subnet(_)
            | AnyProps::InternetGateway(_)
            | AnyProps::RouteTable(_)
            | AnyProps::SecurityGroup(_)
            | AnyProps::Table(_)
            | AnyProps::Role(_)
            | AnyProps::Certificate(_)
            | AnyProps::DnsRecord(_)
            | AnyProps::TargetGroup(_)
            | AnyProps::Listener(_)
            // Its evaluations count in the load balancer's capacity units (the usage assumed).
            | AnyProps::ListenerRule(_)
            | AnyProps::Repository(_)
            | AnyProps::Cluster(_)
            | AnyProps::Topic(_)
            | AnyProps::PrometheusRules(_)
            | AnyProps::AlertManager(_) => continue,
        };
        let kind = r.props.kind().to_string();
        out.push(Line { id: r.id.0.clone(), kind, what, monthly, monthly_at_max: at_max });
    }
    // Outside the stack but billed for it: the hosted zone its records live in, its secrets.
    out.extend(zones.into_iter().map(|zone| Line {
        id: zone,
        kind: "route53.hosted-zone".into(),
        what: "hosted zone (yours, not created by aira; alias queries are free)".into(),
        monthly: p.hosted_zone_month,
        monthly_at_max: None,
    }));
    out.extend(secrets.into_iter().map(|arn| Line {
        id: secret_name(&arn),
        kind: "secretsmanager.secret".into(),
        what: "secret (yours, not created by aira)".into(),
        monthly: p.secret_month,
        monthly_at_max: None,
    }));
    out
}

/// The workspace's line: what its series cost from the stack's tasks, and at their maximum.
fn prometheus(p: &Prices, resources: &[Priced]) -> (String, f64, Option<f64>) {
    let t = table();
    let services = resources.iter().filter_map(|s| match &s.props {
        AnyProps::Service(svc) => Some(task_counts(svc)),
        _ => None,
    });
    let (low, high) = services.fold((0, 0), |(l, h), (low, high)| (l + low, h + high.unwrap_or(low)));
    let (series, every) = (t.usage.prometheus_series_per_task, t.usage.remote_write_interval_secs);
    let per_task = series * t.hours_per_month * 3600.0 / every / 1e7 * p.prometheus_samples_10m;
    let at_max = (high > low).then(|| cents(per_task * high as f64));
    let what = format!("Prometheus: {series} series a task every {every} s from {low} task{}", plural(low as usize));
    (what, cents(per_task * low as f64), at_max)
}

/// A service's task count, and its maximum when it scales.
fn task_counts(service: &kind::Service) -> (u64, Option<u64>) {
    match &service.count {
        kind::TaskCount::Fixed(n) => ((*n).into(), None),
        kind::TaskCount::Auto(a) => (a.min.into(), Some(a.max.into())),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX` → `NAME-SUFFIX`.
fn secret_name(arn: &str) -> String {
    arn.split_once(":secret:").map_or(arn, |(_, name)| name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::{expand, Image};
    use crate::provider::Facts;

    fn graph(file: &str, edit: impl Fn(String) -> String) -> crate::graph::Graph {
        let path = crate::manifest_dir().join("../..").join(file);
        let text = edit(std::fs::read_to_string(path).unwrap());
        let stack = crate::stack::parse("aira.yaml", &text).unwrap().stack;
        let image = Image::Built { digest: "sha256:00".into(), repository: None, source: None };
        expand(&stack, &Facts::offline(&stack), &image).unwrap()
    }

    fn priced(g: &crate::graph::Graph) -> Vec<Priced<'_>> {
        let mut notes = Vec::new();
        let priced = Priced::all(g.resources.iter().map(|d| (&d.id, d.kind, &d.props)), &mut notes);
        assert_eq!(notes, Vec::<String>::new());
        priced
    }

    #[test]
    fn the_table_covers_its_regions_with_every_price() {
        let t = table();
        assert!(!t.regions.is_empty());
        assert_eq!(t.hours_per_month, 730.0, "AWS prices a month as 730 hours");
        assert_eq!(t.checked.len(), 10, "a date: YYYY-MM-DD");
    }

    #[test]
    fn the_canonical_stack_by_resource() {
        let g = graph("stacks/aira.yaml", |t| t);
        let e = estimate("us-east-1", &priced(&g), &[]);
        let text: String =
            e.lines.iter().map(|l| format!("${:.2} {} {}: {}\n", l.monthly, l.kind, l.id, l.what)).collect();
        expect_test::expect![[r#"
            $3.65 ec2.elastic-ip nat-ip-a: public IPv4 address
            $32.85 ec2.nat-gateway nat-a: NAT gateway (and $0.045/GB it processes)
            $3.65 ec2.elastic-ip nat-ip-b: public IPv4 address
            $32.85 ec2.nat-gateway nat-b: NAT gateway (and $0.045/GB it processes)
            $14.60 ec2.vpc-endpoint endpoint-sqs: interface endpoint (sqs) in 2 zones
            $14.60 ec2.vpc-endpoint endpoint-ecr-api: interface endpoint (ecr.api) in 2 zones
            $14.60 ec2.vpc-endpoint endpoint-ecr-dkr: interface endpoint (ecr.dkr) in 2 zones
            $14.60 ec2.vpc-endpoint endpoint-logs: interface endpoint (logs) in 2 zones
            $14.60 ec2.vpc-endpoint endpoint-secretsmanager: interface endpoint (secretsmanager) in 2 zones
            $14.60 ec2.vpc-endpoint endpoint-aps-workspaces: interface endpoint (aps-workspaces) in 2 zones
            $29.57 elbv2.load-balancer lb: load balancer, 1 capacity unit, 2 public IPv4 addresses (one a zone)
            $0.53 logs.log-group logs-api: logs: 1 GB a month, kept 30 days
            $18.02 ecs.service service-api: Fargate: 2 tasks of 0.25 vCPU and 0.5 GB
            $0.53 logs.log-group logs-worker: logs: 1 GB a month, kept 30 days
            $9.01 ecs.service service-worker: Fargate: 1 to 10 tasks of 0.25 vCPU and 0.5 GB
            $0.10 cloudwatch.alarm alarm-dead-letters: alarm on 1 metric
            $0.10 cloudwatch.alarm alarm-queue-age: alarm on 1 metric
            $0.30 cloudwatch.alarm alarm-5xx: alarm on 3 metrics
            $0.10 cloudwatch.alarm alarm-unhealthy: alarm on 1 metric
            $7.10 aps.workspace prometheus: Prometheus: 300 series a task every 30 s from 3 tasks
            $7.00 wafv2.web-acl waf: AWS WAF web ACL and 2 rules (and $0.6/million requests it inspects)
            $0.50 route53.hosted-zone ZOFFLINE: hosted zone (yours, not created by aira; alias queries are free)
            $0.40 secretsmanager.secret aira/openai: secret (yours, not created by aira)
        "#]]
        .assert_eq(&text);
        let t = e.totals.unwrap();
        assert_eq!(t.change, t.monthly, "nothing exists yet");
        let sum: f64 = e.lines.iter().map(|l| l.monthly).sum();
        assert_eq!(t.monthly, cents(sum));
        // The worker at 10 tasks instead of 1: 9 more of 9.01, and the workspace takes the
        // samples of 12 tasks (300 series every 30 s: 26.28 million samples a task-month, $0.90
        // per 10 million) instead of 3.
        let samples = 300.0 * 730.0 * 3600.0 / 30.0 / 1e7 * 0.90;
        assert_eq!(t.monthly_at_max, cents(sum + 9.0 * 9.01 + cents(12.0 * samples) - cents(3.0 * samples)));
        // The README's first screen shows this total and the resources' count.
        let readme = std::fs::read_to_string(crate::manifest_dir().join("../../README.md"));
        let total = readme.unwrap().lines().find(|l| l.starts_with("| Total")).map(String::from).unwrap_or_default();
        let row = format!("| {} | ${:.2} |", g.resources.len(), t.monthly);
        assert!(total.ends_with(&row), "README.md's total row `{total}` is not `… {row}`");
    }

    #[test]
    fn the_model_is_not_priced_but_its_daily_token_bound_is_shown() {
        let model_notes = |edit: &dyn Fn(String) -> String, region: &str| -> Vec<String> {
            let g = graph("stacks/aira.yaml", edit);
            estimate(region, &priced(&g), &[]).notes.into_iter().filter(|n| n.starts_with("the model")).collect()
        };
        expect_test::expect![[r#"
            [
                "the model (gpt-4o-mini): at most 2000000 tokens a day for all users together (`llm.daily_tokens`), 60.8 million a month; its price is not in the table",
            ]
        "#]]
        .assert_debug_eq(&model_notes(&|t| t, "us-east-1"));
        let unbounded = |t: String| t + "  daily_tokens: 0\n  user_daily_tokens: 0\n";
        expect_test::expect![[r#"
            [
                "the model (gpt-4o-mini): no daily token bound (`llm.daily_tokens: 0`); its price is not in the table",
            ]
        "#]]
        .assert_debug_eq(&model_notes(&unbounded, "us-east-1"));
        // A region without prices still shows the bound; the offline echo model costs nothing.
        assert_eq!(model_notes(&|t| t, "ap-southeast-7").len(), 1);
        let echo = |t: String| t[..t.find("llm:").unwrap()].to_string();
        assert_eq!(model_notes(&echo, "us-east-1"), Vec::<String>::new());
    }

    #[test]
    fn nat_gateways_cost_what_the_table_says_and_an_unknown_region_gets_no_guess() {
        let without = graph("examples/bedrock.yaml", |t| t);
        let with = graph("examples/bedrock.yaml", |t| t.replace("nat: false", "nat: true"));
        let e = estimate("us-east-1", &priced(&with), &priced(&without));
        // Two zones, each a NAT gateway ($0.045 an hour) and its address ($0.005 an hour), 730 hours.
        assert_eq!(e.totals.map(|t| t.change), Some(2.0 * (32.85 + 3.65)));
        // `nat: one`: one gateway and its address for both zones.
        let one = graph("examples/bedrock.yaml", |t| t.replace("nat: false", "nat: one"));
        let e = estimate("us-east-1", &priced(&one), &priced(&without));
        assert_eq!(e.totals.map(|t| t.change), Some(32.85 + 3.65));
        // `nat: instance`: a t4g.nano ($0.0042 an hour), its 8 GB volume ($0.08 a GB-month), its address.
        let instance = graph("examples/bedrock.yaml", |t| t.replace("nat: false", "nat: instance"));
        let e = estimate("us-east-1", &priced(&instance), &priced(&without));
        assert_eq!(e.totals.map(|t| t.change), Some(cents(3.07 + 0.64 + 3.65)));
        // The canonical stack (README's table: $233.86, with the hosted zone and the secret) with
        // each egress: a NAT gateway per zone, one for both, one NAT instance.
        let canonical: Vec<f64> = ["true", "one", "instance"]
            .iter()
            .map(|nat| {
                let g = graph("stacks/aira.yaml", |t| t.replace("nat: true", &format!("nat: {nat}")));
                estimate("us-east-1", &priced(&g), &[]).totals.unwrap().monthly
            })
            .collect();
        assert_eq!(canonical, [233.86, 197.36, 168.22]);
        let far = estimate("ap-southeast-7", &priced(&with), &[]);
        assert_eq!((far.totals, far.lines.len()), (None, 0));
        assert!(far.notes[0].contains("no prices for ap-southeast-7"), "{:?}", far.notes);
    }
}
