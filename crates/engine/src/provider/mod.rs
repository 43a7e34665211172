//! How resources are read, created, updated and deleted. The engine sees only [`Provider`].

pub mod fake;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::graph::{Kind, LogicalId, Props};

/// Tag keys every managed resource carries, set in the create call itself.
pub const TAG_STACK: &str = "aira:stack";
pub const TAG_ID: &str = "aira:id";
pub const TAG_MANAGED_BY: &str = "aira:managed-by";
/// Unix seconds at which the resource was created.
pub const TAG_CREATED_AT: &str = "aira:created-at";
/// Unix seconds after which `down --all --expired` removes the stack (`up --ttl`).
pub const TAG_EXPIRES_AT: &str = "aira:expires-at";

/// Which stack an operation belongs to, and the tags its creations carry.
#[derive(Debug, Clone)]
pub struct Scope {
    pub stack: String,
    pub tags: BTreeMap<String, String>,
    /// Longest wait for anything AWS finishes asynchronously (deletions, dependency violations).
    pub wait: std::time::Duration,
    /// A preview's base stack (`expand::preview`): the load balancer and cluster its resources
    /// live in are the base's.
    pub base: Option<String>,
}

/// What the expansion needs to know of the account and region before planning.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub region: String,
    /// The account's id (ARNs of resources not created yet, such as the alert topic's).
    pub account: String,
    /// Availability zones that are available, in name order.
    pub zones: Vec<String>,
    /// For a stack in an existing VPC: the route tables of its private subnets.
    pub existing_private_route_tables: Vec<String>,
    /// For a stack in an existing VPC: what carries traffic out of its private subnets, as the
    /// pre-flight read it (their route tables and the VPC's endpoints).
    pub existing_egress: Option<crate::stack::reach::Egress>,
    /// The stack's public hosted zone (`domain.zone`).
    pub hosted_zone: Option<HostedZone>,
    /// ARNs of the Secrets Manager secrets the stack names, by name.
    pub secrets: BTreeMap<String, String>,
    /// Those of them encrypted with a customer managed KMS key (not `aws/secretsmanager`).
    pub secrets_own_key: std::collections::BTreeSet<String>,
    /// What the pre-flight could not check, for the user (e.g. the zone's delegation when public
    /// DNS cannot be reached).
    pub notes: Vec<String>,
    /// The Bedrock model the worker calls (`llm.provider: bedrock`), as the pre-flight read it;
    /// `None`: what its id tells (expand's `assumed_model`).
    pub bedrock: Option<BedrockModel>,
}

/// What the worker's role needs to call a Bedrock model or inference profile.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockModel {
    /// The ARNs `bedrock:InvokeModel` and `bedrock:InvokeModelWithResponseStream` are granted on: the foundation model in the stack's region;
    /// or an inference profile (in the account) and its foundation model in each region it
    /// routes to.
    pub invoke: Vec<String>,
    /// A model of another provider than Amazon: the first call subscribes the account through
    /// AWS Marketplace, which the caller needs rights for.
    pub third_party: bool,
}

