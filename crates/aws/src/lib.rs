//! The AWS provider: the only module that imports `aws-sdk-*`.

/// Awaits an SDK call; its error becomes a `ProviderError` saying what was being done and
/// AWS's error code and message.
macro_rules! call {
    ($what:expr, $fut:expr) => {
        $fut.await.map_err(|e| $crate::sdk::error(&$what, e))?
    };
}

mod acm;
mod cloudwatch;
pub mod day2;
pub mod dlq;
mod dynamodb;
mod ec2;
mod ecr;
pub(crate) mod sdk;
pub use ecr::LocalImage;
mod ecs;
mod elb;
mod iam;
pub mod lock;
mod logs;
mod route53;
pub mod secrets;
mod sns;
mod sqs;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
pub use aws_config::SdkConfig;
use aws_config::{BehaviorVersion, Region};
use serde_json::Value;

use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Facts, Observed, Progress, Provider, ProviderError, Resolved, Scope};
use aira_engine::stack::Stack;

/// Where and how to reach AWS; `None` fields fall back to the SDK's configuration chain
/// (environment, profiles, SSO, IMDS; `AWS_ENDPOINT_URL` included).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

pub async fn sdk_config(conn: &Connection) -> SdkConfig {
    // Throttling, `RequestLimitExceeded` and 5xx are retried with jittered exponential backoff
    // by the SDK's standard mode; more attempts than its default 3, since a run must converge.
    let retry = RetryConfig::standard()
        .with_max_attempts(10)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(10));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry);
    if let Some(region) = &conn.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &conn.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &conn.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

pub struct AwsProvider {
    region: String,
    sqs: aws_sdk_sqs::Client,
    ec2: aws_sdk_ec2::Client,
    /// The runtime's table and the stacks' locks.
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: aws_sdk_secretsmanager::Client,
    acm: aws_sdk_acm::Client,
    route53: aws_sdk_route53::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    iam: aws_sdk_iam::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    ecr: aws_sdk_ecr::Client,
    ecs: aws_sdk_ecs::Client,
    autoscaling: aws_sdk_applicationautoscaling::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    sns: aws_sdk_sns::Client,
    /// The image `up` built, pushed by the first task definition that needs it.
    image: tokio::sync::Mutex<Option<ecr::LocalImage>>,
    /// `repository@digest` pushed in this run (both task definitions name the same image).
    pushed: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl AwsProvider {
    pub fn new(config: &SdkConfig) -> Self {
        AwsProvider {
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
            sqs: aws_sdk_sqs::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            acm: aws_sdk_acm::Client::new(config),
            route53: aws_sdk_route53::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            ecr: aws_sdk_ecr::Client::new(config),
            ecs: aws_sdk_ecs::Client::new(config),
            autoscaling: aws_sdk_applicationautoscaling::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
            image: tokio::sync::Mutex::new(None),
            pushed: tokio::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// The image `up` built: task definitions naming its digest push it first (once).
    pub async fn set_image(&self, image: ecr::LocalImage) {
        *self.image.lock().await = Some(image);
    }
}

impl AwsProvider {
    /// The stack's queue and dead-letter queue, found by their tags.
    pub async fn queue_pair(&self, scope: &Scope) -> Result<dlq::QueuePair, ProviderError> {
        let queues = sqs::observe(&self.sqs, scope).await?;
        dlq::QueuePair::find(&queues).ok_or_else(|| {
            ProviderError::user(format!(
                "stack `{}` has no queue with a dead-letter queue on AWS (run `aira up` first)",
                scope.stack
            ))
        })
    }

    /// Every stack with resources in the account and region, from the tags of its VPC, security
    /// groups and queues (every stack has some of those).
    pub async fn stacks(&self) -> Result<Vec<StackSummary>, ProviderError> {
        use std::collections::BTreeMap;
        let mut found: BTreeMap<String, StackSummary> = BTreeMap::new();
        let mut add = |tags: BTreeMap<String, String>| {
            let Some(name) = tags.get(aira_engine::provider::TAG_STACK).cloned() else { return };
            let num = |k: &str| tags.get(k).and_then(|v| v.parse::<u64>().ok());
            let (created, expires) =
                (num(aira_engine::provider::TAG_CREATED_AT), num(aira_engine::provider::TAG_EXPIRES_AT));
            let entry = found.entry(name.clone()).or_insert_with(|| StackSummary {
                name,
                tags: BTreeMap::new(),
                created_at: None,
                expires_at: None,
            });
            entry.created_at = match (entry.created_at, created) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            entry.expires_at = match (entry.expires_at, expires) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for (k, v) in tags {
                entry.tags.entry(k).or_insert(v);
            }
        };
        let has_stack =
            aws_sdk_ec2::types::Filter::builder().name("tag-key").values(aira_engine::provider::TAG_STACK).build();
        let tags_of = |tags: &[aws_sdk_ec2::types::Tag]| -> BTreeMap<String, String> {
            tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect()
        };
        let vpcs = self.ec2.describe_vpcs().filters(has_stack.clone()).send().await;
        let vpcs =
            vpcs.map_err(|e| ProviderError::new(format!("list the stacks' VPCs: {}", crate::sdk::describe(&e))))?;
        vpcs.vpcs().iter().for_each(|v| add(tags_of(v.tags())));
        let groups = self.ec2.describe_security_groups().filters(has_stack).send().await;
        let groups = groups.map_err(|e| {
            ProviderError::new(format!("list the stacks' security groups: {}", crate::sdk::describe(&e)))
        })?;
        groups.security_groups().iter().for_each(|g| add(tags_of(g.tags())));
        let mut pages = self.sqs.list_queues().max_results(1000).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| ProviderError::new(format!("list SQS queues: {}", crate::sdk::describe(&e))))?;
            for url in page.queue_urls.unwrap_or_default() {
                if let Ok(out) = self.sqs.list_queue_tags().queue_url(&url).send().await {
                    add(out.tags.unwrap_or_default().into_iter().collect());
                }
            }
        }
        Ok(found.into_values().collect())
    }

    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        &self.sqs
    }

