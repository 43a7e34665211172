//! `aira status` on AWS: resources by kind, drift, services, endpoint, certificate, queues, the
//! lock. Built once as a [`StackStatus`]; the text is rendered from it, the JSON serialized.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::args::{Global, StackArg};
use super::session::Session;
use crate::failure::Failure;
use crate::output::{Printer, Render};
use crate::time::{rfc3339, rfc3339_or_dash};
use aira_aws::day2::{ServiceStatus, TargetHealth};
use aira_aws::dlq;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::plan::{Action, Summary};
use aira_engine::provider::Observed;

#[derive(Debug, Serialize)]
pub struct StackStatus {
    pub stack: String,
    pub url: Option<String>,
    /// Kind → how many exist.
    pub resources: BTreeMap<String, usize>,
    pub pending_changes: usize,
    pub summary: Summary,
    pub services: Vec<ServiceStatus>,
    pub targets: Vec<Targets>,
    pub certificate: Option<Certificate>,
    pub queues: Option<Queues>,
    /// Where the tasks' metrics go and how to look at them (`monitoring`).
    pub metrics: Option<Metrics>,
    pub lock: Option<LockHolder>,
}

/// The stack's Prometheus workspace.
#[derive(Debug, Serialize)]
pub struct Metrics {
    pub workspace: String,
    /// The Prometheus API of the workspace: a Grafana data source with SigV4 (service `aps`).
    pub query_url: String,
    pub remote_write_url: String,
    /// The committed dashboard, and how to import it.
    pub dashboard: &'static str,
    pub guide: &'static str,
}

/// The targets of one target group.
#[derive(Debug, Serialize)]
pub struct Targets {
    pub target_group: LogicalId,
    pub health: TargetHealth,
}