impl Facts {
    /// Stand-ins for what only AWS knows, enough to expand and count a stack without a call.
    pub fn offline(stack: &crate::stack::Stack) -> Facts {
        let region = stack.region.clone().unwrap_or_else(|| "region".into());
        Facts {
            account: "000000000000".into(),
            zones: (0..6).map(|i| format!("{region}{}", (b'a' + i) as char)).collect(),
            existing_private_route_tables: stack
                .network
                .existing
                .as_ref()
                .map(|_| vec!["rtb-existing".to_string()])
                .unwrap_or_default(),
            existing_egress: None,
            hosted_zone: stack.domain.as_ref().map(|d| HostedZone { id: "ZOFFLINE".into(), name: d.zone.0.clone() }),
            secrets: stack
                .secret_names()
                .map(|n| (n.to_string(), format!("arn:aws:secretsmanager:{region}:000000000000:secret:{n}")))
                .collect(),
            secrets_own_key: Default::default(),
            notes: Vec::new(),
            // Expand grants what the model id tells (`expand::assumed_model`).
            bedrock: None,
            region,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostedZone {
    /// `Z…`, without the `/hostedzone/` prefix.
    pub id: String,
    pub name: String,
}

impl Scope {
    /// A stack's scope (not a preview's).
    pub fn new(stack: &str, tags: BTreeMap<String, String>, wait: std::time::Duration) -> Scope {
        Scope { stack: stack.into(), tags, wait, base: None }
    }

    /// Where the resources that hold this stack's live: the base's scope for a preview, else
    /// this one.
    pub fn containers(&self) -> Scope {
        match &self.base {
            Some(base) => Scope { stack: base.clone(), tags: BTreeMap::new(), wait: self.wait, base: None },
            None => self.clone(),
        }
    }

    /// The ECS cluster the stack's services run in: the stack's, or a preview's base's.
    pub fn cluster(&self) -> &str {
        self.base.as_deref().unwrap_or(&self.stack)
    }

    /// A service's name in ECS: its name in the stack, after the preview's name in a preview
    /// (names are unique within the base's cluster).
    pub fn ecs_service(&self, service: &str) -> String {
        match self.preview_name() {
            Some(preview) => format!("{preview}-{service}"),
            None => service.to_string(),
        }
    }

    /// A preview's name (its stack's after `BASE-`).
    pub fn preview_name(&self) -> Option<&str> {
        self.stack.strip_prefix(self.base.as_deref()?)?.strip_prefix('-')
    }

    /// All tags for a resource: the stack's extra tags, then aira's own (which win).
    pub fn tags_for(&self, id: &LogicalId) -> BTreeMap<String, String> {
        let mut tags = self.tags.clone();
        tags.insert(TAG_STACK.into(), self.stack.clone());
        tags.insert(TAG_ID.into(), id.0.clone());
        tags.insert(TAG_MANAGED_BY.into(), "aira".into());
        tags
    }
}

/// A resource as it exists, found by its tags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    pub id: LogicalId,
    pub kind: Kind,
    /// The provider's own identifier (queue URL, ARN, `vpc-…`).
    pub physical_id: String,
    /// Properties in the same normal form as [`crate::graph::Desired::props`].
    pub props: Value,
    /// Values other resources may reference (`arn`, `url`, …).
    pub outputs: BTreeMap<String, Value>,
    /// Managed resources this one points at, read from the resource itself.
    pub depends_on: BTreeSet<LogicalId>,
    /// Set when the resource matches the stack on paper but is broken on AWS (a failed
    /// deployment, a certificate never issued): the plan repairs it even without a diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

/// What is wrong with an observed resource, and whether only a new one mends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repair {
    /// Said in the plan: what AWS reports and what the update will do.
    pub reason: String,
    /// The resource is replaced (a new one created, dependents moved to it) rather than updated.
    pub replace: bool,
}

/// A desired resource with every reference replaced by its value.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub id: LogicalId,
    pub kind: Kind,
    pub props: Value,
}

/// What a provider failure was, so that callers can branch on it (retry, explain, exit code)
/// without reading its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The stack asks for something the account does not have (a pre-flight failure, a missing
    /// secret): the user's to fix.
    User,
    /// The caller lacks a permission (`AccessDenied`, `UnauthorizedOperation`, …).
    AccessDenied,
    /// The request rate stayed too high through the SDK's retries (`Throttling`, …).
    Throttled,
    /// An account quota or service limit was reached (`LimitExceeded`, `…QuotaExceeded`, …).
    Quota,
    /// The resource does not exist (where that is a failure, not "already deleted").
    NotFound,
    /// AWS was still finishing something (a dependency, a resource in use) when the wait ended.
    Busy,
    /// Anything else: another service error, a network failure, an unexpected answer.
    Other,
}

