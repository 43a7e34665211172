//! The pre-flight of a stack with a domain: its public hosted zone, and that public DNS
//! delegates the zone to it (with `hickory-resolver`, at `AIRA_DNS_RESOLVER` or the system's).

use std::time::Duration;

use aws_sdk_route53::Client;

use super::{norm, Result};
use aira_engine::provider::{HostedZone, ProviderError};
use aira_engine::stack::model::Domain;

/// The public hosted zone `domain.zone` names; a user error naming the fix when the account
/// has none, or only a private one.
/// Also checks that public DNS delegates the zone to it; returns notes when that check could
/// not be made.
pub async fn hosted_zone(r53: &Client, domain: &Domain) -> Result<(HostedZone, Vec<String>)> {
    let want = format!("{}.", domain.zone.0.trim_end_matches('.'));
    let out = call!(
        format!("look up hosted zone `{}`", domain.zone),
        r53.list_hosted_zones_by_name().dns_name(&want).max_items(100).send()
    );
    let zones: Vec<_> = out.hosted_zones().iter().filter(|z| z.name().eq_ignore_ascii_case(&want)).collect();
    let public = zones.iter().find(|z| !z.config().is_some_and(|c| c.private_zone()));
    match public {
        Some(z) => {
            let zone = HostedZone {
                id: z.id().trim_start_matches("/hostedzone/").to_string(),
                name: z.name().trim_end_matches('.').to_string(),
            };
            let notes = check_delegation(r53, &zone).await?;
            Ok((zone, notes))
        }
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

/// The name servers public DNS gives for the zone against the zone's delegation set: a user
/// error listing what to set at the registrar when they differ (ACM would wait 45 minutes for a
/// validation record nobody can see), a note when public DNS cannot be asked.
async fn check_delegation(r53: &Client, zone: &HostedZone) -> Result<Vec<String>> {
    let out =
        call!(format!("read hosted zone `{}` ({})", zone.name, zone.id), r53.get_hosted_zone().id(&zone.id).send());
    let mut expected: Vec<String> =
        out.delegation_set().map(|d| d.name_servers().iter().map(|n| norm(n)).collect()).unwrap_or_default();
    expected.sort();
    if expected.is_empty() {
        return Ok(Vec::new());
    }
    let public = match public_name_servers(&zone.name).await {
        Ok(ns) => ns,
        Err(why) => {
            return Ok(vec![format!(
                "could not check that public DNS delegates `{}` to its hosted zone ({why}); going on",
                zone.name
            )])
        }
    };
    if public == expected {
        return Ok(Vec::new());
    }
    let listed = expected.iter().map(|n| format!("  {n}.")).collect::<Vec<_>>().join("\n");
    let seen = if public.is_empty() { "none".to_string() } else { public.join(", ") };
    Err(ProviderError::user(format!(
        "domain.zone: public DNS does not delegate `{}` to its hosted zone {} (name servers seen: {seen}); \
         the certificate cannot be validated until it does. Set these NS records for `{}` at the registrar \
         (or in the parent zone):\n{listed}",
        zone.name, zone.id, zone.name
    )))
}

/// NS records of `name` in public DNS, sorted and normalised; an empty list when the name has
/// none; `Err` when DNS cannot be reached. Resolver: `AIRA_DNS_RESOLVER` (`ip:port`) if set,
/// else the system's configuration.
async fn public_name_servers(name: &str) -> std::result::Result<Vec<String>, String> {
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::Resolver;

    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 1;
    opts.cache_size = 0;
    let builder = match std::env::var("AIRA_DNS_RESOLVER").ok().filter(|v| !v.is_empty()) {
        Some(addr) => {
            let addr: std::net::SocketAddr =
                addr.parse().map_err(|e| format!("AIRA_DNS_RESOLVER `{addr}` is not ip:port: {e}"))?;
            let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioConnectionProvider::default(),
            )
        }
        None => Resolver::builder_tokio().map_err(|e| format!("no system DNS configuration: {e}"))?,
    };
    let resolver = builder.with_options(opts).build();
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let lookup = tokio::time::timeout(Duration::from_secs(4), resolver.ns_lookup(fqdn.as_str())).await;
    match lookup {
        Err(_) => Err("public DNS did not answer within 3s".into()),
        Ok(Ok(ns)) => {
            let mut found: Vec<String> = ns.iter().map(|n| norm(&n.0.to_ascii())).collect();
            found.sort();
            found.dedup();
            Ok(found)
        }
        Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
        Ok(Err(e)) => Err(format!("DNS lookup of {fqdn} NS failed: {e}")),
    }
}
