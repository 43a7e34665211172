//! What every kind module works with, naming no kind (so that only the registry, `kinds.rs`,
//! names them): the context of an operation ([`Cx`]), what one kind does ([`KindOps`]), and
//! what the observes of one run share ([`Observing`]).

use std::future::Future;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::ecr::Images;
use crate::Clients;
use aira_engine::kind::Props;
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope};

/// What every operation of a kind works with, and all it reaches: the SDK's clients (not the
/// provider), the image this run pushes, the stack, where progress goes, and what the observes of
/// this run share.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub aws: &'a Clients,
    pub images: &'a Images,
    pub scope: &'a Scope,
    pub progress: &'a dyn Progress,
    pub seen: &'a Observing,
}

/// An update's inputs as its kind's structs, and the words its errors start with.
pub(crate) struct Change<'a, P> {
    pub want: P,
    pub have: P,
    /// The resource's id on AWS.
    pub physical: &'a str,
    /// `update KIND `ID` (PHYSICAL)`.
    pub what: String,
}

/// A create's input as its kind's struct, and the words its errors start with:
/// `create KIND `ID``.
pub(crate) fn creating<P: Props>(res: &Resolved) -> Result<(P, String), ProviderError> {
    Ok((res.props()?, format!("create {} `{}`", res.kind, res.id)))
}

pub(crate) fn change<'a, P: Props>(res: &Resolved, current: &'a Observed) -> Result<Change<'a, P>, ProviderError> {
    let physical = current.physical_id.as_str();
    let what = format!("update {} `{}` ({physical})", res.kind, res.id);
    Ok(Change { want: res.props()?, have: current.props()?, physical, what })
}

/// What one kind does on AWS.
#[async_trait]
pub(crate) trait KindOps: Sync {
    /// Every resource of this kind tagged with the stack, duplicates included, oldest first.
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>, ProviderError>;
    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed, ProviderError>;
    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed, ProviderError>;
    /// Deleting something already gone succeeds.
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<(), ProviderError>;
}

/// What the observes of one run share: kinds found through another kind's resources read
/// them from here, so each of those describes is made once per observe. The first to ask
/// passes the find that fills the memo (the memo itself names no kind).
#[derive(Default)]
pub(crate) struct Observing {
    /// The stack's load balancers, or a preview's base's (listeners, rules, alias records and
    /// the web ACL's association hang off them).
    load_balancers: OnceCell<Vec<Observed>>,
    /// The stack's ECS clusters, or a preview's base's (services are listed by cluster).
    clusters: OnceCell<Vec<Observed>>,
    /// The stack's Prometheus workspaces (rule groups and alert routes live in them).
    workspaces: OnceCell<Vec<Observed>>,
    /// The stack's Elastic IPs (a NAT instance is told its address by them).
    addresses: OnceCell<Vec<Observed>>,
}

type Found<'s> = Result<&'s [Observed], ProviderError>;

async fn memo<F, Fut>(cell: &OnceCell<Vec<Observed>>, find: F) -> Found<'_>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<Observed>, ProviderError>>,
{
    Ok(cell.get_or_try_init(find).await?)
}

impl Observing {
    pub async fn load_balancers<F, Fut>(&self, find: F) -> Found<'_>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Observed>, ProviderError>>,
    {
        memo(&self.load_balancers, find).await
    }

    pub async fn clusters<F, Fut>(&self, find: F) -> Found<'_>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Observed>, ProviderError>>,
    {
        memo(&self.clusters, find).await
    }

    pub async fn workspaces<F, Fut>(&self, find: F) -> Found<'_>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Observed>, ProviderError>>,
    {
        memo(&self.workspaces, find).await
    }

    pub async fn addresses<F, Fut>(&self, find: F) -> Found<'_>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Observed>, ProviderError>>,
    {
        memo(&self.addresses, find).await
    }
}
