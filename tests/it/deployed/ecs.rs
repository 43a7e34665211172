//! ECS's scheduler for the stack's services, as moto records them: each service's tasks started
//! from its task definition, registered with its target group, replaced when they exit or fail
//! their health check, and rolled to a new task definition as the deployment configuration says
//! (start new tasks up to `maximumPercent`; stop old ones while `minimumHealthyPercent` stays
//! healthy; a stopped target drains for the group's deregistration delay, then SIGTERM, then
//! SIGKILL after `stopTimeout`). What it runs is what `DescribeServices` reports to `aira` (the
//! proxy's `Rewrites::service_state`), so `aira up` waits for these tasks as it waits for ECS's.
//! It reads the services through the conforming proxy, which keeps the deployment configuration
//! and grace period aira sent (moto drops them); the settings it rolled with are kept
//! ([`Agent::settings`]) for the harness to hold against what aira sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aira_testkit::rewrite::Rewrites;
use serde_json::json;

use super::lb::{HealthCheck, State, TargetGroup};
use super::task::{Host, Task};
use super::vpc::{Placement, Source};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Running,
    /// Deregistered: no new requests; stopped after the deregistration delay.
    Draining,
    Stopping,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Container {
    Unknown,
    Healthy,
    Unhealthy,
}

struct Entry {
    task: Arc<Task>,
    service: String,
    phase: Phase,
    health: Arc<Mutex<Container>>,
}

struct Service {
    name: String,
    primary: String,
    desired: usize,
    min_healthy: usize,
    max_total: usize,
    grace: Duration,
    /// Target group ARN and container port.
    target: Option<(String, u16)>,
    /// The settings as `DescribeServices` gave them (a missing one as `null`: the rollout then
    /// runs with ECS's defaults, which the harness must see).
    settings: serde_json::Value,
    /// `awsvpcConfiguration`: the subnets its tasks spread over, their groups, a public address.
    subnets: Vec<String>,
    groups: Vec<String>,
    public_ip: bool,
}

impl From<&aws_sdk_ecs::types::Service> for Service {
    fn from(s: &aws_sdk_ecs::types::Service) -> Service {
        let desired = s.desired_count().max(0) as usize;
        let config = s.deployment_configuration();
        let min = config.and_then(|c| c.minimum_healthy_percent()).unwrap_or(100) as usize;
        let max = config.and_then(|c| c.maximum_percent()).unwrap_or(200) as usize;
        let vpc = s.network_configuration().and_then(|n| n.awsvpc_configuration());
        Service {
            subnets: vpc.map(|v| v.subnets().to_vec()).unwrap_or_default(),
            groups: vpc.map(|v| v.security_groups().to_vec()).unwrap_or_default(),
            public_ip: vpc.and_then(|v| v.assign_public_ip()).is_some_and(|a| a.as_str() == "ENABLED"),
            name: s.service_name().unwrap_or_default().to_string(),
            primary: s.task_definition().unwrap_or_default().to_string(),
            desired,
            min_healthy: (desired * min).div_ceil(100),
            max_total: (desired * max / 100).max(desired),
            grace: Duration::from_secs(s.health_check_grace_period_seconds().unwrap_or(0) as u64),
            target: s.load_balancers().first().map(|lb| {
                (lb.target_group_arn().unwrap_or_default().to_string(), lb.container_port().unwrap_or(0) as u16)
            }),
            settings: json!({
                "minimumHealthyPercent": config.and_then(|c| c.minimum_healthy_percent()),
                "maximumPercent": config.and_then(|c| c.maximum_percent()),
                "healthCheckGracePeriodSeconds": s.health_check_grace_period_seconds(),
            }),
        }
    }
}

pub struct Agent {
    host: Arc<Host>,
    rewrites: Rewrites,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    groups: tokio::sync::Mutex<BTreeMap<String, Arc<TargetGroup>>>,
    tasks: Mutex<Vec<Entry>>,
    started: Instant,
    events: Mutex<Vec<String>>,
    settings: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Tasks launched so far, which spreads them over their service's subnets (zones) in turn.
    launched: std::sync::atomic::AtomicUsize,
}

