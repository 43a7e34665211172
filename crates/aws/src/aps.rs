//! Amazon Managed Service for Prometheus: the stack's workspace, its rule groups namespace and
//! its alert manager definition. All three are created asynchronously (`CREATING` → `ACTIVE`);
//! a namespace or definition cannot be created while its workspace is still being created
//! (`ConflictException`), and a rule or route AWS rejects shows only as `CREATION_FAILED` /
//! `UPDATE_FAILED` with a reason, so every write waits for the state AWS settles in.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_amp::primitives::Blob;

use crate::ops::{Cx, KindOps};
use crate::sdk::{self, Busy, Poll};
use crate::Clients;
use aira_engine::expand::monitoring::ALERT_MANAGER;
use aira_engine::graph::LogicalId;
use aira_engine::kind;
use aira_engine::provider::{Observed, ProviderError, Repair, Resolved, Scope};

type Result<T> = std::result::Result<T, ProviderError>;

const GONE: &[&str] = &["ResourceNotFound"];
const POLL: Duration = Duration::from_secs(2);
/// Writes to a workspace that is not `ACTIVE` yet, or to a namespace or definition still
/// settling, are refused with a conflict until it is.
const SETTLING: Busy = Busy { codes: &["ConflictException"], waits_for: "the workspace to become ACTIVE", gone: &[] };

pub struct Workspace;
pub struct Rules;
pub struct AlertManager;

/// The stack's workspaces, tagged with it (duplicates left by a crash included).
pub(crate) async fn find(p: &Clients, scope: &Scope) -> Result<Vec<Observed>> {
    let pages = sdk::pages("list Prometheus workspaces", p.aps.list_workspaces().into_paginator().send()).await?;
    let mut found = Vec::new();
    for w in pages.iter().flat_map(|p| p.workspaces()) {
        let Some(id) = sdk::adopt_map(scope, w.tags().into_iter().flatten()) else { continue };
        if let Some(o) = read_workspace(p, w.workspace_id(), id).await? {
            found.push(o);
        }
    }
    Ok(found)
}

/// The stack's workspaces, found once per observe (rule groups and alert routes live in them).
async fn shared<'s>(cx: &Cx<'s>) -> Result<&'s [Observed]> {
    cx.seen.workspaces(|| find(cx.aws, cx.scope)).await
}

/// A workspace as observed; `None` once it is gone or going.
async fn read_workspace(p: &Clients, ws: &str, id: LogicalId) -> Result<Option<Observed>> {
    let out = p.aps.describe_workspace().workspace_id(ws).send().await;
    let Some(out) = sdk::found(format!("read Prometheus workspace {ws}"), GONE, out)? else { return Ok(None) };
    let Some(w) = out.workspace() else { return Ok(None) };
    let status = w.status().map(|s| s.status_code().as_str()).unwrap_or_default();
    if status == "DELETING" {
        return Ok(None);
    }
    let endpoint = w.prometheus_endpoint().unwrap_or_default();
    let repair = (status == "CREATION_FAILED")
        .then(|| Repair { reason: format!("the workspace is {status}: a new one replaces it"), replace: true });
    let props = kind::PrometheusWorkspace { alias: w.alias().unwrap_or_default().to_string() };
    let observed = Observed::of(id, ws, &props)
        .output("id", ws)
        .output("arn", w.arn())
        .output("endpoint", endpoint)
        .output("remote_write_url", format!("{endpoint}api/v1/remote_write"));
    Ok(Some(Observed { repair, ..observed }))
}

/// Waits for a workspace to leave `CREATING`/`UPDATING`, and reads it.
async fn settled_workspace(cx: &Cx<'_>, ws: &str, id: &LogicalId, what: &str) -> Result<Observed> {
    sdk::poll_until(cx.scope, cx.progress, id, what, POLL, || async {
        let out = call!(what, cx.aws.aps.describe_workspace().workspace_id(ws).send());
        let status = out.workspace().and_then(|w| w.status()).map(|s| s.status_code().as_str().to_string());
        match status.as_deref() {
            Some("ACTIVE") => Ok(Poll::Done(())),
            Some("CREATION_FAILED") => Err(ProviderError::new(format!("{what}: AWS reports CREATION_FAILED"))),
            s => Ok(Poll::Pending(format!("workspace {}", s.unwrap_or("not visible yet")))),
        }
    })
    .await?;
    read_workspace(cx.aws, ws, id.clone())
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: the workspace disappeared right after the call")))
}

