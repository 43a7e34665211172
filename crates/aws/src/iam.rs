//! The tasks' IAM roles, under the path `/aira/<stack>/`: found by path, then tags. A role's
//! permissions are one inline policy named `aira` plus attached managed policies.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::Tag;
use serde_json::{json, Value};

use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};

type Result<T> = std::result::Result<T, ProviderError>;

/// The name of the one inline policy aira manages on a role.
const POLICY_NAME: &str = "aira";

fn is_gone<E: ProvideErrorMetadata, R>(e: &aws_sdk_iam::error::SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()).is_some_and(|c| c == "NoSuchEntity")
}

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

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let path = format!("/aira/{}/", scope.stack);
    let mut names = Vec::new();
    let mut pages = p.iam.list_roles().path_prefix(&path).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::new(format!("list IAM roles under {path}: {}", crate::sdk::describe(&e))))?;
        names.extend(page.roles().iter().filter(|r| r.path() == path).map(|r| r.role_name().to_string()));
    }
    let mut found = Vec::new();
    for name in names {
        let tags: BTreeMap<String, String> = match p.iam.list_role_tags().role_name(&name).send().await {
            Ok(out) => out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!("read tags of IAM role {name}: {}", crate::sdk::describe(&e))))
            }
        };
        if tags.get(TAG_STACK) != Some(&scope.stack) {
            continue;
        }
        let Some(id) = tags.get(TAG_ID) else { continue };
        if let Some(o) = read(p, &name, id.as_str().into()).await? {
            found.push(o);
        }
    }
    Ok(found)
}

async fn read(p: &AwsProvider, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read IAM role `{id}` ({name})");
    let role = match p.iam.get_role().role_name(name).send().await {
        Ok(out) => match out.role {
            Some(r) => r,
            None => return Ok(None),
        },
        Err(e) if is_gone(&e) => return Ok(None),
        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    };
    let trust = role.assume_role_policy_document().map(document).unwrap_or(Value::Null);
    let trust_service = trust["Statement"][0]["Principal"]["Service"].clone();
    let policy = match p.iam.get_role_policy().role_name(name).policy_name(POLICY_NAME).send().await {
        Ok(out) => document(out.policy_document()),
        Err(e) if is_gone(&e) => Value::Null,
        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    };
    let mut managed = Vec::new();
    let mut pages = p.iam.list_attached_role_policies().role_name(name).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e))))?;
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
    }))
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved) -> Result<Observed> {
    let name = res.props["name"].as_str().unwrap_or_default().to_string();
    let what = format!("create IAM role `{}` ({name})", res.id);
    let mut req = p
        .iam
        .create_role()
        .role_name(&name)
        .path(res.props["path"].as_str().unwrap_or("/"))
        .assume_role_policy_document(trust_document(res.props["trust_service"].as_str().unwrap_or_default()));
    for (k, v) in scope.tags_for(&res.id) {
        req = req.tags(Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::new(format!("{what}: {e}")))?);
    }
    call!(what, req.send());
    // The permissions are set the way an update sets them: a run killed here is finished next time.
    reconcile(p, res, &name, &Value::Null, &what).await?;
    reread(p, &name, res, &what).await
}

async fn reconcile(p: &AwsProvider, res: &Resolved, name: &str, current: &Value, what: &str) -> Result<()> {
    let want = &res.props;
    if !current.is_null() && current["trust_service"] != want["trust_service"] {
        let doc = trust_document(want["trust_service"].as_str().unwrap_or_default());
        call!(what, p.iam.update_assume_role_policy().role_name(name).policy_document(doc).send());
    }
    if current.is_null() || current["policy"] != want["policy"] {
        if want["policy"].is_null() {
            match p.iam.delete_role_policy().role_name(name).policy_name(POLICY_NAME).send().await {
                Ok(_) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
            }
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
        match p.iam.detach_role_policy().role_name(name).policy_arn(arn).send().await {
            Ok(_) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
        }
    }
    Ok(())
}

async fn reread(p: &AwsProvider, name: &str, res: &Resolved, what: &str) -> Result<Observed> {
    read(p, name, res.id.clone())
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: the role disappeared right after the call")))
}

pub async fn update(p: &AwsProvider, _: &Scope, res: &Resolved, current: &Observed) -> Result<Observed> {
    let name = current.physical_id.clone();
    let what = format!("update IAM role `{}` ({name})", res.id);
    reconcile(p, res, &name, &current.props, &what).await?;
    reread(p, &name, res, &what).await
}

pub async fn delete(p: &AwsProvider, current: &Observed) -> Result<()> {
    let name = &current.physical_id;
    let what = format!("delete IAM role `{}` ({name})", current.id);
    // What is attached now, not only what was observed.
    let mut pages = p.iam.list_attached_role_policies().role_name(name).into_paginator().send();
    let mut attached = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => {
                attached.extend(page.attached_policies().iter().filter_map(|a| a.policy_arn()).map(String::from))
            }
            Err(e) if is_gone(&e) => return Ok(()),
            Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
        }
    }
    for arn in attached {
        match p.iam.detach_role_policy().role_name(name).policy_arn(&arn).send().await {
            Ok(_) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(ProviderError::new(format!("{what}: detach {arn}: {}", crate::sdk::describe(&e)))),
        }
    }
    let inline = call!(what, p.iam.list_role_policies().role_name(name).send());
    for policy in inline.policy_names() {
        match p.iam.delete_role_policy().role_name(name).policy_name(policy).send().await {
            Ok(_) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => {
                return Err(ProviderError::new(format!("{what}: delete policy {policy}: {}", crate::sdk::describe(&e))))
            }
        }
    }
    match p.iam.delete_role().role_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
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