impl Agent {
    pub fn start(host: Arc<Host>, rewrites: Rewrites, elb: aws_sdk_elasticloadbalancingv2::Client) -> Arc<Agent> {
        rewrites.run_tasks();
        let agent = Arc::new(Agent {
            host,
            rewrites,
            elb,
            groups: Default::default(),
            tasks: Mutex::new(Vec::new()),
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
            settings: Mutex::new(BTreeMap::new()),
            launched: Default::default(),
        });
        let a = agent.clone();
        tokio::spawn(async move {
            loop {
                a.tick().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        agent
    }

    fn event(&self, what: String) {
        eprintln!("[ecs {:6.1}s] {what}", self.started.elapsed().as_secs_f64());
        self.events.lock().unwrap().push(what);
    }

    /// The target group of a service, read from moto once.
    pub async fn group(&self, arn: &str) -> Arc<TargetGroup> {
        let mut groups = self.groups.lock().await;
        if let Some(g) = groups.get(arn) {
            return g.clone();
        }
        let tg = self.elb.describe_target_groups().target_group_arns(arn).send().await.unwrap();
        let tg = &tg.target_groups()[0];
        let attributes = self.elb.describe_target_group_attributes().target_group_arn(arn).send().await.unwrap();
        let delay = attributes
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value()?.parse().ok())
            .unwrap_or(300);
        let check = HealthCheck {
            path: tg.health_check_path().unwrap_or("/").to_string(),
            interval: Duration::from_secs(tg.health_check_interval_seconds().unwrap_or(30) as u64),
            timeout: Duration::from_secs(tg.health_check_timeout_seconds().unwrap_or(5) as u64),
            healthy: tg.healthy_threshold_count().unwrap_or(5) as u32,
            unhealthy: tg.unhealthy_threshold_count().unwrap_or(2) as u32,
            matcher: tg.matcher().and_then(|m| m.http_code()).and_then(|c| c.parse().ok()).unwrap_or(200),
        };
        // The load balancer's groups and subnets: where its connections to the targets come from.
        let lbs = self.elb.describe_load_balancers().set_load_balancer_arns(Some(tg.load_balancer_arns().to_vec()));
        let lbs = lbs.send().await.unwrap();
        let lb = &lbs.load_balancers()[0];
        let source = Source {
            groups: lb.security_groups().to_vec(),
            subnets: lb.availability_zones().iter().filter_map(|z| z.subnet_id().map(String::from)).collect(),
        };
        self.event(format!("target group {arn}: {check:?}, deregistration delay {delay} s, from {source:?}"));
        let g = TargetGroup::new(check, Duration::from_secs(delay), source);
        groups.insert(arn.to_string(), g.clone());
        g
    }

    /// The services of the cluster as moto holds them; `None` when moto could not say (the
    /// tick then changes nothing: a failed read is not a deleted service).
    async fn services(&self) -> Option<Vec<Service>> {
        let ecs = &self.host.ecs;
        if self.host.cluster.get().is_none() {
            let clusters = ecs.list_clusters().send().await.ok()?;
            let Some(arn) = clusters.cluster_arns().first() else { return Some(Vec::new()) };
            let _ = self.host.cluster.set(arn.rsplit('/').next().unwrap_or(arn).to_string());
        }
        let cluster = self.host.cluster.get().unwrap();
        let list = match ecs.list_services().cluster(cluster).send().await {
            Ok(list) => list,
            // `down` deleted the cluster: its services are gone.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_cluster_not_found_exception()) => {
                return Some(Vec::new())
            }
            Err(_) => return None,
        };
        if list.service_arns().is_empty() {
            return Some(Vec::new());
        }
        let out = ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(list.service_arns().to_vec()))
            .send()
            .await
            .ok()?;
        Some(out.services().iter().filter(|s| s.status() == Some("ACTIVE")).map(Service::from).collect())
    }

    async fn tick(self: &Arc<Self>) {
        let Some(services) = self.services().await else { return };
        // Tasks of services that are gone (deleted, or scaled to nothing below) stop.
        let gone: Vec<Arc<Task>> = {
            let tasks = self.tasks.lock().unwrap();
            tasks
                .iter()
                .filter(|e| e.phase == Phase::Running && !services.iter().any(|s| s.name == e.service))
                .map(|e| e.task.clone())
                .collect()
        };
        for t in gone {
            self.stop(&t.id, "its service is gone").await;
        }
        for s in &services {
            let changed = self.settings.lock().unwrap().insert(s.name.clone(), s.settings.clone());
            if changed.as_ref() != Some(&s.settings) {
                self.event(format!("{}: rolls with {}", s.name, s.settings));
            }
            self.reconcile(s).await;
        }
    }

    /// The deployment settings each service rolls with now, as `DescribeServices` gave them.
    pub fn settings(&self, service: &str) -> serde_json::Value {
        self.settings.lock().unwrap().get(service).cloned().unwrap_or_default()
    }

    fn healthy(&self, e: &Entry, group: Option<&Arc<TargetGroup>>) -> bool {
        let container = match e.task.definition.health {
            Some(_) => *e.health.lock().unwrap() == Container::Healthy,
            None => true,
        };
        let target = group.is_none_or(|g| g.state(&e.task.id) == Some(State::Healthy));
        e.phase == Phase::Running && container && target
    }