/// A failed provider operation: what was being done, and what AWS answered.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// The service's error code (`DependencyViolation`, `AccessDenied`, …) when AWS gave one.
    pub code: Option<String>,
    /// The whole sentence shown to the user: the resource, the action, AWS's code and message.
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProviderError {
    pub fn new(message: impl Into<String>) -> Self {
        ProviderError { kind: ErrorKind::Other, code: None, message: message.into(), source: None }
    }

    pub fn user(message: impl Into<String>) -> Self {
        ProviderError { kind: ErrorKind::User, ..ProviderError::new(message) }
    }

    /// A failure of a given kind with AWS's code.
    pub fn coded(kind: ErrorKind, code: Option<String>, message: impl Into<String>) -> Self {
        ProviderError { kind, code, ..ProviderError::new(message) }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The user's to fix (exit 1), rather than a failure of AWS or of aira (exit 2).
    pub fn is_user(&self) -> bool {
        self.kind == ErrorKind::User
    }

    /// Several failures found at once, as one: the user's to fix when each is (each message on
    /// its own line), else the first that is not, with every message. `None` when there is none.
    pub fn all(errors: Vec<ProviderError>) -> Option<ProviderError> {
        let message = errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("\n");
        let mut errors = errors.into_iter();
        let first = errors.next()?;
        let mut worst = first;
        for e in errors {
            if worst.is_user() && !e.is_user() {
                worst = e;
            }
        }
        worst.message = message;
        Some(worst)
    }

    /// The same failure, said of a larger operation: `context: message`.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl Observed {
    /// A resource found or just made, of the kind of `props`, with no outputs yet.
    pub fn of<P: Props>(id: LogicalId, physical_id: impl Into<String>, props: &P) -> Self {
        Observed {
            id,
            kind: P::KIND,
            physical_id: physical_id.into(),
            props: props.to_value(),
            outputs: BTreeMap::new(),
            depends_on: BTreeSet::new(),
            repair: None,
        }
    }

    /// The same, with an output other resources may reference.
    pub fn output(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.outputs.insert(name.to_string(), value.into());
        self
    }

    /// Its properties as its kind's struct.
    pub fn props<P: Props>(&self) -> Result<P, ProviderError> {
        typed(&self.id, self.kind, &self.props)
    }
}

impl Resolved {
    /// Its properties as its kind's struct. Refuses properties that still hold a reference, so
    /// that [`crate::kind::Val::get`] on them always finds a value.
    pub fn props<P: Props>(&self) -> Result<P, ProviderError> {
        if crate::graph::has_refs(&self.props) {
            return Err(ProviderError::new(format!("`{}`: a reference was not resolved", self.id)));
        }
        typed(&self.id, self.kind, &self.props)
    }
}

fn typed<P: Props>(id: &LogicalId, kind: Kind, props: &Value) -> Result<P, ProviderError> {
    if kind != P::KIND {
        return Err(ProviderError::new(format!("`{id}` is a {kind}, read as a {}", P::KIND)));
    }
    P::from_value(props).map_err(|e| ProviderError::new(format!("`{id}` ({kind}): its properties do not fit: {e}")))
}

/// Reports what a long operation is waiting for; the printer shows it.
pub trait Progress: Send + Sync {
    fn waiting(&self, id: &LogicalId, what: &str);
}

/// No progress output.
pub struct Silent;

impl Progress for Silent {
    fn waiting(&self, _: &LogicalId, _: &str) {}
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Pre-flight: zones of the region, what an existing VPC holds, the hosted zone, the secrets.
    /// Fails (as a user error, naming the fix) when the account lacks what the stack names.
    async fn facts(&self, stack: &crate::stack::Stack) -> Result<Facts, ProviderError>;
    /// Everything of the stack that exists, found by tags. Duplicates (two resources with one
    /// logical id, left by an interrupted run) are all returned, oldest first.
    async fn observe(&self, scope: &Scope) -> Result<Vec<Observed>, ProviderError>;
    async fn create(&self, scope: &Scope, res: &Resolved, progress: &dyn Progress) -> Result<Observed, ProviderError>;
    async fn update(
        &self,
        scope: &Scope,
        res: &Resolved,
        current: &Observed,
        progress: &dyn Progress,
    ) -> Result<Observed, ProviderError>;
    /// Deleting something already gone succeeds.
    async fn delete(&self, scope: &Scope, current: &Observed, progress: &dyn Progress) -> Result<(), ProviderError>;
}