#[async_trait]
impl KindOps for Workspace {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        Ok(shared(cx).await?.to_vec())
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let alias = res.props::<kind::PrometheusWorkspace>()?.alias;
        let what = format!("create Prometheus workspace `{}` ({alias})", res.id);
        // Tagged in the create call itself: a crash right after it leaves a workspace the next
        // run adopts (the SDK's client token makes its own retries of the call idempotent).
        let tags = Some(cx.scope.tags_for(&res.id).into_iter().collect());
        let out = call!(what, cx.aws.aps.create_workspace().alias(alias).set_tags(tags).send());
        settled_workspace(cx, out.workspace_id(), &res.id, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let ws = &current.physical_id;
        let what = format!("update Prometheus workspace `{}` ({ws})", res.id);
        let alias = res.props::<kind::PrometheusWorkspace>()?.alias;
        call!(what, cx.aws.aps.update_workspace_alias().workspace_id(ws).alias(alias).send());
        settled_workspace(cx, ws, &res.id, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let ws = &current.physical_id;
        let what = format!("delete Prometheus workspace `{}` ({ws})", current.id);
        let busy =
            Busy { codes: &["ConflictException"], waits_for: "its rules and alert manager to settle", gone: GONE };
        sdk::retry_busy(cx.scope, cx.progress, &current.id, &what, &busy, || {
            cx.aws.aps.delete_workspace().workspace_id(ws).send()
        })
        .await?;
        // Deletion is asynchronous: `down` reports it done when the workspace is gone.
        sdk::poll_until(cx.scope, cx.progress, &current.id, &what, POLL, || async {
            let out = cx.aws.aps.describe_workspace().workspace_id(ws).send().await;
            match sdk::found(&what, GONE, out)? {
                None => Ok(Poll::Done(())),
                Some(o) => Ok(Poll::Pending(format!(
                    "workspace {}",
                    o.workspace().and_then(|w| w.status()).map(|s| s.status_code().as_str()).unwrap_or("DELETING")
                ))),
            }
        })
        .await
    }
}

/// A namespace's or definition's status.
enum Settling {
    Active,
    /// Still being written: the state AWS reports.
    Pending(String),
    /// AWS did not take it: its state and reason.
    Failed(String),
}

fn settling(code: &str, reason: Option<&str>) -> Settling {
    match code {
        "ACTIVE" => Settling::Active,
        "CREATION_FAILED" | "UPDATE_FAILED" => {
            Settling::Failed(format!("{code}: {}", reason.unwrap_or("AWS gave no reason")))
        }
        other => Settling::Pending(other.to_string()),
    }
}

/// A failed one is written again by the next run.
fn repair(what: &str, state: &Settling) -> Option<Repair> {
    let Settling::Failed(why) = state else { return None };
    Some(Repair { reason: format!("AWS did not take the {what} ({why}): they are written again"), replace: false })
}

/// Polls `read` after a write until AWS settles it: done when `ACTIVE`, a user error with AWS's
/// reason when it failed.
async fn settled<F, Fut>(cx: &Cx<'_>, id: &LogicalId, what: &str, read: F) -> Result<Observed>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<(Observed, Settling)>>>,
{
    sdk::poll_until(cx.scope, cx.progress, id, what, POLL, || async {
        match read().await? {
            None => Ok(Poll::Pending("not visible yet".into())),
            Some((_, Settling::Failed(why))) => {
                Err(ProviderError::user(format!("{what}: AWS did not take it ({why})")))
            }
            Some((_, Settling::Pending(state))) => Ok(Poll::Pending(state)),
            Some((o, Settling::Active)) => Ok(Poll::Done(o)),
        }
    })
    .await
}

fn text(data: &Blob) -> String {
    String::from_utf8_lossy(data.as_ref()).into_owned()
}

async fn read_rules(p: &Clients, ws: &str, name: &str, id: LogicalId) -> Result<Option<(Observed, Settling)>> {
    let out = p.aps.describe_rule_groups_namespace().workspace_id(ws).name(name).send().await;
    let Some(out) = sdk::found(format!("read rule groups `{name}` of workspace {ws}"), GONE, out)? else {
        return Ok(None);
    };
    let Some(ns) = out.rule_groups_namespace() else { return Ok(None) };
    let status = ns.status().map(|s| (s.status_code().as_str().to_string(), s.status_reason().map(String::from)));
    let (code, reason) = status.unwrap_or_default();
    let state = settling(&code, reason.as_deref());
    let props = kind::PrometheusRules { workspace: ws.into(), name: ns.name().to_string(), data: text(ns.data()) };
    let observed = Observed::of(id, ns.arn(), &props).output("arn", ns.arn());
    let observed = Observed { repair: repair("rules", &state), ..observed };
    Ok(Some((observed, state)))
}

#[async_trait]
impl KindOps for Rules {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let mut found = Vec::new();
        for w in shared(cx).await? {
            let ws = &w.physical_id;
            let out = cx.aws.aps.list_rule_groups_namespaces().workspace_id(ws).send().await;
            let Some(out) = sdk::found(format!("list rule groups of workspace {ws}"), GONE, out)? else { continue };
            for ns in out.rule_groups_namespaces() {
                let Some(id) = sdk::adopt_map(cx.scope, ns.tags().into_iter().flatten()) else { continue };
                if let Some((o, _)) = read_rules(cx.aws, ws, ns.name(), id).await? {
                    found.push(o);
                }
            }
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let want: kind::PrometheusRules = res.props()?;
        let (ws, name) = (want.workspace.as_str(), want.name.as_str());
        let what = format!("create rule groups `{}` ({name} in {ws})", res.id);
        let data = Blob::new(want.data.as_str());
        let tags: std::collections::HashMap<String, String> = cx.scope.tags_for(&res.id).into_iter().collect();
        sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &SETTLING, || {
            let call = cx.aws.aps.create_rule_groups_namespace().workspace_id(ws).name(name);
            call.data(data.clone()).set_tags(Some(tags.clone())).send()
        })
        .await?;
        settled(cx, &res.id, &what, || read_rules(cx.aws, ws, name, res.id.clone())).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let want: kind::PrometheusRules = res.props()?;
        let (ws, name) = (want.workspace.as_str(), want.name.as_str());
        let what = format!("update rule groups `{}` ({})", res.id, current.physical_id);
        let data = Blob::new(want.data.as_str());
        sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &SETTLING, || {
            cx.aws.aps.put_rule_groups_namespace().workspace_id(ws).name(name).data(data.clone()).send()
        })
        .await?;
        settled(cx, &res.id, &what, || read_rules(cx.aws, ws, name, res.id.clone())).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let have: kind::PrometheusRules = current.props()?;
        let (ws, name) = (have.workspace.as_str(), have.name.as_str());
        let what = format!("delete rule groups `{}` ({})", current.id, current.physical_id);
        let busy = Busy { gone: GONE, ..SETTLING };
        sdk::retry_busy(cx.scope, cx.progress, &current.id, &what, &busy, || {
            cx.aws.aps.delete_rule_groups_namespace().workspace_id(ws).name(name).send()
        })
        .await?;
        Ok(())
    }
}

