//! The public service's certificate: requested with DNS validation, its validation record
//! written into the stack's hosted zone, waited for until ISSUED.
//!
//! Found with `list_certificates` (every status, so a certificate still validating is adopted
//! rather than requested twice) and then its tags. The hosted zone of its validation record is
//! kept in the tag `aira:dns-zone`, so that `down` removes that record without the stack file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_acm::error::ProvideErrorMetadata;
use aws_sdk_acm::types::{CertificateDetail, CertificateStatus, Tag, ValidationMethod};
use aws_sdk_route53::types::{ChangeAction, ResourceRecord, ResourceRecordSet, RrType};
use serde_json::json;

use crate::{route53, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

type Result<T> = std::result::Result<T, ProviderError>;

const TAG_DNS_ZONE: &str = "aira:dns-zone";

fn code<E: ProvideErrorMetadata, R>(e: &aws_sdk_acm::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn is_gone<E: ProvideErrorMetadata, R>(e: &aws_sdk_acm::error::SdkError<E, R>) -> bool {
    code(e) == Some("ResourceNotFoundException")
}

/// `list_certificates` filters by status: every one of them, so that a certificate still
/// validating (or failed) is found too.
fn every_status() -> Vec<CertificateStatus> {
    use CertificateStatus as S;
    vec![S::PendingValidation, S::Issued, S::Inactive, S::Expired, S::ValidationTimedOut, S::Revoked, S::Failed]
}

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    use CertificateStatus as S;
    let mut summaries = Vec::new();
    let statuses =
        [S::PendingValidation, S::Issued, S::Inactive, S::Expired, S::ValidationTimedOut, S::Revoked, S::Failed];
    let mut pages = p.acm.list_certificates().set_certificate_statuses(Some(statuses.to_vec())).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::new(format!("list ACM certificates: {}", crate::sdk::describe(&e))))?;
        summaries.extend(page.certificate_summary_list().iter().cloned());
    }
    summaries.sort_by_key(|c| c.created_at().map(|t| (t.secs(), t.subsec_nanos())));
    let mut found = Vec::new();
    for c in &summaries {
        let Some(arn) = c.certificate_arn() else { continue };
        let tags: BTreeMap<String, String> = match p.acm.list_tags_for_certificate().certificate_arn(arn).send().await {
            Ok(out) => {
                out.tags().iter().map(|t| (t.key().to_string(), t.value().unwrap_or_default().to_string())).collect()
            }
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!("read tags of certificate {arn}: {}", crate::sdk::describe(&e))))
            }
        };
        if tags.get(TAG_STACK) != Some(&scope.stack) {
            continue;
        }
        let Some(id) = tags.get(TAG_ID) else { continue };
        let status = c.status().map(|s| s.as_str()).unwrap_or_default();
        found.push(observed(
            id.as_str().into(),
            arn,
            c.domain_name(),
            tags.get(TAG_DNS_ZONE).map(String::as_str),
            status,
        ));
    }
    Ok(found)
}

fn observed(id: LogicalId, arn: &str, domain: Option<&str>, zone: Option<&str>, status: &str) -> Observed {
    // aira requests DNS validation only.
    let mut props = json!({ "domain": domain, "validation": "DNS" });
    if let Some(zone) = zone {
        props["zone_id"] = json!(zone);
    }
    Observed {
        id,
        kind: Kind::Certificate,
        physical_id: arn.to_string(),
        props,
        outputs: BTreeMap::from([("arn".to_string(), json!(arn)), ("status".to_string(), json!(status))]),
        depends_on: BTreeSet::new(),
    }
}

async fn describe(p: &AwsProvider, arn: &str, what: &str) -> Result<Option<CertificateDetail>> {
    match p.acm.describe_certificate().certificate_arn(arn).send().await {
        Ok(out) => Ok(out.certificate().cloned()),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(ProviderError::new(format!("{what}: describe certificate {arn}: {}", crate::sdk::describe(&e)))),
    }
}