    pub fn secrets(&self) -> &aws_sdk_secretsmanager::Client {
        &self.secrets
    }

    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }
}

impl AwsProvider {
    /// Load balancers, target groups, listeners, then what hangs off them: the certificate and
    /// the alias records (found in the hosted zone that the load balancer's `aira:dns-zone` tag names).
    async fn observe_edge(&self, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
        let (elb, certificates) = tokio::try_join!(elb::observe(self, scope), acm::observe(self, scope))?;
        let records = route53::observe(self, scope, &elb).await?;
        Ok([elb, certificates, records].concat())
    }
}

/// A stack found in the account by its resources' tags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StackSummary {
    pub name: String,
    pub tags: std::collections::BTreeMap<String, String>,
    /// Unix seconds: the earliest `aira:created-at` of its resources.
    pub created_at: Option<u64>,
    /// Unix seconds: `aira:expires-at` (`up --ttl`).
    pub expires_at: Option<u64>,
}

/// Links between observed resources, read from the resources themselves: a property holding
/// another managed resource's id or ARN is a dependency on it.
fn link(observed: &mut [Observed]) {
    let ids: HashMap<String, LogicalId> = observed
        .iter()
        .flat_map(|o| {
            ["id", "arn"].into_iter().filter_map(|k| Some((o.outputs.get(k)?.as_str()?.to_string(), o.id.clone())))
        })
        .collect();
    fn walk(v: &Value, ids: &HashMap<String, LogicalId>, out: &mut Vec<LogicalId>) {
        match v {
            Value::String(s) => out.extend(ids.get(s).cloned()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, ids, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, ids, out)),
            _ => {}
        }
    }
    for o in observed.iter_mut() {
        let mut found = Vec::new();
        walk(&o.props, &ids, &mut found);
        o.depends_on.extend(found.into_iter().filter(|d| *d != o.id));
    }
}

/// The kinds `ec2.rs` handles, as a pattern.
macro_rules! network_kinds {
    () => {
        Kind::Vpc
            | Kind::Subnet
            | Kind::InternetGateway
            | Kind::ElasticIp
            | Kind::NatGateway
            | Kind::RouteTable
            | Kind::SecurityGroup
            | Kind::VpcEndpoint
    };
}

#[async_trait]
impl Provider for AwsProvider {
    async fn facts(&self, stack: &Stack) -> Result<Facts, ProviderError> {
        let existing = async {
            match &stack.network.existing {
                Some(vpc) => ec2::existing(&self.ec2, vpc).await,
                None => Ok(Vec::new()),
            }
        };
        let zone = async {
            match &stack.domain {
                Some(d) => route53::hosted_zone(&self.route53, d).await.map(|(z, notes)| (Some(z), notes)),
                None => Ok((None, Vec::new())),
            }
        };
        let secrets = async {
            let mut arns = std::collections::BTreeMap::new();
            for name in stack.secret_names() {
                arns.insert(name.to_string(), secrets::preflight(&self.secrets, name).await?);
            }
            Ok(arns)
        };
        let quotas = ec2::quotas(&self.ec2, &stack.stack.0, &stack.network);
        let (zones, existing_private_route_tables, (hosted_zone, mut notes), secrets, quota_notes) =
            tokio::try_join!(ec2::zones(&self.ec2), existing, zone, secrets, quotas)?;
        notes.extend(quota_notes);
        Ok(Facts { region: self.region.clone(), zones, existing_private_route_tables, hosted_zone, secrets, notes })
    }