/// The workspace's alert manager definition and its status code. It has no tags: it is the
/// stack's because its workspace is.
async fn read_alerts(p: &Clients, ws: &str) -> Result<Option<(Observed, Settling)>> {
    let out = p.aps.describe_alert_manager_definition().workspace_id(ws).send().await;
    let Some(out) = sdk::found(format!("read the alert manager of workspace {ws}"), GONE, out)? else {
        return Ok(None);
    };
    let Some(d) = out.alert_manager_definition() else { return Ok(None) };
    let (code, reason) = d.status().map(|s| (s.status_code().as_str(), s.status_reason())).unwrap_or_default();
    let state = settling(code, reason);
    let props = kind::AlertManager { workspace: ws.into(), definition: text(d.data()) };
    let observed = Observed::of(ALERT_MANAGER.into(), ws, &props);
    let observed = Observed { repair: repair("alert routes", &state), ..observed };
    Ok(Some((observed, state)))
}

/// Writes the definition with `write` (given the workspace and the data) once the workspace
/// takes it, and waits until AWS settles it.
async fn write_alerts<Fut, T, X>(
    cx: &Cx<'_>,
    res: &Resolved,
    verb: &str,
    write: impl Fn(String, Blob) -> Fut,
) -> Result<Observed>
where
    Fut: std::future::Future<Output = std::result::Result<T, X>>,
    X: sdk::Failed,
{
    let want: kind::AlertManager = res.props()?;
    let ws = want.workspace.as_str();
    let what = format!("{verb} the alert manager `{}` of workspace {ws}", res.id);
    let data = Blob::new(want.definition.as_str());
    sdk::retry_busy(cx.scope, cx.progress, &res.id, &what, &SETTLING, || write(ws.to_string(), data.clone())).await?;
    settled(cx, &res.id, &what, || read_alerts(cx.aws, ws)).await
}

#[async_trait]
impl KindOps for AlertManager {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let mut found = Vec::new();
        for w in shared(cx).await? {
            found.extend(read_alerts(cx.aws, &w.physical_id).await?.map(|(o, _)| o));
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let aps = &cx.aws.aps;
        write_alerts(cx, res, "create", |ws, data| {
            aps.create_alert_manager_definition().workspace_id(ws).data(data).send()
        })
        .await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, _: &Observed) -> Result<Observed> {
        let aps = &cx.aws.aps;
        write_alerts(cx, res, "update", |ws, data| {
            aps.put_alert_manager_definition().workspace_id(ws).data(data).send()
        })
        .await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let ws = &current.physical_id;
        let what = format!("delete the alert manager `{}` of workspace {ws}", current.id);
        let busy = Busy { gone: GONE, ..SETTLING };
        sdk::retry_busy(cx.scope, cx.progress, &current.id, &what, &busy, || {
            cx.aws.aps.delete_alert_manager_definition().workspace_id(ws).send()
        })
        .await?;
        Ok(())
    }
}
