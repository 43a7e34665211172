//! The wait for a service's deployment: until the rollout completes, saying what it waits for
//! (tasks running and pending, the service's new events, why tasks stopped, the health of the
//! load balancer's targets), failing with the reason of a failed rollout or rollback, or with
//! what was still pending at the deadline. Its own loop, not `sdk::poll_until`: what it shows
//! names each look's deployment, and it never sleeps past the deadline.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{DeploymentRolloutState, DesiredStatus};

use super::{Result, POLL};
use crate::Clients;
use aira_engine::graph::LogicalId;
use aira_engine::provider::{Progress, ProviderError, Repair, Scope};

/// Waits until the service's deployment of `task_definition` completes: the PRIMARY
/// deployment's rollout COMPLETED, or, where no rollout state is reported, one deployment with
/// all its tasks running. A failed rollout or a circuit-breaker rollback is an error with the
/// reason; so is the deadline (`scope.wait`), naming what was still pending.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn wait_deployed(
    p: &Clients,
    scope: &Scope,
    id: &LogicalId,
    cluster: &str,
    service: &str,
    task_definition: &str,
    seen_events: &BTreeSet<String>,
    progress: &dyn Progress,
) -> Result<()> {
    let start = Instant::now();
    let mut seen = seen_events.clone();
    let mut events: Vec<String> = Vec::new();
    loop {
        let what = format!("read ECS service `{id}` ({service})");
        let out = call!(what, p.ecs.describe_services().cluster(cluster).services(service).send());
        let Some(s) = out.services().first() else {
            return Err(ProviderError::new(format!("{what}: the service is gone")));
        };
        // Newest first in the answer: keep them in order of time.
        let mut new: Vec<String> = s
            .events()
            .iter()
            .filter(|e| e.id().is_some_and(|i| seen.insert(i.to_string())))
            .filter_map(|e| e.message().map(String::from))
            .collect();
        new.reverse();
        events.extend(new);
        let deployments = s.deployments();
        let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
        let (desired, running, pending) = primary
            .map(|d| (d.desired_count(), d.running_count(), d.pending_count()))
            .unwrap_or((s.desired_count(), s.running_count(), s.pending_count()));
        let deployment_id = primary.and_then(|d| d.id()).unwrap_or("(none)").to_string();
        match judge(deployments, task_definition) {
            Verdict::Done => return Ok(()),
            Verdict::Failed(why) => {
                return Err(ProviderError::new(format!(
                    "deployment {deployment_id} of service `{service}` {why}{}",
                    last_event(&events)
                )))
            }
            Verdict::Pending => {}
        }
        let stopped = stopped_reasons(p, cluster, service).await;
        let targets = target_health(p, s).await;
        let status = format!(
            "{running} of {desired} tasks running, {pending} pending{}{}{}",
            last_event(&events),
            if stopped.is_empty() { String::new() } else { format!("; stopped tasks: {}", stopped.join("; ")) },
            if targets.is_empty() { String::new() } else { format!("; targets: {targets}") },
        );
        if start.elapsed() >= scope.wait {
            return Err(ProviderError::new(format!(
                "deployment of service `{service}` did not complete in {}s: {status}",
                scope.wait.as_secs()
            )));
        }
        let others = deployments.len().saturating_sub(1);
        progress.waiting(
            id,
            &format!(
                "deployment {deployment_id} of service `{service}`{}: {status} ({}s of {}s)",
                if others > 0 { format!(" (replacing {others} older)") } else { String::new() },
                start.elapsed().as_secs(),
                scope.wait.as_secs()
            ),
        );
        tokio::time::sleep(POLL.min(scope.wait.saturating_sub(start.elapsed())).max(Duration::from_millis(100))).await;
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Done,
    /// Why the deployment failed, as the end of "deployment … of service `x` …".
    Failed(String),
    Pending,
}

/// Where a deployment of `task_definition` stands, from the service's deployments.
fn judge(deployments: &[aws_sdk_ecs::types::Deployment], task_definition: &str) -> Verdict {
    let Some(primary) = deployments.iter().find(|d| d.status() == Some("PRIMARY")) else { return Verdict::Pending };
    let failed = deployments.iter().find(|d| d.rollout_state() == Some(&DeploymentRolloutState::Failed));
    let reason = |d: &aws_sdk_ecs::types::Deployment| d.rollout_state_reason().unwrap_or("no reason given").to_string();
    match primary.rollout_state() {
        Some(DeploymentRolloutState::Failed) => Verdict::Failed(format!("failed: {}", reason(primary))),
        // The circuit breaker rolled back: the primary deployment is the previous revision again.
        Some(_) if primary.task_definition() != Some(task_definition) => Verdict::Failed(format!(
            "was rolled back by the circuit breaker to {}: {}",
            primary.task_definition().unwrap_or("the previous revision"),
            failed.map(reason).unwrap_or_else(|| "no reason given".into())
        )),
        Some(DeploymentRolloutState::Completed) => Verdict::Done,
        Some(_) => Verdict::Pending,
        // No rollout state reported (the moto server): one deployment with all its tasks running.
        None if deployments.len() == 1 && primary.running_count() == primary.desired_count() => Verdict::Done,
        None => Verdict::Pending,
    }
}

/// What observe reports of a service whose last deployment failed: its PRIMARY deployment
/// FAILED (the circuit breaker stopped it, no new tasks are launched), or a FAILED deployment
/// beside a PRIMARY the circuit breaker rolled back to. Either way the service may run fewer
/// tasks than it should, or the previous revision, while its definition matches the stack:
/// the plan redeploys it. `None` while a deployment is in progress or after one completed.
pub(crate) fn repair(deployments: &[aws_sdk_ecs::types::Deployment]) -> Option<Repair> {
    let failed = deployments.iter().find(|d| d.rollout_state() == Some(&DeploymentRolloutState::Failed))?;
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"))?;
    let reason = failed.rollout_state_reason().unwrap_or("no reason given");
    let tasks = format!("{} of {} tasks running", primary.running_count(), primary.desired_count());
    let state = if std::ptr::eq(failed, primary) {
        format!("last deployment FAILED ({tasks})")
    } else {
        format!(
            "last deployment FAILED and was rolled back to {} ({tasks})",
            primary.task_definition().unwrap_or("the previous revision")
        )
    };
    Some(Repair { reason: format!("{state} — {}; redeploying", reason.trim_end_matches('.')), replace: false })
}

fn last_event(events: &[String]) -> String {
    match events.last() {
        Some(e) => format!("; last event: {e}"),
        None => "; last event: none yet".into(),
    }
}

/// Why the service's recently stopped tasks stopped (deduplicated; at most three).
async fn stopped_reasons(p: &Clients, cluster: &str, service: &str) -> Vec<String> {
    let Ok(list) =
        p.ecs.list_tasks().cluster(cluster).service_name(service).desired_status(DesiredStatus::Stopped).send().await
    else {
        return Vec::new();
    };
    let arns: Vec<String> = list.task_arns().iter().take(10).cloned().collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let Ok(tasks) = p.ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await else {
        return Vec::new();
    };
    let mut reasons = Vec::new();
    for t in tasks.tasks() {
        let mut reason = t.stopped_reason().unwrap_or("stopped").to_string();
        if let Some(c) = t.containers().iter().find(|c| c.reason().is_some() || c.exit_code().is_some_and(|x| x != 0)) {
            reason.push_str(&format!(
                " (container {}: {}{})",
                c.name().unwrap_or("?"),
                c.reason().unwrap_or(""),
                c.exit_code().map(|x| format!(" exit code {x}")).unwrap_or_default()
            ));
        }
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    reasons.truncate(3);
    reasons
}

/// The health of the targets of the service's target group: `10.0.2.7:8080 unhealthy (…)`.
async fn target_health(p: &Clients, s: &aws_sdk_ecs::types::Service) -> String {
    let Some(tg) = s.load_balancers().first().and_then(|l| l.target_group_arn()) else { return String::new() };
    let Ok(out) = p.elb.describe_target_health().target_group_arn(tg).send().await else { return String::new() };
    let list: Vec<String> = out
        .target_health_descriptions()
        .iter()
        .map(|d| {
            let target =
                d.target().map(|t| format!("{}:{}", t.id().unwrap_or("?"), t.port().unwrap_or(0))).unwrap_or_default();
            let health = d.target_health();
            let state = health.and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_default();
            match health.and_then(|h| h.description()) {
                Some(why) => format!("{target} {state} ({why})"),
                None => format!("{target} {state}"),
            }
        })
        .collect();
    if list.is_empty() {
        "none registered yet".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::Deployment;

    fn deployment(status: &str, td: &str, state: Option<DeploymentRolloutState>, running: i32) -> Deployment {
        Deployment::builder()
            .id(format!("ecs-svc/{td}"))
            .status(status)
            .task_definition(td)
            .set_rollout_state(state)
            .rollout_state_reason("ECS deployment circuit breaker: tasks failed to start.")
            .desired_count(2)
            .running_count(running)
            .build()
    }

    #[test]
    fn deployments_are_judged() {
        use DeploymentRolloutState::*;
        let new = "td:2";
        assert_eq!(judge(&[deployment("PRIMARY", new, Some(Completed), 2)], new), Verdict::Done);
        let rolling =
            [deployment("PRIMARY", new, Some(InProgress), 1), deployment("ACTIVE", "td:1", Some(Completed), 2)];
        assert_eq!(judge(&rolling, new), Verdict::Pending);
        match judge(&[deployment("PRIMARY", new, Some(Failed), 0)], new) {
            Verdict::Failed(why) => assert!(why.starts_with("failed: ECS deployment circuit breaker"), "{why}"),
            v => panic!("{v:?}"),
        }
        // Rolled back: the old revision is primary again, the new one failed.
        let back = [deployment("PRIMARY", "td:1", Some(InProgress), 2), deployment("ACTIVE", new, Some(Failed), 0)];
        match judge(&back, new) {
            Verdict::Failed(why) => {
                assert!(why.contains("rolled back by the circuit breaker to td:1"), "{why}");
                assert!(why.contains("tasks failed to start"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // No rollout state (moto): one deployment, all tasks running.
        assert_eq!(judge(&[deployment("PRIMARY", new, None, 2)], new), Verdict::Done);
        assert_eq!(judge(&[deployment("PRIMARY", new, None, 1)], new), Verdict::Pending);
        assert_eq!(judge(&[], new), Verdict::Pending);
    }

    #[test]
    fn failed_deployments_are_repaired() {
        use DeploymentRolloutState::*;
        let new = "td:2";
        let failed = repair(&[deployment("PRIMARY", new, Some(Failed), 0)]).expect("a repair");
        assert_eq!(
            failed.reason,
            "last deployment FAILED (0 of 2 tasks running) — ECS deployment circuit breaker: tasks failed to start; \
             redeploying"
        );
        assert!(!failed.replace);
        let back = [deployment("PRIMARY", "td:1", Some(InProgress), 2), deployment("ACTIVE", new, Some(Failed), 0)];
        let why = repair(&back).expect("a repair").reason;
        assert!(why.starts_with("last deployment FAILED and was rolled back to td:1 (2 of 2 tasks running)"), "{why}");
        // In progress, completed, or no rollout state (moto): nothing to repair.
        assert_eq!(repair(&[deployment("PRIMARY", new, Some(InProgress), 1)]), None);
        assert_eq!(repair(&[deployment("PRIMARY", new, Some(Completed), 2)]), None);
        assert_eq!(repair(&[deployment("PRIMARY", new, None, 2)]), None);
    }
}
