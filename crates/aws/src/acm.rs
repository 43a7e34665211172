//! The public service's certificate: requested with DNS validation, its validation record
//! written into the stack's hosted zone, waited for until ISSUED.
//!
//! Found with `list_certificates` (every status, so a certificate still validating is adopted
//! rather than requested twice) and then its tags. The hosted zone of its validation record is
//! kept in the tag `aira:dns-zone`, so that `down` removes that record without the stack file.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_acm::types::{CertificateDetail, CertificateStatus, CertificateSummary, ValidationMethod};
use aws_sdk_route53::types::{ChangeAction, ResourceRecord, ResourceRecordSet, RrType};

use crate::ops::{Cx, KindOps};
use crate::sdk::{self, Poll};
use crate::{route53, Clients, TAG_DNS_ZONE};
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{ErrorKind, Observed, ProviderError, Repair, Resolved, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

const GONE: &[&str] = &["ResourceNotFoundException"];

pub struct Certificate;

/// `list_certificates` filters by status: every one of them, so that a certificate still
/// validating (or failed) is found too.
fn every_status() -> Vec<CertificateStatus> {
    use CertificateStatus as S;
    vec![S::PendingValidation, S::Issued, S::Inactive, S::Expired, S::ValidationTimedOut, S::Revoked, S::Failed]
}

fn observed(id: LogicalId, arn: &str, props: &kind::Certificate, status: &str) -> Observed {
    let mut o = Observed::of(id, arn, props).output("arn", arn).output("status", status);
    o.repair = repair(status);
    o
}

/// A certificate that is not ISSUED is not adopted as it is: one still PENDING_VALIDATION (a run
/// stopped while ACM validated it) has its validation completed; one that can never serve again
/// (FAILED, VALIDATION_TIMED_OUT, EXPIRED, REVOKED) is replaced. ACM cannot renew or revalidate
/// such a certificate; only a new request gives a usable one.
fn repair(status: &str) -> Option<Repair> {
    let s = |s: CertificateStatus| s.as_str().to_string();
    if status == s(CertificateStatus::PendingValidation) {
        return Some(Repair {
            reason: format!(
                "certificate {status}: complete validation (write its validation CNAME again, wait until ISSUED)"
            ),
            replace: false,
        });
    }
    let dead = [
        CertificateStatus::Failed,
        CertificateStatus::ValidationTimedOut,
        CertificateStatus::Expired,
        CertificateStatus::Revoked,
    ];
    dead.into_iter().any(|d| s(d) == status).then(|| Repair {
        reason: format!("certificate {status}: request a new one, move the listener to it, delete this one after"),
        replace: true,
    })
}

async fn describe(p: &Clients, arn: &str, what: &str) -> Result<Option<CertificateDetail>> {
    let out = p.acm.describe_certificate().certificate_arn(arn).send().await;
    Ok(sdk::found(format!("{what}: describe certificate {arn}"), GONE, out)?.and_then(|out| out.certificate().cloned()))
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

/// Every certificate of the account and region, whatever its status.
async fn every_certificate(p: &Clients) -> Result<Vec<CertificateSummary>> {
    let req = p.acm.list_certificates().set_certificate_statuses(Some(every_status()));
    let pages = sdk::pages("list ACM certificates", req.into_paginator().send()).await?;
    Ok(pages.iter().flat_map(|p| p.certificate_summary_list().iter().cloned()).collect())
}

/// The wildcard name under `domain`: the previews' host names.
fn wildcard_of(domain: &str) -> String {
    format!("*.{}", domain.trim_end_matches('.'))
}

/// Whether a certificate other than `arn` exists for `domain`.
async fn other_certificates_of(p: &Clients, domain: &str, arn: &str) -> Result<bool> {
    Ok(every_certificate(p)
        .await?
        .iter()
        .any(|c| c.certificate_arn() != Some(arn) && c.domain_name().is_some_and(|d| d.eq_ignore_ascii_case(domain))))
}

/// Deletes a validation CNAME as the zone holds it (a DELETE must match the TTL and value);
/// absent is fine.
async fn delete_cname(p: &Clients, zone: &str, name: &str, value: &str, what: &str) -> Result<()> {
    let read = format!("{what}: read validation record {name}");
    let Some(set) = route53::record_set(&p.route53, zone, name, RrType::Cname, &read).await? else { return Ok(()) };
    let values: Vec<String> =
        set.resource_records().iter().map(|r| route53::norm(r.value())).filter(|v| !v.is_empty()).collect();
    if !values.is_empty() && !values.contains(&route53::norm(value)) {
        return Ok(()); // not ours any more
    }
    // The record as ACM gave it, with the TTL the zone holds (a DELETE must match both).
    let mut record = cname(name, value)?;
    record.ttl = set.ttl().or(Some(300));
    match route53::change(&p.route53, zone, ChangeAction::Delete, record, "aira: certificate deleted").await {
        Ok(_) => Ok(()),
        Err(e) if route53::is_absent(&e) => Ok(()),
        Err(e) => Err(sdk::error(format!("{what}: delete validation record {name}"), e)),
    }
}

#[async_trait]
impl KindOps for Certificate {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let mut summaries = every_certificate(cx.aws).await?;
        summaries.sort_by_key(|c| c.created_at().map(|t| (t.secs(), t.subsec_nanos())));
        let mut found = Vec::new();
        for c in &summaries {
            let Some(arn) = c.certificate_arn() else { continue };
            let out = cx.aws.acm.list_tags_for_certificate().certificate_arn(arn).send().await;
            let Some(out) = sdk::found(format!("read tags of certificate {arn}"), GONE, out)? else { continue };
            let Some(id) = sdk::adopt_tags(cx.scope, out.tags()) else { continue };
            let zone_id = out.tags().iter().find(|t| t.key() == TAG_DNS_ZONE).and_then(|t| t.value());
            let domain = c.domain_name().unwrap_or_default().to_string();
            // The names in full (ListCertificates summarises them).
            let Some(detail) = describe(cx.aws, arn, &format!("read certificate {arn}")).await? else { continue };
            let wildcard = detail.subject_alternative_names().iter().any(|n| *n == wildcard_of(&domain));
            let props = kind::Certificate {
                domain,
                wildcard,
                validation: kind::Validation::Dns,
                zone_id: zone_id.map(String::from),
            };
            let status = c.status().map(|s| s.as_str()).unwrap_or_default();
            found.push(observed(id, arn, &props, status));
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let p: kind::Certificate = res.props()?;
        let what = format!("create {} `{}` ({})", res.kind, res.id, p.domain);
        let zone = p.zone_id.as_deref().map(|z| (TAG_DNS_ZONE, z));
        let tags = sdk::tag_list(cx.scope, &res.id, zone.as_slice());
        let mut req = cx.aws.acm.request_certificate().domain_name(&p.domain).validation_method(ValidationMethod::Dns);
        if p.wildcard {
            // ACM puts DOMAIN first among the names itself, and validates `*.DOMAIN` with the
            // record of DOMAIN: one record for both.
            req = req.subject_alternative_names(wildcard_of(&p.domain));
        }
        let out = call!(what, req.set_tags(Some(tags)).send());
        let arn = out.certificate_arn().unwrap_or_default().to_string();
        if arn.is_empty() {
            return Err(ProviderError::new(format!("{what}: ACM returned no ARN")));
        }
        validate(cx, res, &arn, &what).await
    }

    /// Domain and zone force a replacement; the validation method is always DNS. What remains is
    /// observe's repair of a certificate left PENDING_VALIDATION: its validation is completed.
    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let arn = current.physical_id.as_str();
        let what = format!("complete the validation of {} `{}` ({arn})", res.kind, res.id);
        if current.repair.as_ref().is_some_and(|r| !r.replace) {
            return validate(cx, res, arn, &what).await;
        }
        Err(ProviderError::new(format!(
            "update {} `{}` ({}): a certificate cannot change in place (wanted {}, found {})",
            res.kind, res.id, current.physical_id, res.props, current.props
        )))
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let arn = current.physical_id.as_str();
        let what = format!("delete {} `{}` ({arn})", current.kind, current.id);
        let Some(cert) = describe(cx.aws, arn, &what).await? else { return Ok(()) };
        // ACM gives every certificate of one domain in an account the same validation record:
        // it stays while another certificate of that domain (a duplicate, another stack's) needs it.
        let shared = match cert.domain_name() {
            Some(domain) => other_certificates_of(cx.aws, domain, arn).await?,
            None => false,
        };
        if let (Some(zone), false) = (current.props::<kind::Certificate>()?.zone_id, shared) {
            for (name, value) in validation_records(&cert) {
                delete_cname(cx.aws, &zone, &name, &value, &what).await?;
            }
        }
        let busy = sdk::Busy {
            codes: &["ResourceInUseException"],
            waits_for: "load balancer listeners to release it (they do so asynchronously)",
            gone: GONE,
        };
        sdk::retry_busy(cx.scope, cx.progress, &current.id, &what, &busy, || {
            cx.aws.acm.delete_certificate().certificate_arn(arn).send()
        })
        .await?;
        Ok(())
    }
}

/// Writes the certificate's validation CNAMEs into the zone and waits until ACM has issued it:
/// after a request, and again for a certificate a run left PENDING_VALIDATION.
async fn validate(cx: &Cx<'_>, res: &Resolved, arn: &str, what: &str) -> Result<Observed> {
    let p: kind::Certificate = res.props()?;
    let (domain, zone) = (p.domain.as_str(), p.zone_id.as_deref().unwrap_or_default());
    // The validation record appears a few seconds after the request.
    let preparing = format!("ACM preparing the DNS validation record of {domain} ({arn})");
    let first = Scope { wait: cx.scope.wait.min(Duration::from_secs(300)), ..cx.scope.clone() };
    let records = sdk::poll_until(&first, cx.progress, &res.id, &preparing, Duration::from_secs(2), || async {
        let records = describe(cx.aws, arn, what).await?.as_ref().map(validation_records).unwrap_or_default();
        Ok(if records.is_empty() { Poll::Pending("no record yet".into()) } else { Poll::Done(records) })
    })
    .await?;

    let mut written = Vec::new();
    for (name, value) in &records {
        let comment = format!("aira stack {}: validation of {domain}", cx.scope.stack);
        let change = route53::change(&cx.aws.route53, zone, ChangeAction::Upsert, cname(name, value)?, &comment)
            .await
            .map_err(|e| sdk::error(format!("{what}: write validation record {name} in zone {zone}"), e))?;
        route53::wait_insync(&cx.aws.route53, cx.scope, cx.progress, &res.id, &change, what).await?;
        written.push(format!("CNAME {name} → {value}"));
    }
    let written = written.join(", ");

    // ACM polls DNS itself: minutes when the zone is delegated, never when it is not.
    let validating = format!("ACM validating {domain}");
    sdk::poll_until(cx.scope, cx.progress, &res.id, &validating, Duration::from_secs(3), || async {
        let cert = describe(cx.aws, arn, what)
            .await?
            .ok_or_else(|| ProviderError::new(format!("{what}: certificate {arn} disappeared while validating")))?;
        match cert.status() {
            Some(CertificateStatus::Issued) => Ok(Poll::Done(())),
            Some(
                s @ (CertificateStatus::Failed | CertificateStatus::ValidationTimedOut | CertificateStatus::Revoked),
            ) => {
                let reason = cert.failure_reason().map(|r| r.as_str()).unwrap_or("no reason given");
                Err(ProviderError::new(format!("{what}: certificate {arn} is {}: {reason}", s.as_str())))
            }
            _ => Ok(Poll::Pending(format!("{written} written in zone {zone}"))),
        }
    })
    .await
    .map_err(|mut e| {
        if e.kind == ErrorKind::Busy {
            e.message = format!("{what}: not issued: {}; is the zone delegated to Route 53's name servers?", e.message);
        }
        e
    })?;
    Ok(observed(res.id.clone(), arn, &p, CertificateStatus::Issued.as_str()))
}
