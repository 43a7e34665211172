//! The AWS provider: the only crate that imports `aws-sdk-*`.
//!
//! Code map:
//! - `lib.rs`: configuration (`sdk_config`), [`AwsProvider`] (the SDK's `Clients` and the image
//!   this run pushes) and its [`Provider`] impl (dispatch through `kinds`), `link` (dependencies
//!   read from observed properties), the stacks of an account.
//! - `kinds.rs`: the one registry of kinds (`ops(kind)`, exhaustive) and the observe of every kind
//!   at once; the only module that names the kind modules, and named by `lib.rs` alone.
//! - `ops.rs`: what a kind module implements and works with, naming no kind: `KindOps`; `Cx`, all
//!   an operation reaches (the SDK's clients, not the provider; the image this run pushes; the
//!   stack; progress; and what the observes of one run share, `Observing`: a memo of load
//!   balancers, clusters and workspaces, filled by the find the first kind that asks passes);
//!   `creating` and `change`, an operation's typed inputs and the words its errors start with.
//! - `sdk.rs`: the SDK helpers every module uses: errors keeping AWS's code and kind, `found`,
//!   `is_gone`, `delete` (already gone is done), `read_back`, the adoption rule, tag lists, the
//!   adoption of resources listed by name (`adopt_each`, `adopted`), `pages` (every page of a
//!   paginated call), `retry_busy`, `poll_until`, `try_join_all`.
//! - `sqs.rs`, `dynamodb.rs`, `logs.rs`, `iam.rs`, `ecr.rs` (also pushes the image `up` built),
//!   `sns.rs`, `cloudwatch.rs`, `acm.rs`: one kind each; `aps.rs`: the Prometheus workspace, its
//!   rule groups and its alert manager definition; `waf.rs`: the AWS WAF web ACL, with the load
//!   balancer it protects as a property.
//! - `ec2/`: the network, a module a kind (`vpc`, `subnet`, `gateway`: internet gateway, Elastic
//!   IP, NAT; `route_table`, `security_group`, `endpoint`), `preflight` (zones, existing VPC, quotas).
//! - `elb/`: `load_balancer`, `target_group`, `listener`.
//! - `ecs/`: `cluster`, `task_definition`, `service`, `scaling` (Application Auto Scaling),
//!   `deploy_wait` (the deployment wait, also used by rollback).
//! - `route53/`: the DNS calls `acm.rs` shares, `record` (the alias-record kind), `zone` (the
//!   hosted zone and its delegation, for the pre-flight).
//! - `day2.rs` (status, logs, rollback), `dlq.rs` (the dead-letter queue's data plane),
//!   `lock.rs` (the stack lock), `secrets.rs` (the stack's secrets): not kinds, the CLI's other commands.

/// Awaits an SDK call; its error becomes a `ProviderError` saying what was being done and
/// AWS's error code and message.
macro_rules! call {
    ($what:expr, $fut:expr) => {
        $fut.await.map_err(|e| $crate::sdk::error(&$what, e))?
    };
}

mod acm;
mod aps;
mod bedrock;
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
mod kinds;
pub mod lock;
mod logs;
mod ops;
mod route53;
pub mod secrets;
mod sns;
mod sqs;
mod waf;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
pub use aws_config::SdkConfig;
use aws_config::{BehaviorVersion, Region};
use serde_json::Value;

use aira_engine::graph::LogicalId;
use aira_engine::provider::{Facts, Observed, Progress, Provider, ProviderError, Resolved, Scope, Silent};
use aira_engine::stack::Stack;

/// Tag on the load balancer and the certificate naming the hosted zone of their records.
pub(crate) const TAG_DNS_ZONE: &str = "aira:dns-zone";
/// The load balancer's tag naming its alias records (`kind::LoadBalancer::public_name`).
pub(crate) const TAG_DNS_NAME: &str = "aira:dns-name";

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
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(retry).http_client(aira_unify::https_client());
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

/// The AWS provider: the SDK's clients, and the image this run pushes. The engine drives it
/// through [`Provider`]; the CLI's other commands call its day-2 methods (`day2.rs`, `dlq.rs`,
/// `lock.rs`, `secrets.rs`).
pub struct AwsProvider {
    clients: Clients,
    images: ecr::Images,
}

/// The SDK's clients, one a service, on one configuration: all that a kind's operations reach
/// AWS through (`ops::Cx`).
pub(crate) struct Clients {
    pub region: String,
    pub sqs: aws_sdk_sqs::Client,
    pub ec2: aws_sdk_ec2::Client,
    /// The runtime's table and the stacks' locks.
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub acm: aws_sdk_acm::Client,
    pub route53: aws_sdk_route53::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sns: aws_sdk_sns::Client,
    pub aps: aws_sdk_amp::Client,
    /// The web ACL of the per-address rate limits (scope REGIONAL).
    pub waf: aws_sdk_wafv2::Client,
    /// The account's id, for the pre-flight.
    pub sts: aws_sdk_sts::Client,
    /// The pre-flight's read of a Bedrock model or inference profile.
    pub bedrock: aws_sdk_bedrock::Client,
}

impl AwsProvider {
    pub fn new(config: &SdkConfig) -> Self {
        let clients = Clients {
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
            aps: aws_sdk_amp::Client::new(config),
            waf: aws_sdk_wafv2::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            bedrock: aws_sdk_bedrock::Client::new(config),
        };
        AwsProvider { clients, images: ecr::Images::default() }
    }

    /// The image `up` built: task definitions naming its digest push it first (once).
    pub async fn set_image(&self, image: ecr::LocalImage) {
        self.images.set(image).await;
    }

