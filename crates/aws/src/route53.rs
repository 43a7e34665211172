//! Route 53: the stack's hosted zone (pre-flight, with its delegation checked in public DNS)
//! and its alias records.
//!
//! Record sets carry no tags: the records are found from the load balancers, whose tag
//! `aira:dns-zone` names the zone, as the A/AAAA aliases that point at them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_route53::error::ProvideErrorMetadata;
use aws_sdk_route53::types::{AliasTarget, Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecordSet, RrType};
use aws_sdk_route53::Client;
use serde_json::{json, Value};

use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{HostedZone, Observed, Progress, ProviderError, Resolved, Scope};
use aira_engine::stack::model::Domain;

type Result<T> = std::result::Result<T, ProviderError>;

/// The public hosted zone `domain.zone` names; a user error naming the fix when the account
/// has none, or only a private one.
/// Also checks that public DNS delegates the zone to it; returns notes when that check could
/// not be made.
pub async fn hosted_zone(r53: &Client, domain: &Domain) -> Result<(HostedZone, Vec<String>)> {
    let want = format!("{}.", domain.zone.0.trim_end_matches('.'));
    let out = r53.list_hosted_zones_by_name().dns_name(&want).max_items(100).send().await.map_err(|e| {
        ProviderError::new(format!("look up hosted zone `{}`: {}", domain.zone, crate::sdk::describe(&e)))
    })?;
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

/// A name in comparable form: lower case, no trailing dot.
fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An alias target's DNS name in comparable form: Route 53 stores `dualstack.` in front of a
/// load balancer's name.
fn norm_alias(name: &str) -> String {
    let n = norm(name);
    n.strip_prefix("dualstack.").map(String::from).unwrap_or(n)
}

/// The name servers public DNS gives for the zone against the zone's delegation set: a user
/// error listing what to set at the registrar when they differ (ACM would wait 45 minutes for a
/// validation record nobody can see), a note when public DNS cannot be asked.
async fn check_delegation(r53: &Client, zone: &HostedZone) -> Result<Vec<String>> {
    let out = r53.get_hosted_zone().id(&zone.id).send().await.map_err(|e| {
        ProviderError::new(format!("read hosted zone `{}` ({}): {}", zone.name, zone.id, crate::sdk::describe(&e)))
    })?;
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

fn code<E: ProvideErrorMetadata, R>(e: &aws_sdk_route53::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// The record set of a record in normal form.
fn record_set(props: &Value) -> Result<ResourceRecordSet> {
    let alias = &props["alias"];
    let target = AliasTarget::builder()
        .dns_name(alias["dns_name"].as_str().unwrap_or_default())
        .hosted_zone_id(alias["zone_id"].as_str().unwrap_or_default())
        .evaluate_target_health(false)
        .build()
        .map_err(|e| ProviderError::new(format!("alias target: {e}")))?;
    ResourceRecordSet::builder()
        .name(props["name"].as_str().unwrap_or_default())
        .r#type(RrType::from(props["type"].as_str().unwrap_or_default()))
        .alias_target(target)
        .build()
        .map_err(|e| ProviderError::new(format!("record set: {e}")))
}

/// Sends one change to a zone; the change id, to wait for.
pub(super) async fn change(
    r53: &Client,
    zone: &str,
    action: ChangeAction,
    set: ResourceRecordSet,
    comment: &str,
) -> std::result::Result<
    String,
    aws_sdk_route53::error::SdkError<
        aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError,
        aws_sdk_route53::config::http::HttpResponse,
    >,
> {
    let change = Change::builder().action(action).resource_record_set(set).build().expect("action and set are given");
    let batch = ChangeBatch::builder().changes(change).comment(comment).build().expect("changes are given");
    let out = r53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch).send().await?;
    Ok(out.change_info().map(|c| c.id().to_string()).unwrap_or_default())
}

/// Whether a DELETE failed because the record (or its zone) is not there.
pub(super) fn is_absent<E: ProvideErrorMetadata, R>(e: &aws_sdk_route53::error::SdkError<E, R>) -> bool {
    let msg = e.as_service_error().and_then(|s| s.message()).unwrap_or_default().to_ascii_lowercase();
    match code(e) {
        Some("NoSuchHostedZone") => true,
        Some("InvalidChangeBatch") => msg.contains("not found") || msg.contains("does not exist"),
        _ => false,
    }
}

/// Waits until a change has reached every Route 53 name server, saying so.
pub(super) async fn wait_insync(
    r53: &Client,
    scope: &Scope,
    progress: &dyn Progress,
    id: &LogicalId,
    change_id: &str,
    what: &str,
) -> Result<()> {
    if change_id.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    loop {
        let out = r53.get_change().id(change_id).send().await.map_err(|e| {
            ProviderError::new(format!("{what}: read change {change_id}: {}", crate::sdk::describe(&e)))
        })?;
        let status = out.change_info().map(|c| c.status().clone());
        if status == Some(ChangeStatus::Insync) {
            return Ok(());
        }
        if start.elapsed() > scope.wait {
            return Err(ProviderError::new(format!(
                "{what}: change {change_id} still {status:?} after {}s",
                scope.wait.as_secs()
            )));
        }
        progress.waiting(
            id,
            &format!(
                "{what}: change {change_id} is {}, waiting until Route 53 has it on all its name servers ({}s; typically under a minute)",
                status.map(|s| s.as_str().to_string()).unwrap_or_default(),
                start.elapsed().as_secs()
            ),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// All record sets of a zone.
async fn record_sets(r53: &Client, zone: &str) -> Result<Vec<ResourceRecordSet>> {
    let mut sets = Vec::new();
    let mut next: Option<(String, RrType)> = None;
    loop {
        let mut req = r53.list_resource_record_sets().hosted_zone_id(zone);
        if let Some((name, ty)) = next.take() {
            req = req.start_record_name(name).start_record_type(ty);
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if code(&e) == Some("NoSuchHostedZone") => return Ok(Vec::new()),
            Err(e) => {
                return Err(ProviderError::new(format!(
                    "list records of hosted zone {zone}: {}",
                    crate::sdk::describe(&e)
                )))
            }
        };
        sets.extend(out.resource_record_sets().iter().cloned());
        match (out.is_truncated(), out.next_record_name(), out.next_record_type()) {
            (true, Some(n), Some(t)) => next = Some((n.to_string(), t.clone())),
            _ => return Ok(sets),
        }
    }
}

pub async fn observe(p: &AwsProvider, _scope: &Scope, elb: &[Observed]) -> Result<Vec<Observed>> {
    let mut found = Vec::new();
    let mut listed: BTreeMap<String, Vec<ResourceRecordSet>> = BTreeMap::new();
    for lb in elb.iter().filter(|o| o.kind == Kind::LoadBalancer) {
        let (Some(zone), Some(dns_name)) =
            (lb.props["dns_zone"].as_str(), lb.outputs.get("dns_name").and_then(Value::as_str))
        else {
            continue;
        };
        if !listed.contains_key(zone) {
            listed.insert(zone.to_string(), record_sets(&p.route53, zone).await?);
        }
        for set in &listed[zone] {
            let ty = set.r#type().as_str();
            let id = match ty {
                "A" => "dns-a",
                "AAAA" => "dns-aaaa",
                _ => continue,
            };
            let Some(alias) = set.alias_target() else { continue };
            if norm_alias(alias.dns_name()) != norm_alias(dns_name) {
                continue;
            }
            found.push(Observed {
                id: LogicalId::from(id),
                kind: Kind::DnsRecord,
                physical_id: format!("{zone}/{}/{ty}", set.name()),
                props: json!({
                    "zone_id": zone,
                    "name": set.name(),
                    "type": ty,
                    "alias": { "dns_name": dns_name, "zone_id": alias.hosted_zone_id() },
                }),
                // The alias target as Route 53 stores it: a DELETE must name it exactly.
                outputs: BTreeMap::from([
                    ("name".to_string(), json!(set.name())),
                    ("target".to_string(), json!(alias.dns_name())),
                ]),
                // The record points at the load balancer by its DNS name, which `link` does not know.
                depends_on: BTreeSet::from([lb.id.clone()]),
            });
        }
    }
    Ok(found)
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    upsert(p, scope, res, progress, &format!("create {} `{}`", res.kind, res.id)).await
}

pub async fn update(
    p: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    _current: &Observed,
    progress: &dyn Progress,
) -> Result<Observed> {
    upsert(p, scope, res, progress, &format!("update {} `{}`", res.kind, res.id)).await
}

async fn upsert(
    p: &AwsProvider,
    scope: &Scope,
    res: &Resolved,
    progress: &dyn Progress,
    what: &str,
) -> Result<Observed> {
    let d = &res.props;
    let zone = d["zone_id"].as_str().unwrap_or_default();
    let (name, ty) = (d["name"].as_str().unwrap_or_default(), d["type"].as_str().unwrap_or_default());
    let comment = format!("aira stack {}: {}", scope.stack, res.id);
    let change_id = change(&p.route53, zone, ChangeAction::Upsert, record_set(d)?, &comment)
        .await
        .map_err(|e| ProviderError::new(format!("{what} ({name} {ty} in {zone}): {}", crate::sdk::describe(&e))))?;
    wait_insync(&p.route53, scope, progress, &res.id, &change_id, what).await?;
    // Read it back.
    let out = p
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(name)
        .start_record_type(RrType::from(ty))
        .max_items(1)
        .send()
        .await
        .map_err(|e| ProviderError::new(format!("{what}: read back: {}", crate::sdk::describe(&e))))?;
    let want = norm_alias(d["alias"]["dns_name"].as_str().unwrap_or_default());
    let set = out
        .resource_record_sets()
        .iter()
        .find(|s| norm(s.name()) == norm(name) && s.r#type().as_str() == ty)
        .ok_or_else(|| {
            ProviderError::new(format!("{what}: {name} {ty} is not in zone {zone} right after the change"))
        })?;
    let alias = set.alias_target();
    if alias.map(|a| norm_alias(a.dns_name())) != Some(want) {
        return Err(ProviderError::new(format!(
            "{what}: {name} {ty} in zone {zone} does not hold the alias just written"
        )));
    }
    let mut props = d.clone();
    props["name"] = json!(set.name());
    props["alias"]["zone_id"] = json!(alias.map(|a| a.hosted_zone_id()));
    Ok(Observed {
        id: res.id.clone(),
        kind: Kind::DnsRecord,
        physical_id: format!("{zone}/{}/{ty}", set.name()),
        props,
        outputs: BTreeMap::from([
            ("name".to_string(), json!(set.name())),
            ("target".to_string(), json!(alias.map(|a| a.dns_name()))),
        ]),
        depends_on: BTreeSet::new(),
    })
}

pub async fn delete(p: &AwsProvider, current: &Observed) -> Result<()> {
    let mut d = current.props.clone();
    if let Some(target) = current.outputs.get("target").filter(|t| t.is_string()) {
        d["alias"]["dns_name"] = target.clone();
    }
    let d = &d;
    let zone = d["zone_id"].as_str().unwrap_or_default();
    let what = format!("delete {} `{}` ({})", current.kind, current.id, current.physical_id);
    match change(&p.route53, zone, ChangeAction::Delete, record_set(d)?, "aira: delete").await {
        Ok(_) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    }
}