/// The validation CNAMEs of a certificate: (name, value).
fn validation_records(cert: &CertificateDetail) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = cert
        .domain_validation_options()
        .iter()
        .filter_map(|o| o.resource_record())
        .map(|r| (r.name().to_string(), r.value().to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn cname(name: &str, value: &str) -> Result<ResourceRecordSet> {
    let record = ResourceRecord::builder().value(value).build().map_err(|e| ProviderError::new(e.to_string()))?;
    ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::Cname)
        .ttl(300)
        .resource_records(record)
        .build()
        .map_err(|e| ProviderError::new(e.to_string()))
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed> {
    let d = &res.props;
    let domain = d["domain"].as_str().unwrap_or_default();
    let zone = d["zone_id"].as_str().unwrap_or_default();
    let what = format!("create {} `{}` ({domain})", res.kind, res.id);
    let mut tags = scope.tags_for(&res.id);
    tags.insert(TAG_DNS_ZONE.into(), zone.to_string());
    let tags = tags
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::new(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let out = p
        .acm
        .request_certificate()
        .domain_name(domain)
        .validation_method(ValidationMethod::Dns)
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e))))?;
    let arn = out.certificate_arn().unwrap_or_default().to_string();
    if arn.is_empty() {
        return Err(ProviderError::new(format!("{what}: ACM returned no ARN")));
    }

    // The validation record appears a few seconds after the request.
    let start = Instant::now();
    let records = loop {
        let cert = describe(p, &arn, &what).await?;
        let records = cert.as_ref().map(validation_records).unwrap_or_default();
        if !records.is_empty() {
            break records;
        }
        if start.elapsed() > scope.wait.min(Duration::from_secs(300)) {
            return Err(ProviderError::new(format!(
                "{what}: ACM gave no DNS validation record for {arn} after {}s",
                start.elapsed().as_secs()
            )));
        }
        progress.waiting(
            &res.id,
            &format!(
                "ACM preparing the DNS validation record of {domain} ({arn}), {}s so far",
                start.elapsed().as_secs()
            ),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };

    let mut written = Vec::new();
    for (name, value) in &records {
        let comment = format!("aira stack {}: validation of {domain}", scope.stack);
        let change = route53::change(&p.route53, zone, ChangeAction::Upsert, cname(name, value)?, &comment)
            .await
            .map_err(|e| {
                ProviderError::new(format!(
                    "{what}: write validation record {name} in zone {zone}: {}",
                    crate::sdk::describe(&e)
                ))
            })?;
        route53::wait_insync(&p.route53, scope, progress, &res.id, &change, &what).await?;
        written.push(format!("CNAME {name} → {value}"));
    }
    let written = written.join(", ");

    // ACM polls DNS itself: minutes when the zone is delegated, never when it is not.
    let start = Instant::now();
    loop {
        let cert = describe(p, &arn, &what)
            .await?
            .ok_or_else(|| ProviderError::new(format!("{what}: certificate {arn} disappeared while validating")))?;
        let status = cert.status().cloned();
        let message =
            format!("ACM validating {domain}: {written} written in zone {zone}, {}s so far", start.elapsed().as_secs());
        match status {
            Some(CertificateStatus::Issued) => break,
            Some(
                s @ (CertificateStatus::Failed | CertificateStatus::ValidationTimedOut | CertificateStatus::Revoked),
            ) => {
                let reason =
                    cert.failure_reason().map(|r| r.as_str().to_string()).unwrap_or_else(|| "no reason given".into());
                return Err(ProviderError::new(format!("{what}: certificate {arn} is {}: {reason}", s.as_str())));
            }
            _ => {}
        }
        if start.elapsed() > scope.wait {
            return Err(ProviderError::new(format!(
                "{what}: not issued after {}s ({message}); is the zone delegated to Route 53's name servers?",
                scope.wait.as_secs()
            )));
        }
        progress.waiting(&res.id, &message);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(observed(res.id.clone(), &arn, Some(domain), Some(zone), CertificateStatus::Issued.as_str()))
}

pub async fn update(_p: &AwsProvider, _scope: &Scope, res: &Resolved, current: &Observed) -> Result<Observed> {
    // Domain and zone force a replacement; the validation method is always DNS.
    Err(ProviderError::new(format!(
        "update {} `{}` ({}): a certificate cannot change in place (wanted {}, found {})",
        res.kind, res.id, current.physical_id, res.props, current.props
    )))
}

pub async fn delete(p: &AwsProvider, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<()> {
    let arn = current.physical_id.as_str();
    let what = format!("delete {} `{}` ({arn})", current.kind, current.id);
    let Some(cert) = describe(p, arn, &what).await? else { return Ok(()) };
    // ACM gives every certificate of one domain in an account the same validation record:
    // it stays while another certificate of that domain (a duplicate, another stack's) needs it.
    let shared = match cert.domain_name() {
        Some(domain) => other_certificates_of(p, domain, arn).await?,
        None => false,
    };
    if let (Some(zone), false) = (current.props["zone_id"].as_str(), shared) {
        for (name, value) in validation_records(&cert) {
            delete_cname(p, zone, &name, &value, &what).await?;
        }
    }
    crate::sdk::retry_busy(
        scope,
        progress,
        &current.id,
        &what,
        &["ResourceInUseException"],
        "load balancer listeners to release it (they do so asynchronously)",
        |c| c == "ResourceNotFoundException",
        || p.acm.delete_certificate().certificate_arn(arn).send(),
    )
    .await
    .map(drop)
}

/// Whether a certificate other than `arn` exists for `domain`.
async fn other_certificates_of(p: &AwsProvider, domain: &str, arn: &str) -> Result<bool> {
    let mut pages = p.acm.list_certificates().set_certificate_statuses(Some(every_status())).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::new(format!("list ACM certificates: {}", crate::sdk::describe(&e))))?;
        if page.certificate_summary_list().iter().any(|c| {
            c.certificate_arn() != Some(arn) && c.domain_name().is_some_and(|d| d.eq_ignore_ascii_case(domain))
        }) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes a validation CNAME as the zone holds it (a DELETE must match the TTL and value);
/// absent is fine.
async fn delete_cname(p: &AwsProvider, zone: &str, name: &str, value: &str, what: &str) -> Result<()> {
    let out = match p
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(name)
        .start_record_type(RrType::Cname)
        .max_items(1)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if route53::is_absent(&e) => return Ok(()),
        Err(e) => {
            return Err(ProviderError::new(format!(
                "{what}: read validation record {name}: {}",
                crate::sdk::describe(&e)
            )))
        }
    };
    let norm = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
    let Some(set) = out
        .resource_record_sets()
        .iter()
        .find(|s| norm(s.name()) == norm(name) && *s.r#type() == RrType::Cname)
        .cloned()
    else {
        return Ok(());
    };
    let values: Vec<String> =
        set.resource_records().iter().map(|r| norm(r.value())).filter(|v| !v.is_empty()).collect();
    if !values.is_empty() && !values.contains(&norm(value)) {
        return Ok(()); // not ours any more
    }
    // The record as ACM gave it, with the TTL the zone holds (a DELETE must match both).
    let mut record = cname(name, value)?;
    record.ttl = set.ttl().or(Some(300));
    match route53::change(&p.route53, zone, ChangeAction::Delete, record, "aira: certificate deleted").await {
        Ok(_) => Ok(()),
        Err(e) if route53::is_absent(&e) => Ok(()),
        Err(e) => {
            Err(ProviderError::new(format!("{what}: delete validation record {name}: {}", crate::sdk::describe(&e))))
        }
    }
}