    /// The context of one operation of a kind.
    fn cx<'a>(&'a self, scope: &'a Scope, progress: &'a dyn Progress, seen: &'a ops::Observing) -> ops::Cx<'a> {
        ops::Cx { aws: &self.clients, images: &self.images, scope, progress, seen }
    }
}

impl AwsProvider {
    /// The stack's queue and dead-letter queue, found by their tags.
    pub async fn queue_pair(&self, scope: &Scope) -> Result<dlq::QueuePair, ProviderError> {
        let queues = sqs::observe(&self.clients.sqs, scope).await?;
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
            use sdk::SdkTag;
            tags.iter().filter_map(|t| t.pair()).map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let vpcs = call!("list the stacks' VPCs", self.clients.ec2.describe_vpcs().filters(has_stack.clone()).send());
        vpcs.vpcs().iter().for_each(|v| add(tags_of(v.tags())));
        let groups = call!(
            "list the stacks' security groups",
            self.clients.ec2.describe_security_groups().filters(has_stack).send()
        );
        groups.security_groups().iter().for_each(|g| add(tags_of(g.tags())));
        let mut pages = self.clients.sqs.list_queues().max_results(1000).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk::error("list SQS queues", e))?;
            for url in page.queue_urls.unwrap_or_default() {
                if let Ok(out) = self.clients.sqs.list_queue_tags().queue_url(&url).send().await {
                    add(out.tags.unwrap_or_default().into_iter().collect());
                }
            }
        }
        Ok(found.into_values().collect())
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

#[async_trait]
impl Provider for AwsProvider {
    async fn facts(&self, stack: &Stack) -> Result<Facts, ProviderError> {
        let existing = async {
            match &stack.network.existing {
                Some(vpc) => ec2::existing(&self.clients.ec2, stack, vpc).await.map(|(t, e)| (t, Some(e))),
                None => Ok((Vec::new(), None)),
            }
        };
        let zone = async {
            match &stack.domain {
                Some(d) => route53::hosted_zone(&self.clients.route53, d).await.map(|(z, notes)| (Some(z), notes)),
                None => Ok((None, Vec::new())),
            }
        };
        let secrets = async {
            let (mut arns, mut own_key, mut missing) = (BTreeMap::new(), BTreeSet::new(), Vec::new());
            for name in stack.secret_names() {
                match secrets::preflight(&self.clients.secrets, name).await {
                    Ok((arn, own)) => {
                        arns.insert(name.to_string(), arn);
                        if own {
                            own_key.insert(name.to_string());
                        }
                    }
                    Err(e) => missing.push(e),
                }
            }
            ProviderError::all(missing).map_or(Ok((arns, own_key)), Err)
        };
        let quotas = ec2::quotas(&self.clients.ec2, &stack.stack.0, &stack.network);
        // The account, then the Bedrock model (an inference profile's ARN is the account's).
        let account = async {
            let out =
                call!("read the account's id (STS GetCallerIdentity)", self.clients.sts.get_caller_identity().send());
            let account = out.account().unwrap_or_default().to_string();
            let model = match stack.bedrock() {
                Some(llm) => {
                    let region = &self.clients.region;
                    Some(bedrock::preflight(&self.clients.bedrock, region, &account, &llm.model).await?)
                }
                None => None,
            };
            Ok((account, model))
        };
        // Every check runs to its end, so that one run reports every finding.
        let (zones, existing, zone, secrets, quotas, account) = tokio::join!(
            ec2::zones(&self.clients.ec2, &self.clients.region, stack),
            existing,
            zone,
            secrets,
            quotas,
            account
        );
        fn ok<T>(r: Result<T, ProviderError>, failed: &mut Vec<ProviderError>) -> Option<T> {
            r.map_err(|e| failed.push(e)).ok()
        }
        let mut f = Vec::new();
        let found = (
            ok(zones, &mut f),
            ok(existing, &mut f),
            ok(zone, &mut f),
            ok(secrets, &mut f),
            ok(quotas, &mut f),
            ok(account, &mut f),
        );
        let (
            Some(zones),
            Some((existing_private_route_tables, existing_egress)),
            Some((hosted_zone, mut notes)),
            Some((secrets, secrets_own_key)),
            Some(quota_notes),
            Some((account, model)),
        ) = found
        else {
            return Err(ProviderError::all(f).expect("a check failed"));
        };
        notes.extend(quota_notes);
        let bedrock = model.map(|(model, model_notes)| {
            notes.extend(model_notes);
            model
        });
        let region = self.clients.region.clone();
        Ok(Facts {
            region,
            account,
            zones,
            existing_private_route_tables,
            existing_egress,
            hosted_zone,
            secrets,
            secrets_own_key,
            notes,
            bedrock,
        })
    }

    async fn observe(&self, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
        let mut all = kinds::observe(&self.cx(scope, &Silent, &ops::Observing::default())).await?;
        link(&mut all);
        Ok(all)
    }

    async fn create(&self, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed, ProviderError> {
        kinds::ops(res.kind).create(&self.cx(scope, progress, &ops::Observing::default()), res).await
    }

    async fn update(
        &self,
        scope: &Scope,
        res: &Resolved,
        current: &Observed,
        progress: &dyn Progress,
    ) -> Result<Observed, ProviderError> {
        kinds::ops(res.kind).update(&self.cx(scope, progress, &ops::Observing::default()), res, current).await
    }

    async fn delete(&self, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<(), ProviderError> {
        kinds::ops(current.kind).delete(&self.cx(scope, progress, &ops::Observing::default()), current).await
    }
}