    async fn reconcile(self: &Arc<Self>, s: &Service) {
        let group = match &s.target {
            Some((arn, _)) => Some(self.group(arn).await),
            None => None,
        };
        // Exited containers are gone; ECS replaces them below.
        let exited: Vec<Arc<Task>> = {
            let mut tasks = self.tasks.lock().unwrap();
            let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut *tasks)
                .into_iter()
                .partition(|e| e.service == s.name && e.phase == Phase::Running && e.task.exited());
            *tasks = kept;
            gone.into_iter().map(|e| e.task).collect()
        };
        for t in exited {
            if let Some(g) = &group {
                g.remove(&t.id);
            }
            let log = t.log();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            self.event(format!("{}: task {} exited: {}", s.name, t.id, tail.join(" | ")));
        }
        // Failing a health check: ECS stops the task (a failing target only after the grace period).
        let failing: Vec<String> = {
            let tasks = self.tasks.lock().unwrap();
            tasks
                .iter()
                .filter(|e| e.service == s.name && e.phase == Phase::Running)
                .filter(|e| {
                    *e.health.lock().unwrap() == Container::Unhealthy
                        || (e.task.started.elapsed() > s.grace
                            && group.as_ref().is_some_and(|g| g.state(&e.task.id) == Some(State::Unhealthy)))
                })
                .map(|e| e.task.id.clone())
                .collect()
        };
        for id in failing {
            self.stop(&id, "it failed its health check").await;
        }

