//! The one registry of kinds: how each [`Kind`] is observed, created, updated and deleted on
//! AWS. [`ops`] matches every kind, so a kind added to the engine without its operations here
//! does not compile; [`observe`] runs every kind's observe at once.

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::{acm, aps, cloudwatch, dynamodb, ec2, ecr, ecs, elb, iam, logs, route53, sdk, sns, sqs, waf, AwsProvider};
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope, Silent};

/// What every operation of a kind works with: the provider, the stack, where progress goes.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub aws: &'a AwsProvider,
    pub scope: &'a Scope,
    pub progress: &'a dyn Progress,
}

/// What one kind does on AWS.
#[async_trait]
pub(crate) trait KindOps: Sync {
    /// Every resource of this kind tagged with the stack, duplicates included, oldest first.
    async fn observe(&self, cx: &Cx<'_>, seen: &Observing) -> Result<Vec<Observed>, ProviderError>;
    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed, ProviderError>;
    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed, ProviderError>;
    /// Deleting something already gone succeeds.
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<(), ProviderError>;
}

/// The operations of a kind.
pub(crate) fn ops(kind: Kind) -> &'static dyn KindOps {
    match kind {
        Kind::SqsQueue => &sqs::Queue,
        Kind::Vpc => &ec2::vpc::Vpc,
        Kind::Subnet => &ec2::subnet::Subnet,
        Kind::InternetGateway => &ec2::gateway::InternetGateway,
        Kind::ElasticIp => &ec2::gateway::ElasticIp,
        Kind::NatGateway => &ec2::gateway::NatGateway,
        Kind::RouteTable => &ec2::route_table::RouteTable,
        Kind::SecurityGroup => &ec2::security_group::SecurityGroup,
        Kind::VpcEndpoint => &ec2::endpoint::VpcEndpoint,
        Kind::Table => &dynamodb::Table,
        Kind::LogGroup => &logs::LogGroup,
        Kind::Role => &iam::Role,
        Kind::Certificate => &acm::Certificate,
        Kind::DnsRecord => &route53::record::AliasRecord,
        Kind::LoadBalancer => &elb::load_balancer::LoadBalancer,
        Kind::TargetGroup => &elb::target_group::TargetGroup,
        Kind::Listener => &elb::listener::Listener,
        Kind::Repository => &ecr::Repository,
        Kind::Cluster => &ecs::cluster::Cluster,
        Kind::TaskDefinition => &ecs::task_definition::TaskDefinition,
        Kind::Service => &ecs::service::Service,
        Kind::Topic => &sns::Topic,
        Kind::Alarm => &cloudwatch::Alarm,
        Kind::PrometheusWorkspace => &aps::Workspace,
        Kind::PrometheusRules => &aps::Rules,
        Kind::AlertManager => &aps::AlertManager,
        Kind::WebAcl => &waf::WebAcl,
    }
}

/// What the observes of one run share: kinds found through another kind's resources read
/// them from here, so each of those describes is made once per observe.
#[derive(Default)]
pub(crate) struct Observing {
    /// The stack's load balancers (listeners, alias records and the web ACL's association hang
    /// off them).
    load_balancers: OnceCell<Vec<Observed>>,
    /// The stack's ECS clusters (services are listed by cluster).
    clusters: OnceCell<Vec<Observed>>,
    /// The stack's Prometheus workspaces (rule groups and alert routes live in them).
    workspaces: OnceCell<Vec<Observed>>,
}

impl Observing {
    pub async fn load_balancers(&self, aws: &AwsProvider, scope: &Scope) -> Result<&[Observed], ProviderError> {
        let found = self.load_balancers.get_or_try_init(|| elb::load_balancer::find(&aws.elb, scope, None)).await?;
        Ok(found)
    }

    pub async fn clusters(&self, aws: &AwsProvider, scope: &Scope) -> Result<&[Observed], ProviderError> {
        Ok(self.clusters.get_or_try_init(|| ecs::cluster::find(aws, scope)).await?)
    }

    pub async fn workspaces(&self, aws: &AwsProvider, scope: &Scope) -> Result<&[Observed], ProviderError> {
        Ok(self.workspaces.get_or_try_init(|| aps::find(aws, scope)).await?)
    }
}

/// Every kind's resources of the stack, in the order of [`Kind::ALL`].
pub(crate) async fn observe(aws: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
    let (seen, cx) = (&Observing::default(), &Cx { aws, scope, progress: &Silent });
    let all = sdk::try_join_all(Kind::ALL.iter().map(|k| ops(*k).observe(cx, seen)).collect()).await?;
    Ok(all.concat())
}
