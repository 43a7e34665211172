//! Route 53: the stack's hosted zone (pre-flight) and its alias records.
//! TODO(skeleton): records filled in by the edge work.

use aws_sdk_route53::Client;

use super::{aws_error, AwsProvider};
use crate::provider::{HostedZone, Observed, ProviderError, Resolved, Scope};
use crate::stack::model::Domain;

/// The public hosted zone `domain.zone` names; a user error naming the fix when the account
/// has none, or only a private one.
pub async fn hosted_zone(r53: &Client, domain: &Domain) -> Result<HostedZone, ProviderError> {
    let want = format!("{}.", domain.zone.0.trim_end_matches('.'));
    let out = r53
        .list_hosted_zones_by_name()
        .dns_name(&want)
        .max_items(100)
        .send()
        .await
        .map_err(|e| ProviderError::new(format!("look up hosted zone `{}`: {}", domain.zone, aws_error(e))))?;
    let zones: Vec<_> = out.hosted_zones().iter().filter(|z| z.name().eq_ignore_ascii_case(&want)).collect();
    let public = zones.iter().find(|z| !z.config().is_some_and(|c| c.private_zone()));
    match public {
        Some(z) => Ok(HostedZone {
            id: z.id().trim_start_matches("/hostedzone/").to_string(),
            name: z.name().trim_end_matches('.').to_string(),
        }),
        None if !zones.is_empty() => Err(ProviderError::user(format!(
            "domain.zone: the hosted zone `{}` in this account is private; the certificate's validation and the \
             public name need a public hosted zone (create one: `aws route53 create-hosted-zone --name {} --caller-reference $(date +%s)`)",
            domain.zone, domain.zone
        ))),
        None => Err(ProviderError::user(format!(
            "domain.zone: this account has no hosted zone `{}`; create a public one (`aws route53 create-hosted-zone \
             --name {} --caller-reference $(date +%s)`) and delegate the domain to its name servers",
            domain.zone, domain.zone
        ))),
    }
}

pub async fn observe(_p: &AwsProvider, _scope: &Scope, _elb: &[Observed]) -> Result<Vec<Observed>, ProviderError> {
    Ok(Vec::new())
}

pub async fn create(_p: &AwsProvider, _scope: &Scope, res: &Resolved) -> Result<Observed, ProviderError> {
    Err(ProviderError::new(format!("{}: not implemented", res.kind)))
}

pub async fn update(
    _p: &AwsProvider,
    _scope: &Scope,
    res: &Resolved,
    _current: &Observed,
) -> Result<Observed, ProviderError> {
    Err(ProviderError::new(format!("{}: not implemented", res.kind)))
}

pub async fn delete(_p: &AwsProvider, current: &Observed) -> Result<(), ProviderError> {
    Err(ProviderError::new(format!("{}: not implemented", current.kind)))
}