        let (new, old_healthy, new_healthy, old_running, all) = {
            let tasks = self.tasks.lock().unwrap();
            let mine: Vec<&Entry> = tasks.iter().filter(|e| e.service == s.name).collect();
            let running = |e: &&&Entry| e.phase == Phase::Running;
            let new: Vec<String> = mine
                .iter()
                .filter(running)
                .filter(|e| e.task.definition.arn == s.primary)
                .map(|e| e.task.id.clone())
                .collect();
            let new_healthy =
                mine.iter().filter(|e| e.task.definition.arn == s.primary && self.healthy(e, group.as_ref())).count();
            let old_running: Vec<(String, bool)> = mine
                .iter()
                .filter(running)
                .filter(|e| e.task.definition.arn != s.primary)
                .map(|e| (e.task.id.clone(), self.healthy(e, group.as_ref())))
                .collect();
            let old_healthy = old_running.iter().filter(|(_, h)| *h).count();
            (new, old_healthy, new_healthy, old_running, mine.len())
        };
        // Start new tasks up to the desired count, within maximumPercent of all running ones.
        let room = s.max_total.saturating_sub(all);
        for _ in 0..s.desired.saturating_sub(new.len()).min(room) {
            self.launch(s, group.as_ref()).await;
        }
        // Scale in: the newest tasks beyond the desired count stop.
        for id in new.iter().skip(s.desired) {
            self.stop(id, "the service's desired count went down").await;
        }
        // Old tasks stop while at least minimumHealthyPercent of the desired count stays healthy.
        let mut healthy = new_healthy + old_healthy;
        let mut old = old_running;
        old.sort_by_key(|(_, h)| *h); // unhealthy ones first
        for (id, was_healthy) in old {
            if was_healthy && healthy <= s.min_healthy {
                break;
            }
            self.stop(&id, "a newer task definition is deployed").await;
            healthy -= usize::from(was_healthy);
        }
        self.publish(s, group.as_ref());
    }

    async fn launch(self: &Arc<Self>, s: &Service, group: Option<&Arc<TargetGroup>>) {
        let d = self.host.definition(&s.primary).await;
        let n = self.launched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subnet = s.subnets.get(n % s.subnets.len().max(1)).cloned().unwrap_or_default();
        let placement = Placement { subnet, groups: s.groups.clone(), public_ip: s.public_ip };
        let task = match Task::start(&self.host, d.clone(), placement).await {
            Ok(task) => Arc::new(task),
            Err(why) => {
                // ECS tries again (here on the next tick); said once while it keeps failing.
                let said = format!("{}: cannot start a task: {why}", s.name);
                if self.events.lock().unwrap().last() != Some(&said) {
                    self.event(said);
                }
                return;
            }
        };
        self.event(format!(
            "{}: started task {} of {} in {}",
            s.name,
            task.id,
            d.arn.rsplit('/').next().unwrap_or(""),
            task.placement.subnet
        ));
        if let (Some(g), Some((_, port))) = (group, &s.target) {
            g.register(task.clone(), *port);
        }
        let health = Arc::new(Mutex::new(Container::Unknown));
        if let Some(h) = d.health.clone() {
            let (t, state) = (task.clone(), health.clone());
            tokio::spawn(async move {
                let mut failures = 0;
                loop {
                    // As Docker runs it: the first check one interval after the start.
                    tokio::time::sleep(h.interval).await;
                    if t.exited() {
                        return;
                    }
                    let passed = t.check().await == Some(true);
                    let mut st = state.lock().unwrap();
                    if passed {
                        failures = 0;
                        *st = Container::Healthy;
                    } else if t.started.elapsed() > h.start_period {
                        failures += 1;
                        if failures >= h.retries {
                            *st = Container::Unhealthy;
                        }
                    }
                }
            });
        }
        self.tasks.lock().unwrap().push(Entry { task, service: s.name.clone(), phase: Phase::Running, health });
    }

    /// Stops a task as ECS does: deregistered and drained first when it is a target.
    async fn stop(self: &Arc<Self>, id: &str, why: &str) {
        let (task, service) = {
            let mut tasks = self.tasks.lock().unwrap();
            let Some(e) = tasks.iter_mut().find(|e| e.task.id == id && e.phase == Phase::Running) else { return };
            e.phase = Phase::Draining;
            (e.task.clone(), e.service.clone())
        };
        let group = {
            let groups = self.groups.lock().await;
            groups.values().find(|g| g.state(id).is_some()).cloned()
        };
        self.event(format!("{service}: stopping task {id}: {why}"));
        let agent = self.clone();
        tokio::spawn(async move {
            if let Some(g) = &group {
                g.deregister(&task.id);
                tokio::time::sleep(g.deregistration_delay).await;
                g.remove(&task.id);
            }
            agent.set_phase(&task.id, Phase::Stopping);
            let took = task.stop().await;
            agent.event(format!("{service}: task {} stopped {:.1} s after SIGTERM", task.id, took.as_secs_f64()));
            agent.tasks.lock().unwrap().retain(|e| e.task.id != task.id);
        });
    }

    fn set_phase(&self, id: &str, phase: Phase) {
        if let Some(e) = self.tasks.lock().unwrap().iter_mut().find(|e| e.task.id == id) {
            e.phase = phase;
        }
    }

    /// What `DescribeServices` says of the service: its deployments by task definition.
    fn publish(&self, s: &Service, group: Option<&Arc<TargetGroup>>) {
        let tasks = self.tasks.lock().unwrap();
        let mine: Vec<&Entry> = tasks.iter().filter(|e| e.service == s.name).collect();
        let mut by_definition: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for e in &mine {
            let c = by_definition.entry(e.task.definition.arn.as_str()).or_default();
            if self.healthy(e, group) {
                c.0 += 1;
            } else if e.phase == Phase::Running {
                c.1 += 1;
            }
        }
        let (running, pending) = by_definition.get(s.primary.as_str()).copied().unwrap_or_default();
        let done = running == s.desired
            && mine.iter().all(|e| e.task.definition.arn == s.primary && e.phase == Phase::Running);
        let mut deployments = vec![json!({
            "id": format!("ecs-svc/{}", s.primary.rsplit(':').next().unwrap_or("1")),
            "status": "PRIMARY",
            "taskDefinition": s.primary,
            "desiredCount": s.desired,
            "runningCount": running,
            "pendingCount": pending,
            "rolloutState": if done { "COMPLETED" } else { "IN_PROGRESS" },
            "rolloutStateReason": if done { "ECS deployment completed." } else { "ECS deployment in progress." },
        })];
        for (td, (healthy, starting)) in &by_definition {
            if *td != s.primary {
                deployments.push(json!({
                    "id": format!("ecs-svc/{}", td.rsplit(':').next().unwrap_or("0")),
                    "status": "ACTIVE",
                    "taskDefinition": td,
                    "desiredCount": 0,
                    "runningCount": healthy + starting,
                    "pendingCount": 0,
                    "rolloutState": "COMPLETED",
                }));
            }
        }
        let all: usize = mine.len();
        self.rewrites.service_state(
            &s.name,
            json!({ "deployments": deployments, "runningCount": all, "pendingCount": pending }),
        );
    }

    /// The tasks running now: `(service, task id, task definition ARN)`.
    pub fn running(&self) -> Vec<(String, Arc<Task>)> {
        self.tasks
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.phase == Phase::Running)
            .map(|e| (e.service.clone(), e.task.clone()))
            .collect()
    }

    /// A running task of `service`.
    pub fn task_of(&self, service: &str) -> Arc<Task> {
        let running = self.running().into_iter().find(|(s, _)| s == service);
        running.unwrap_or_else(|| panic!("no {service} task runs")).1
    }

    /// Every task of the run, stopped or not, is stopped now.
    pub async fn stop_all(self: &Arc<Self>) {
        let ids: Vec<String> = self.running().into_iter().map(|(_, t)| t.id.clone()).collect();
        for id in ids {
            self.stop(&id, "the harness ends").await;
        }
        while !self.tasks.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}