#[derive(Debug, Serialize)]
pub struct Certificate {
    pub arn: String,
    pub status: String,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Queues {
    pub queue: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub oldest_age_secs: Option<u64>,
    pub dead_letters: u64,
}

/// As `AwsProvider::lock_holder` reports it.
#[derive(Debug, Serialize, Deserialize)]
pub struct LockHolder {
    pub holder: Option<String>,
    pub acquired_at: Option<u64>,
    /// Unix seconds.
    pub expires_at: u64,
}

pub async fn status(global: &Global, arg: &StackArg, printer: &Printer) -> Result<StackStatus, Failure> {
    let session = Session::connect(global, arg, printer).await?;
    let stack = session.stack().to_string();
    let plan = session.plan_deployed(printer).await?;
    let observed: Vec<&Observed> = plan.steps.iter().filter_map(|s| s.current.as_ref()).collect();
    let mut resources: BTreeMap<String, usize> = BTreeMap::new();
    for o in &observed {
        *resources.entry(o.kind.name().to_string()).or_default() += 1;
    }
    let output = |kind: Kind, key: &str| -> Option<String> {
        observed.iter().find(|o| o.kind == kind).and_then(|o| o.outputs.get(key)?.as_str().map(String::from))
    };
    // The queues were just observed for the plan: no second lookup.
    let queues = match dlq::QueuePair::find(observed.iter().copied()) {
        Some(pair) => {
            let (visible, in_flight, delayed) = session.aws.queue_depth(&pair.queue_url).await?;
            let dead_letters = session.aws.queue_messages(&pair.dlq_url).await?;
            let name = pair.queue_url.rsplit('/').next().unwrap_or_default();
            let oldest_age_secs = session.aws.oldest_message_age(name).await?;
            Some(Queues { queue: pair.queue_url, visible, in_flight, delayed, oldest_age_secs, dead_letters })
        }
        None => None,
    };
    let services = session.aws.services_status(&session.scope, &session.service_names(None)?).await?;
    let mut targets = Vec::new();
    for tg in observed.iter().filter(|o| o.kind == Kind::TargetGroup) {
        let health = session.aws.target_health(&tg.physical_id).await?;
        targets.push(Targets { target_group: tg.id.clone(), health });
    }
    let certificate = match output(Kind::Certificate, "arn") {
        Some(arn) => {
            let (status, expires_at) = session.aws.certificate_status(&arn).await?;
            Some(Certificate { arn, status, expires_at })
        }
        None => None,
    };
    let url = match (session.url(), output(Kind::LoadBalancer, "dns_name")) {
        (Some(url), Some(_)) if certificate.is_some() => Some(url),
        (_, Some(dns)) => Some(format!("http://{dns}/")),
        _ => None,
    };
    let lock = match session.aws.lock_holder(&stack).await {
        Some(l) => Some(serde_json::from_value(l).map_err(anyhow::Error::from)?),
        None => None,
    };
    let metrics = output(Kind::PrometheusWorkspace, "id").map(|workspace| Metrics {
        workspace,
        query_url: output(Kind::PrometheusWorkspace, "endpoint").unwrap_or_default(),
        remote_write_url: output(Kind::PrometheusWorkspace, "remote_write_url").unwrap_or_default(),
        dashboard: "templates/monitoring/grafana/dashboards/aira.json",
        guide: "templates/monitoring/README.md, \"Against a deployed stack\"",
    });
    let pending_changes = plan.steps.iter().filter(|s| s.action != Action::NoOp).count();
    Ok(StackStatus {
        stack,
        url,
        resources,
        pending_changes,
        summary: plan.summary,
        services,
        targets,
        certificate,
        queues,
        metrics,
        lock,
    })
}

impl Render for StackStatus {
    fn text(&self, p: &Printer) {
        let total: usize = self.resources.values().sum();
        p.out(&format!("Stack `{}`: {total} resource(s) on AWS.", self.stack));
        if let Some(url) = &self.url {
            p.out(&format!("URL: {url}"));
        }
        for (k, n) in &self.resources {
            p.out(&format!("  {n:>3} {k}"));
        }
        p.out(&match self.pending_changes {
            0 => "In sync with the stack file.".to_string(),
            n => format!("{n} change(s) pending: run `aira plan` to see them."),
        });
        for s in &self.services {
            service_text(s, p);
        }
        for t in &self.targets {
            let states: Vec<String> = t.health.states.iter().map(|(state, n)| format!("{n} {state}")).collect();
            let states = if states.is_empty() { "none registered".to_string() } else { states.join(", ") };
            p.out(&format!("Targets of {}: {states}", t.target_group));
            for reason in &t.health.reasons {
                p.out(&format!("  {reason}"));
            }
        }
        if let Some(c) = &self.certificate {
            p.out(&format!("Certificate: {}, expires {}", c.status, rfc3339_or_dash(c.expires_at)));
        }
        if let Some(q) = &self.queues {
            p.out(&format!(
                "Queue: {} waiting (oldest {}), {} in flight, {} delayed; dead letters: {}.",
                q.visible,
                q.oldest_age_secs.map_or_else(|| "-".into(), |s| format!("{s}s")),
                q.in_flight,
                q.delayed,
                q.dead_letters
            ));
        }
        if let Some(m) = &self.metrics {
            p.out(&format!(
                "Metrics: Prometheus workspace {} (query {} with SigV4, service `aps`); dashboard {}, imported as {} says.",
                m.workspace, m.query_url, m.dashboard, m.guide
            ));
        }
        match &self.lock {
            Some(l) => {
                p.out(&format!("Locked by {} until {}.", l.holder.as_deref().unwrap_or("?"), rfc3339(l.expires_at)))
            }
            None => p.out("Not locked."),
        }
    }
}

/// A service: tasks, what it runs, deployments not yet complete, the latest event.
fn service_text(s: &ServiceStatus, p: &Printer) {
    p.out(&format!(
        "Service {}: {} running of {} desired, {} pending; {} ({})",
        s.name,
        s.running,
        s.desired,
        s.pending,
        s.task_definition,
        s.image.as_deref().unwrap_or("no image")
    ));
    for d in s.deployments.iter().filter(|d| d.status != "PRIMARY" || d.rollout.as_deref() != Some("COMPLETED")) {
        p.out(&format!(
            "  deployment {} {} {}: {}/{} running, {} pending{}",
            d.id,
            d.status,
            d.rollout.as_deref().unwrap_or("-"),
            d.running,
            d.desired,
            d.pending,
            d.rollout_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
        ));
    }
    if let Some(e) = s.events.first() {
        p.out(&format!("  latest event: {e}"));
    }
}
