//! Route 53: the DNS calls the alias records (`record.rs`) and the certificate's validation
//! record (`acm.rs`) share; the hosted zone's pre-flight is `zone.rs`.

pub mod record;
mod zone;

use std::time::Duration;

use aws_sdk_route53::error::SdkError;
use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError;
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecordSet, RrType};
use aws_sdk_route53::Client;

use crate::sdk::{self, Poll};
use aira_engine::graph::LogicalId;
use aira_engine::provider::{Progress, ProviderError, Scope};

pub use zone::hosted_zone;

type Result<T> = std::result::Result<T, ProviderError>;

/// A name in comparable form: lower case, no trailing dot.
pub(crate) fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Sends one change to a zone; the change id, to wait for.
pub(crate) async fn change(
    r53: &Client,
    zone: &str,
    action: ChangeAction,
    set: ResourceRecordSet,
    comment: &str,
) -> std::result::Result<String, sdk::Sdk<ChangeResourceRecordSetsError>> {
    let change = Change::builder().action(action).resource_record_set(set).build().expect("action and set are given");
    let batch = ChangeBatch::builder().changes(change).comment(comment).build().expect("changes are given");
    let out = r53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch).send().await?;
    Ok(out.change_info().map(|c| c.id().to_string()).unwrap_or_default())
}

/// Whether a DELETE (or a read) failed because the record or its zone is not there.
pub(crate) fn is_absent<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_route53::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let msg = sdk::message(e).to_ascii_lowercase();
    match sdk::code(e) {
        Some("NoSuchHostedZone") => true,
        Some("InvalidChangeBatch") => msg.contains("not found") || msg.contains("does not exist"),
        _ => false,
    }
}

/// Waits until a change has reached every Route 53 name server, saying so.
pub(crate) async fn wait_insync(
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
    let waiting = format!("{what}: change {change_id}");
    sdk::poll_until(scope, progress, id, &waiting, Duration::from_secs(2), || async {
        let out = call!(format!("{what}: read change {change_id}"), r53.get_change().id(change_id).send());
        Ok(match out.change_info().map(|c| c.status()) {
            Some(ChangeStatus::Insync) => Poll::Done(()),
            status => Poll::Pending(format!(
                "{}, waiting until Route 53 has it on all its name servers (typically under a minute)",
                status.map(|s| s.as_str()).unwrap_or_default()
            )),
        })
    })
    .await
}

/// The record set `name` `ty` of a zone as it holds it, if there is one.
pub(crate) async fn record_set(
    r53: &Client,
    zone: &str,
    name: &str,
    ty: RrType,
    what: &str,
) -> Result<Option<ResourceRecordSet>> {
    let req =
        r53.list_resource_record_sets().hosted_zone_id(zone).start_record_name(name).start_record_type(ty.clone());
    let out = req.max_items(1).send().await;
    let found = match out {
        Ok(out) => {
            out.resource_record_sets().iter().find(|s| norm(s.name()) == norm(name) && *s.r#type() == ty).cloned()
        }
        Err(e) if is_absent(&e) => None,
        Err(e) => return Err(sdk::error(what, e)),
    };
    Ok(found)
}

/// All record sets of a zone.
pub(crate) async fn record_sets(r53: &Client, zone: &str) -> Result<Vec<ResourceRecordSet>> {
    let mut sets = Vec::new();
    let mut next: Option<(String, RrType)> = None;
    loop {
        let mut req = r53.list_resource_record_sets().hosted_zone_id(zone);
        if let Some((name, ty)) = next.take() {
            req = req.start_record_name(name).start_record_type(ty);
        }
        let what = format!("list records of hosted zone {zone}");
        let Some(out) = sdk::found(what, &["NoSuchHostedZone"], req.send().await)? else { return Ok(Vec::new()) };
        sets.extend(out.resource_record_sets().iter().cloned());
        match (out.is_truncated(), out.next_record_name(), out.next_record_type()) {
            (true, Some(n), Some(t)) => next = Some((n.to_string(), t.clone())),
            _ => return Ok(sets),
        }
    }
}
