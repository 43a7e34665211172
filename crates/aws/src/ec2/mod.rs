//! The network: VPC, subnets, internet gateway, Elastic IPs, NAT, route tables, security groups,
//! endpoints, one module a kind; what they share is here, the pre-flight in `preflight.rs`.
//!
//! Every resource is found with the tag filter `tag:aira:stack`, created with its tags in the
//! create call (`TagSpecifications`), and brought to its desired properties by the same code
//! that updates it, so that a run killed between a create and its follow-up calls (attach,
//! associate, authorize) is finished by the next run's update.

mod egress;
pub mod endpoint;
pub mod gateway;
pub mod nat_instance;
mod preflight;
pub mod route_table;
pub mod security_group;
pub mod subnet;
pub mod vpc;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use serde_json::Value;

use crate::ops::Cx;
use crate::sdk;
use aira_engine::graph::{LogicalId, Props};
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope, TAG_STACK};

pub use preflight::{existing, quotas, zones};

type Result<T> = std::result::Result<T, ProviderError>;

/// Error codes saying a resource is already gone (`InvalidVpcID.NotFound`, …).
const GONE: &[&str] = &["NotFound"];

/// The EC2 API is eventually consistent: an id a create just returned can be unknown to the next
/// call for a moment (EC2 API Reference, "Eventual consistency in the Amazon EC2 API": retry
/// with back-off). Calls that name ids this run just created wait out these codes, for
/// [`NEW_ID_WAIT`] at most: past it, the id is taken for really gone.
const NEW_ID: sdk::Busy = sdk::Busy {
    codes: &[
        "InvalidVpcID.NotFound",
        "InvalidSubnetID.NotFound",
        "InvalidGroup.NotFound",
        "InvalidRouteTableID.NotFound",
        "InvalidInternetGatewayID.NotFound",
        "InvalidAllocationID.NotFound",
        "InvalidNatGatewayID.NotFound",
        "InvalidInstanceID.NotFound",
        "InvalidNetworkInterfaceID.NotFound",
    ],
    waits_for: "EC2 to know an id it just gave (its API is eventually consistent)",
    gone: &[],
};
const NEW_ID_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `op`, a call naming ids this run may just have created, retried while EC2 does not know them.
async fn wait_new_ids<F, Fut, T, X>(cx: &Cx<'_>, id: &LogicalId, what: &str, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, X>>,
    X: sdk::Failed,
{
    let scope = Scope { wait: cx.scope.wait.min(NEW_ID_WAIT), ..cx.scope.clone() };
    let done = sdk::retry_busy(&scope, cx.progress, id, what, &NEW_ID, op).await?;
    Ok(done.expect("NEW_ID counts nothing as gone"))
}

/// `call!` for a request that names ids this run may just have created ([`wait_new_ids`]).
macro_rules! fresh {
    ($cx:expr, $id:expr, $what:expr, $req:expr) => {{
        let req = $req;
        super::wait_new_ids($cx, $id, &$what, || req.clone().send()).await?
    }};
}
pub(crate) use fresh;

fn stack_filter(scope: &Scope) -> Filter {
    Filter::builder().name(format!("tag:{TAG_STACK}")).values(&scope.stack).build()
}

fn tags(scope: &Scope, id: &LogicalId, rt: ResourceType) -> TagSpecification {
    tags_with(scope, id, rt, &[])
}

/// [`tags`] and `extra`.
fn tags_with(scope: &Scope, id: &LogicalId, rt: ResourceType, extra: &[(&str, &str)]) -> TagSpecification {
    // EC2 consoles show the Name tag.
    let name = format!("{}-{}", scope.stack, id);
    let tags: Vec<Tag> = sdk::tag_list(scope, id, extra);
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(tags))
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

/// The observed resource, if its tags say it is this stack's (checked on the answer too: an
/// endpoint that ignores a filter must not make aira adopt, and then delete, another stack's).
fn observed<P: Props>(scope: &Scope, tags: &[Tag], physical: Option<&str>, props: &P) -> Option<Observed> {
    Some(blank(sdk::adopt_tags(scope, tags)?, physical?, props))
}

fn blank<P: Props>(id: LogicalId, physical: &str, props: &P) -> Observed {
    Observed::of(id, physical, props).output("id", physical)
}

/// One kind's resources, in the order the plan expects (by logical id, then id).
fn sorted(mut found: Vec<Observed>) -> Vec<Observed> {
    found.sort_by(|a, b| (&a.id, &a.physical_id).cmp(&(&b.id, &b.physical_id)));
    found
}

/// The resource right after its create call, before any follow-up call: what an update then
/// brings to the desired properties.
fn created<P: Props>(res: &Resolved, what: &str, physical: Option<&str>, props: &P) -> Result<Observed> {
    match physical.filter(|p| !p.is_empty()) {
        Some(p) => Ok(blank(res.id.clone(), p, props)),
        None => Err(ProviderError::new(format!("{what}: AWS returned no id"))),
    }
}

/// The same resource with the desired properties and the given outputs.
fn updated(res: &Resolved, current: &Observed, outputs: BTreeMap<String, Value>) -> Observed {
    Observed { props: res.props.clone(), outputs, ..current.clone() }
}

/// Deletes `current` with `op`, waiting out what still uses it (`busy`); one already gone is
/// deleted too.
async fn delete<T, X, Fut>(cx: &Cx<'_>, current: &Observed, busy: &sdk::Busy, op: impl FnMut() -> Fut) -> Result<()>
where
    Fut: std::future::Future<Output = std::result::Result<T, X>>,
    X: sdk::Failed,
{
    let what = format!("delete {} `{}` ({})", current.kind, current.id, current.physical_id);
    sdk::retry_busy(cx.scope, cx.progress, &current.id, &what, busy, op).await?;
    Ok(())
}

/// Deletions and detachments wait out `DependencyViolation`: network interfaces that AWS removes
/// asynchronously, a NAT gateway still deleting.
const RELEASE: sdk::Busy = sdk::Busy {
    codes: &["DependencyViolation"],
    waits_for: "what is still in use to let go (AWS releases network interfaces asynchronously)",
    gone: GONE,
};
