//! The tasks' IAM roles, under the path `/aira/<stack>/`: found by path, then tags. A role's
//! permissions are one inline policy named `aira` plus attached managed policies.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::ops::{Cx, KindOps};
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, Policy};
use aira_engine::provider::{Observed, ProviderError, Resolved};

type Result<T> = std::result::Result<T, ProviderError>;

/// The name of the one inline policy aira manages on a role.
const POLICY_NAME: &str = "aira";

const GONE: &[&str] = &["NoSuchEntity"];

pub struct Role;

/// A policy document as JSON: as it is, or URL-decoded first.
fn document(text: &str) -> Value {
    serde_json::from_str(text)
        // IAM returns policy documents URL-encoded.
        .or_else(|_| serde_json::from_str(&percent_encoding::percent_decode_str(text).decode_utf8_lossy()))
        .unwrap_or_else(|_| Value::String(text.to_string()))
}

fn trust_document(service: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Principal": { "Service": service }, "Action": "sts:AssumeRole" }],
    })
    .to_string()
}

async fn read(p: &Clients, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read IAM role `{id}` ({name})");
    let role = sdk::found(&what, GONE, p.iam.get_role().role_name(name).send().await)?.and_then(|out| out.role);
    let Some(role) = role else { return Ok(None) };
    let trust = role.assume_role_policy_document().map(document).unwrap_or(Value::Null);
    // The trust policy aira writes has one statement naming one service; any other is shown as
    // it is, so that the plan rewrites it.
    let trust_service = match &trust["Statement"][0]["Principal"]["Service"] {
        Value::String(service) => service.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let policy = p.iam.get_role_policy().role_name(name).policy_name(POLICY_NAME).send().await;
    let policy = sdk::found(&what, GONE, policy)?.map(|out| document(out.policy_document()));
    let policy = policy.map(|doc| serde_json::from_value(doc.clone()).unwrap_or(Policy::Other(doc)));
    let pages = sdk::pages(&what, p.iam.list_attached_role_policies().role_name(name).into_paginator().send()).await?;
    let mut managed: Vec<String> =
        pages.iter().flat_map(|p| p.attached_policies()).filter_map(|a| a.policy_arn()).map(String::from).collect();
    managed.sort();
    let props = kind::Role {
        name: name.to_string(),
        path: role.path().to_string(),
        trust_service,
        managed_policies: managed,
        policy,
    };
    Ok(Some(Observed::of(id, name, &props).output("arn", role.arn()).output("name", name)))
}

/// The role's trust, inline policy and managed policies to `want`'s, from `current` (`None`:
/// a role just created).
async fn reconcile(p: &Clients, name: &str, want: &kind::Role, current: Option<&kind::Role>, what: &str) -> Result<()> {
    if current.is_some_and(|c| c.trust_service != want.trust_service) {
        let doc = trust_document(&want.trust_service);
        call!(what, p.iam.update_assume_role_policy().role_name(name).policy_document(doc).send());
    }
    if current.is_none_or(|c| c.policy != want.policy) {
        match &want.policy {
            None => {
                let sent = p.iam.delete_role_policy().role_name(name).policy_name(POLICY_NAME).send().await;
                sdk::found(what, GONE, sent)?;
            }
            Some(policy) => {
                let doc = serde_json::to_string(policy)
                    .map_err(|e| ProviderError::new(format!("{what}: the policy does not serialize: {e}")))?;
                let req = p.iam.put_role_policy().role_name(name).policy_name(POLICY_NAME).policy_document(doc);
                call!(what, req.send());
            }
        }
    }
    let have: BTreeSet<&str> =
        current.map(|c| c.managed_policies.iter().map(String::as_str).collect()).unwrap_or_default();
    let want: BTreeSet<&str> = want.managed_policies.iter().map(String::as_str).collect();
    for arn in want.difference(&have) {
        call!(what, p.iam.attach_role_policy().role_name(name).policy_arn(*arn).send());
    }
    for arn in have.difference(&want) {
        sdk::found(what, GONE, p.iam.detach_role_policy().role_name(name).policy_arn(*arn).send().await)?;
    }
    Ok(())
}

#[async_trait]
impl KindOps for Role {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let path = format!("/aira/{}/", cx.scope.stack);
        let pages = cx.aws.iam.list_roles().path_prefix(&path).into_paginator().send();
        let pages = sdk::pages(format!("list IAM roles under {path}"), pages).await?;
        let names: Vec<&str> =
            pages.iter().flat_map(|p| p.roles()).filter(|r| r.path() == path).map(|r| r.role_name()).collect();
        let tags = |name| {
            let call = cx.aws.iam.list_role_tags().role_name(name).send();
            sdk::adopted(cx.scope, format!("read tags of IAM role {name}"), GONE, call)
        };
        sdk::adopt_each(names, tags, |name, id| read(cx.aws, name, id)).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let want: kind::Role = res.props()?;
        let name = want.name.as_str();
        let what = format!("create IAM role `{}` ({name})", res.id);
        let req = cx
            .aws
            .iam
            .create_role()
            .role_name(name)
            .path(&want.path)
            .assume_role_policy_document(trust_document(&want.trust_service));
        call!(what, req.set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[]))).send());
        // The permissions are set the way an update sets them: a run killed here is finished next time.
        reconcile(cx.aws, name, &want, None, &what).await?;
        sdk::read_back(&what, "role", read(cx.aws, name, res.id.clone()).await?)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let name = current.physical_id.as_str();
        let what = format!("update IAM role `{}` ({name})", res.id);
        reconcile(cx.aws, name, &res.props()?, Some(&current.props()?), &what).await?;
        sdk::read_back(&what, "role", read(cx.aws, name, res.id.clone()).await?)
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let (iam, name) = (&cx.aws.iam, &current.physical_id);
        let what = format!("delete IAM role `{}` ({name})", current.id);
        // What is attached now, not only what was observed.
        let pages = sdk::pages(&what, iam.list_attached_role_policies().role_name(name).into_paginator().send()).await;
        let pages = match pages {
            Err(e) if e.code.as_deref().is_some_and(|c| GONE.iter().any(|g| c.contains(g))) => return Ok(()),
            pages => pages?,
        };
        let attached = pages.iter().flat_map(|p| p.attached_policies()).filter_map(|a| a.policy_arn());
        for arn in attached {
            let sent = iam.detach_role_policy().role_name(name).policy_arn(arn).send().await;
            sdk::found(format!("{what}: detach {arn}"), GONE, sent)?;
        }
        let inline = call!(what, iam.list_role_policies().role_name(name).send());
        for policy in inline.policy_names() {
            let sent = iam.delete_role_policy().role_name(name).policy_name(policy).send().await;
            sdk::found(format!("{what}: delete policy {policy}"), GONE, sent)?;
        }
        sdk::found(what, GONE, iam.delete_role().role_name(name).send().await)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_are_read_encoded_or_not() {
        let doc =
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": ["arn:aws:sqs:x:1:q"]}]});
        let encoded = doc
            .to_string()
            .replace('%', "%25")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(':', "%3A")
            .replace('[', "%5B")
            .replace(']', "%5D")
            .replace(',', "%2C");
        assert_eq!(document(&encoded), doc);
        assert_eq!(document(&doc.to_string()), doc);
    }
}
