//! The one registry of kinds: how each [`Kind`] is observed, created, updated and deleted on
//! AWS. [`ops`] matches every kind, so a kind added to the engine without its operations here
//! does not compile; [`observe`] runs every kind's observe at once.

use crate::ops::{Cx, KindOps};
use crate::{acm, aps, cloudwatch, dynamodb, ec2, ecr, ecs, elb, iam, logs, route53, sdk, sns, sqs, waf};
use aira_engine::graph::Kind;
use aira_engine::provider::{Observed, ProviderError};

/// The operations of a kind.
pub(crate) fn ops(kind: Kind) -> &'static dyn KindOps {
    match kind {
        Kind::SqsQueue => &sqs::Queue,
        Kind::Vpc => &ec2::vpc::Vpc,
        Kind::Subnet => &ec2::subnet::Subnet,
        Kind::InternetGateway => &ec2::gateway::InternetGateway,
        Kind::ElasticIp => &ec2::gateway::ElasticIp,
        Kind::NatGateway => &ec2::gateway::NatGateway,
        Kind::NatInstance => &ec2::nat_instance::NatInstance,
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
        Kind::ListenerRule => &elb::rule::ListenerRule,
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

/// Every kind's resources of the stack, in the order of [`Kind::ALL`].
pub(crate) async fn observe(cx: &Cx<'_>) -> Result<Vec<Observed>, ProviderError> {
    let all = sdk::try_join_all(Kind::ALL.iter().map(|k| ops(*k).observe(cx)).collect()).await?;
    Ok(all.concat())
}
