//! The tasks' IAM roles, under the path `/aira/<stack>/`: found by path, then tags. A role's
//! permissions are one inline policy named `aira` plus attached managed policies.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::kinds::{Cx, KindOps, Observing};
use crate::{sdk, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
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

async fn read(p: &AwsProvider, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read IAM role `{id}` ({name})");
    let role = sdk::found(&what, GONE, p.iam.get_role().role_name(name).send().await)?.and_then(|out| out.role);
    let Some(role) = role else { return Ok(None) };
    let trust = role.assume_role_policy_document().map(document).unwrap_or(Value::Null);
    let trust_service = trust["Statement"][0]["Principal"]["Service"].clone();
    let policy = p.iam.get_role_policy().role_name(name).policy_name(POLICY_NAME).send().await;
    let policy = sdk::found(&what, GONE, policy)?.map(|out| document(out.policy_document())).unwrap_or(Value::Null);
    let mut managed = Vec::new();
    let mut pages = p.iam.list_attached_role_policies().role_name(name).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk::error(&what, e))?;
        managed.extend(page.attached_policies().iter().filter_map(|a| a.policy_arn()).map(String::from));
    }
    managed.sort();
    Ok(Some(Observed {
        id,
        kind: Kind::Role,
        physical_id: name.to_string(),
        props: json!({
            "name": name,
            "path": role.path(),
            "trust_service": trust_service,
            "managed_policies": managed,
            "policy": policy,
        }),
        outputs: BTreeMap::from([
            ("arn".to_string(), Value::from(role.arn())),
            ("name".to_string(), Value::from(name)),
        ]),
        depends_on: BTreeSet::new(),
        repair: None,
    }))
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

async fn reconcile(p: &AwsProvider, res: &Resolved, name: &str, current: &Value, what: &str) -> Result<()> {
    let want = &res.props;
    if !current.is_null() && current["trust_service"] != want["trust_service"] {
        let doc = trust_document(want["trust_service"].as_str().unwrap_or_default());
        call!(what, p.iam.update_assume_role_policy().role_name(name).policy_document(doc).send());
    }
    if current.is_null() || current["policy"] != want["policy"] {
        if want["policy"].is_null() {
            sdk::found(what, GONE, p.iam.delete_role_policy().role_name(name).policy_name(POLICY_NAME).send().await)?;
        } else {
            let doc = want["policy"].to_string();
            call!(what, p.iam.put_role_policy().role_name(name).policy_name(POLICY_NAME).policy_document(doc).send());
        }
    }
    let (have, want) = (strs(&current["managed_policies"]), strs(&want["managed_policies"]));
    for arn in want.difference(&have) {
        call!(what, p.iam.attach_role_policy().role_name(name).policy_arn(arn).send());
    }
    for arn in have.difference(&want) {
        sdk::found(what, GONE, p.iam.detach_role_policy().role_name(name).policy_arn(arn).send().await)?;
    }
    Ok(())
}

async fn reread(p: &AwsProvider, name: &str, res: &Resolved, what: &str) -> Result<Observed> {
    read(p, name, res.id.clone())
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: the role disappeared right after the call")))
}

#[async_trait]
impl KindOps for Role {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let path = format!("/aira/{}/", scope.stack);
        let mut names = Vec::new();
        let mut pages = aws.iam.list_roles().path_prefix(&path).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk::error(format!("list IAM roles under {path}"), e))?;
            names.extend(page.roles().iter().filter(|r| r.path() == path).map(|r| r.role_name().to_string()));
        }
        let mut found = Vec::new();
        for name in names {
            let out = aws.iam.list_role_tags().role_name(&name).send().await;
            let Some(out) = sdk::found(format!("read tags of IAM role {name}"), GONE, out)? else { continue };
            let Some(id) = sdk::adopt_tags(scope, out.tags()) else { continue };
            found.extend(read(aws, &name, id).await?);
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let name = res.props["name"].as_str().unwrap_or_default().to_string();
        let what = format!("create IAM role `{}` ({name})", res.id);
        let req = aws
            .iam
            .create_role()
            .role_name(&name)
            .path(res.props["path"].as_str().unwrap_or("/"))
            .assume_role_policy_document(trust_document(res.props["trust_service"].as_str().unwrap_or_default()));
        call!(what, req.set_tags(Some(sdk::tag_list(scope, &res.id, &[]))).send());
        // The permissions are set the way an update sets them: a run killed here is finished next time.
        reconcile(aws, res, &name, &Value::Null, &what).await?;
        reread(aws, &name, res, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, .. } = *cx;
        let name = current.physical_id.clone();
        let what = format!("update IAM role `{}` ({name})", res.id);
        reconcile(aws, res, &name, &current.props, &what).await?;
        reread(aws, &name, res, &what).await
    }

    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let (iam, name) = (&aws.iam, &current.physical_id);
        let what = format!("delete IAM role `{}` ({name})", current.id);
        // What is attached now, not only what was observed.
        let mut pages = iam.list_attached_role_policies().role_name(name).into_paginator().send();
        let mut attached = Vec::new();
        while let Some(page) = pages.next().await {
            let Some(page) = sdk::found(&what, GONE, page)? else { return Ok(()) };
            attached.extend(page.attached_policies().iter().filter_map(|a| a.policy_arn()).map(String::from));
        }
        for arn in attached {
            let sent = iam.detach_role_policy().role_name(name).policy_arn(&arn).send().await;
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