    async fn observe(&self, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
        let (queues, network, table, logs, roles, repos, compute, edge, topics, alarms) = tokio::try_join!(
            sqs::observe(&self.sqs, scope),
            ec2::observe(&self.ec2, scope),
            dynamodb::observe(self, scope),
            logs::observe(self, scope),
            iam::observe(self, scope),
            ecr::observe(self, scope),
            ecs::observe(self, scope),
            self.observe_edge(scope),
            sns::observe(self, scope),
            cloudwatch::observe(self, scope),
        )?;
        let mut all = [queues, network, table, logs, roles, repos, compute, edge, topics, alarms].concat();
        link(&mut all);
        Ok(all)
    }

    async fn create(&self, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed, ProviderError> {
        match res.kind {
            Kind::SqsQueue => sqs::create(&self.sqs, scope, res).await,
            network_kinds!() => ec2::create(&self.ec2, scope, res, progress).await,
            Kind::Table => dynamodb::create(self, scope, res, progress).await,
            Kind::LogGroup => logs::create(self, scope, res).await,
            Kind::Role => iam::create(self, scope, res).await,
            Kind::Certificate => acm::create(self, scope, res, progress).await,
            Kind::DnsRecord => route53::create(self, scope, res, progress).await,
            Kind::LoadBalancer | Kind::TargetGroup | Kind::Listener => elb::create(self, scope, res, progress).await,
            Kind::Repository => ecr::create(self, scope, res).await,
            Kind::Cluster | Kind::TaskDefinition | Kind::Service => ecs::create(self, scope, res, progress).await,
            Kind::Topic => sns::create(self, scope, res).await,
            Kind::Alarm => cloudwatch::create(self, scope, res).await,
        }
    }

    async fn update(
        &self,
        scope: &Scope,
        res: &Resolved,
        current: &Observed,
        progress: &dyn Progress,
    ) -> Result<Observed, ProviderError> {
        match res.kind {
            Kind::SqsQueue => sqs::update(&self.sqs, scope, res, current).await,
            network_kinds!() => ec2::update(&self.ec2, scope, res, current, progress).await,
            Kind::Table => dynamodb::update(self, scope, res, current).await,
            Kind::LogGroup => logs::update(self, scope, res, current).await,
            Kind::Role => iam::update(self, scope, res, current).await,
            Kind::Certificate => acm::update(self, scope, res, current).await,
            Kind::DnsRecord => route53::update(self, scope, res, current, progress).await,
            Kind::LoadBalancer | Kind::TargetGroup | Kind::Listener => {
                elb::update(self, scope, res, current, progress).await
            }
            Kind::Repository => ecr::update(self, scope, res, current).await,
            Kind::Cluster | Kind::TaskDefinition | Kind::Service => {
                ecs::update(self, scope, res, current, progress).await
            }
            Kind::Topic => sns::update(self, scope, res, current).await,
            Kind::Alarm => cloudwatch::update(self, scope, res, current).await,
        }
    }

    async fn delete(&self, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<(), ProviderError> {
        match current.kind {
            Kind::SqsQueue => sqs::delete(&self.sqs, current).await,
            network_kinds!() => ec2::delete(&self.ec2, scope, current, progress).await,
            Kind::Table => dynamodb::delete(self, current, scope, progress).await,
            Kind::LogGroup => logs::delete(self, current).await,
            Kind::Role => iam::delete(self, current).await,
            Kind::Certificate => acm::delete(self, scope, current, progress).await,
            Kind::DnsRecord => route53::delete(self, current).await,
            Kind::LoadBalancer | Kind::TargetGroup | Kind::Listener => {
                elb::delete(self, scope, current, progress).await
            }
            Kind::Repository => ecr::delete(self, current).await,
            Kind::Cluster | Kind::TaskDefinition | Kind::Service => ecs::delete(self, scope, current, progress).await,
            Kind::Topic => sns::delete(self, current).await,
            Kind::Alarm => cloudwatch::delete(self, current).await,
        }
    }
}
