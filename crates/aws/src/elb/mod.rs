//! Application load balancer, target groups, listeners and (a preview's) listener rules, one module a kind; what they share
//! is here.
//!
//! Found with describe calls and then their tags (`describe_tags`, at most 20 ARNs per call):
//! ELBv2 has no tag filter. Created with their tags in the create call, read back after every
//! change. The load balancer keeps the hosted zone of its alias records in the tag
//! `aira:dns-zone`, so that `down` finds those records without the stack file.

pub mod listener;
pub mod load_balancer;
pub mod rule;
pub mod target_group;

use std::collections::{BTreeMap, HashMap};

use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticloadbalancingv2::Client;
use aws_smithy_async::future::pagination_stream::PaginationStream;
use serde_json::Value;

use crate::sdk;
use aira_engine::graph::{LogicalId, Props};
use aira_engine::provider::{ErrorKind, Observed, ProviderError, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

/// Error codes saying a resource is gone (`LoadBalancerNotFound`, `TargetGroupNotFoundException`, …).
const GONE: &[&str] = &["NotFound"];

/// The part of an ARN after `…:ACCOUNT:`: `loadbalancer/app/NAME/ID`, `targetgroup/NAME/ID`.
fn arn_resource(arn: &str) -> &str {
    arn.splitn(6, ':').nth(5).unwrap_or_default()
}

/// Tags of the given ARNs, by ARN (20 per call, ELBv2's limit).
async fn tags_of(elb: &Client, arns: &[String]) -> Result<HashMap<String, BTreeMap<String, String>>> {
    let mut out = HashMap::new();
    for chunk in arns.chunks(20) {
        let resp = match elb.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await {
            Ok(r) => r,
            // One of them was deleted meanwhile: ask one by one.
            Err(e) if sdk::is_gone(&e, GONE) && chunk.len() > 1 => {
                for arn in chunk {
                    out.extend(Box::pin(tags_of(elb, std::slice::from_ref(arn))).await?);
                }
                continue;
            }
            Err(e) if sdk::is_gone(&e, GONE) => continue,
            Err(e) => return Err(sdk::error("read ELB tags", e)),
        };
        for d in resp.tag_descriptions() {
            let Some(arn) = d.resource_arn() else { continue };
            let tags = d.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect();
            out.insert(arn.to_string(), tags);
        }
    }
    Ok(out)
}

/// Of the given ARNs, those of this stack: ARN → (logical id, tags).
async fn ours(
    elb: &Client,
    scope: &Scope,
    arns: &[String],
) -> Result<HashMap<String, (LogicalId, BTreeMap<String, String>)>> {
    let tags = tags_of(elb, arns).await?;
    Ok(tags.into_iter().filter_map(|(arn, t)| Some((arn, (sdk::adopt_map(scope, &t)?, t)))).collect())
}

/// A resource of this stack in a describe answer: the answer's item, its ARN, logical id and tags.
struct Ours<T> {
    item: T,
    arn: String,
    id: LogicalId,
    tags: BTreeMap<String, String>,
}

/// The stack's resources among every page of a describe call (all of a kind, or the one asked
/// for: none when it is gone), in the answer's order. Plain `fn`s pick the items and their
/// ARNs: closures held across the awaits would keep the compiler from seeing the future `Send`.
async fn described<P, T: Clone, E, R>(
    elb: &Client,
    scope: &Scope,
    what: &str,
    pages: PaginationStream<std::result::Result<P, SdkError<E, R>>>,
    items: fn(&P) -> &[T],
    arn: fn(&T) -> Option<&str>,
) -> Result<Vec<Ours<T>>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let all: Vec<T> = match sdk::pages(what, pages).await {
        // The one asked for is gone.
        Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
        pages => pages?.iter().flat_map(|p| items(p).iter().cloned()).collect(),
    };
    let arns: Vec<String> = all.iter().filter_map(|t| arn(t).map(String::from)).collect();
    let tags = ours(elb, scope, &arns).await?;
    let found = all.into_iter().filter_map(|item| {
        let a = arn(&item)?.to_string();
        let (id, tags) = tags.get(&a)?.clone();
        Some(Ours { item, arn: a, id, tags })
    });
    Ok(found.collect())
}

/// A resource found or just made, with its ARN as the output `arn` and the given others.
fn observed<P: Props>(id: LogicalId, arn: &str, props: &P, outputs: &[(&str, Value)]) -> Observed {
    let o = Observed::of(id, arn, props).output("arn", arn);
    outputs.iter().fold(o, |o, (k, v)| o.output(k, v.clone()))
}

/// The one resource `arn` as `find` reads it, right after a change.
fn reread(found: Vec<Observed>, arn: &str, what: &str) -> Result<Observed> {
    found
        .into_iter()
        .find(|o| o.physical_id == arn)
        .ok_or_else(|| ProviderError::new(format!("{what}: {arn} is not there right after the call")))
}

/// The ARN a create call answered with, or an error saying there was none.
fn created(arn: Option<&str>, what: &str) -> Result<String> {
    arn.filter(|a| !a.is_empty())
        .map(String::from)
        .ok_or_else(|| ProviderError::new(format!("{what}: AWS returned no ARN")))
}
