//! The stack's ECR repository `aira/<stack>`, and the push of the image `up` built to the
//! repository a task definition names, before the task definition is registered.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{ImageScanningConfiguration, Tag};
use serde_json::{json, Value};

use crate::AwsProvider;
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved, Scope, TAG_ID, TAG_STACK};
use aira_image::push;

type Result<T> = std::result::Result<T, ProviderError>;

/// An image built on this machine, to push before a task definition names its digest.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub image: aira_image::oci::Image,
    /// Plain HTTP to a registry on loopback (`--insecure-registry`).
    pub insecure: bool,
}

fn code<E: ProvideErrorMetadata, R>(e: &aws_sdk_ecr::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

fn is_gone<E: ProvideErrorMetadata, R>(e: &aws_sdk_ecr::error::SdkError<E, R>) -> bool {
    code(e) == Some("RepositoryNotFoundException")
}

/// One rule: expire images beyond the newest `keep`.
fn lifecycle_policy(keep: u64) -> String {
    json!({
        "rules": [{
            "rulePriority": 1,
            "description": format!("keep the newest {keep} images"),
            "selection": { "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep },
            "action": { "type": "expire" },
        }]
    })
    .to_string()
}

pub async fn observe(p: &AwsProvider, scope: &Scope) -> Result<Vec<Observed>> {
    let prefix = format!("aira/{}", scope.stack);
    let mut repos = Vec::new();
    let mut pages = p.ecr.describe_repositories().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::new(format!("list ECR repositories: {}", crate::sdk::describe(&e))))?;
        repos.extend(
            page.repositories().iter().filter(|r| r.repository_name().is_some_and(|n| n.starts_with(&prefix))).cloned(),
        );
    }
    let mut found = Vec::new();
    for repo in repos {
        let (Some(name), Some(arn)) = (repo.repository_name(), repo.repository_arn()) else { continue };
        let tags: BTreeMap<String, String> = match p.ecr.list_tags_for_resource().resource_arn(arn).send().await {
            Ok(out) => out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect(),
            Err(e) if is_gone(&e) => continue,
            Err(e) => {
                return Err(ProviderError::new(format!(
                    "read tags of ECR repository {name}: {}",
                    crate::sdk::describe(&e)
                )))
            }
        };
        if tags.get(TAG_STACK) != Some(&scope.stack) {
            continue;
        }
        let Some(id) = tags.get(TAG_ID) else { continue };
        if let Some(o) = read(p, name, id.as_str().into()).await? {
            found.push(o);
        }
    }
    Ok(found)
}

async fn read(p: &AwsProvider, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read ECR repository `{id}` ({name})");
    let repo = match p.ecr.describe_repositories().repository_names(name).send().await {
        Ok(out) => match out.repositories().first() {
            Some(r) => r.clone(),
            None => return Ok(None),
        },
        Err(e) if is_gone(&e) => return Ok(None),
        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    };
    let keep = match p.ecr.get_lifecycle_policy().repository_name(name).send().await {
        Ok(out) => {
            let policy: Value =
                out.lifecycle_policy_text().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
            match policy["rules"].as_array().map(Vec::as_slice) {
                Some([rule]) if rule["selection"]["countType"] == "imageCountMoreThan" => {
                    rule["selection"]["countNumber"].clone()
                }
                _ => Value::Null,
            }
        }
        Err(e) if code(&e) == Some("LifecyclePolicyNotFoundException") => Value::Null,
        Err(e) if is_gone(&e) => return Ok(None),
        Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
    };
    let scan = repo.image_scanning_configuration().is_some_and(|c| c.scan_on_push());
    Ok(Some(Observed {
        id,
        kind: Kind::Repository,
        physical_id: name.to_string(),
        props: json!({ "name": name, "scan_on_push": scan, "keep_images": keep }),
        outputs: BTreeMap::from([
            ("arn".to_string(), Value::from(repo.repository_arn().unwrap_or_default())),
            ("uri".to_string(), Value::from(repo.repository_uri().unwrap_or_default())),
            ("name".to_string(), Value::from(name)),
        ]),
        depends_on: BTreeSet::new(),
    }))
}

pub async fn create(p: &AwsProvider, scope: &Scope, res: &Resolved) -> Result<Observed> {
    let name = res.props["name"].as_str().unwrap_or_default().to_string();
    let what = format!("create ECR repository `{}` ({name})", res.id);
    let scan = ImageScanningConfiguration::builder().scan_on_push(res.props["scan_on_push"].as_bool().unwrap_or(false));
    let mut req = p.ecr.create_repository().repository_name(&name).image_scanning_configuration(scan.build());
    for (k, v) in scope.tags_for(&res.id) {
        req = req.tags(Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::new(format!("{what}: {e}")))?);
    }
    call!(what, req.send());
    lifecycle(p, &name, res, &Value::Null, &what).await?;
    reread(p, &name, res, &what).await
}

async fn lifecycle(p: &AwsProvider, name: &str, res: &Resolved, current: &Value, what: &str) -> Result<()> {
    if *current == res.props["keep_images"] {
        return Ok(());
    }
    match res.props["keep_images"].as_u64() {
        Some(keep) => {
            call!(
                what,
                p.ecr.put_lifecycle_policy().repository_name(name).lifecycle_policy_text(lifecycle_policy(keep)).send()
            );
        }
        None => match p.ecr.delete_lifecycle_policy().repository_name(name).send().await {
            Ok(_) => {}
            Err(e) if code(&e) == Some("LifecyclePolicyNotFoundException") => {}
            Err(e) => return Err(ProviderError::new(format!("{what}: {}", crate::sdk::describe(&e)))),
        },
    }
    Ok(())
}

async fn reread(p: &AwsProvider, name: &str, res: &Resolved, what: &str) -> Result<Observed> {
    read(p, name, res.id.clone())
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: the repository disappeared right after the call")))
}

pub async fn update(p: &AwsProvider, _: &Scope, res: &Resolved, current: &Observed) -> Result<Observed> {
    let name = current.physical_id.clone();
    let what = format!("update ECR repository `{}` ({name})", res.id);
    if current.props["scan_on_push"] != res.props["scan_on_push"] {
        let scan =
            ImageScanningConfiguration::builder().scan_on_push(res.props["scan_on_push"].as_bool().unwrap_or(false));
        call!(
            what,
            p.ecr
                .put_image_scanning_configuration()
                .repository_name(&name)
                .image_scanning_configuration(scan.build())
                .send()
        );
    }
    lifecycle(p, &name, res, &current.props["keep_images"], &what).await?;
    reread(p, &name, res, &what).await
}

pub async fn delete(p: &AwsProvider, current: &Observed) -> Result<()> {
    // With its images: they are the stack's builds, reproducible from the source.
    match p.ecr.delete_repository().repository_name(&current.physical_id).force(true).send().await {
        Ok(_) => Ok(()),
        Err(e) if is_gone(&e) => Ok(()),
        Err(e) => Err(ProviderError::new(format!(
            "delete ECR repository `{}` ({}): {}",
            current.id,
            current.physical_id,
            crate::sdk::describe(&e)
        ))),
    }
}

/// `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]`.
fn is_ecr_registry(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() >= 6 && parts[1] == "dkr" && parts[2] == "ecr" && parts[4] == "amazonaws"
}

/// Standard base64 (with padding), as ECR's authorization token comes.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match chunk.len() {
            4 => out.extend_from_slice(&bytes),
            3 => out.extend_from_slice(&bytes[..2]),
            2 => out.push(bytes[0]),
            _ => return None,
        }
    }
    Some(out)
}

/// The basic-auth pair ECR hands out (`AWS:<password>`, valid 12 hours).
async fn ecr_auth(p: &AwsProvider) -> Result<(String, String)> {
    let what = "get an ECR authorization token";
    let out = call!(what, p.ecr.get_authorization_token().send());
    let token = out
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .ok_or_else(|| ProviderError::new(format!("{what}: ECR returned no token")))?;
    let decoded = base64_decode(token).and_then(|b| String::from_utf8(b).ok());
    let (user, password) = decoded
        .as_deref()
        .and_then(|d| d.split_once(':'))
        .ok_or_else(|| ProviderError::new(format!("{what}: the token is not base64 of USER:PASSWORD")))?;
    Ok((user.to_string(), password.to_string()))
}

/// Before a task definition naming `image` (`{repository, digest}`) is registered: pushes the
/// image `up` built to that repository, once per repository and digest in a run. Nothing to do
/// for an image given by reference (no local image).
pub async fn push_for(p: &AwsProvider, id: &LogicalId, image: &Value, progress: &dyn Progress) -> Result<()> {
    let (Some(repository), Some(digest)) = (image["repository"].as_str(), image["digest"].as_str()) else {
        return Ok(());
    };
    // Held for the whole push: a second task definition waits, then finds it pushed.
    let local = p.image.lock().await;
    let Some(local) = local.as_ref() else { return Ok(()) };
    if local.image.manifest.digest != digest {
        return Err(ProviderError::new(format!(
            "task definition `{id}` names image {repository}@{digest}, but the image built for this run is {}: \
             it cannot be pushed from here (deploy it with --image REPOSITORY@DIGEST once it is in the registry)",
            local.image.manifest.digest
        )));
    }
    let key = format!("{repository}@{digest}");
    let mut pushed = p.pushed.lock().await;
    if pushed.contains(&key) {
        return Ok(());
    }
    let to: push::Reference =
        repository.parse().map_err(|e| ProviderError::new(format!("task definition `{id}`: image repository {e}")))?;
    let failed = |e: aira_image::Error| match e {
        aira_image::Error::Usage(m) => ProviderError::user(format!("push the image to {repository}: {m}")),
        aira_image::Error::Failed(e) => ProviderError::new(format!("push the image to {repository}: {e:#}")),
    };
    let auth =
        if is_ecr_registry(&to.registry) { Some(ecr_auth(p).await?) } else { push::env_auth().map_err(failed)? };
    let note = |m: &str| progress.waiting(id, &format!("pushing image {digest} to {repository}: {m}"));
    let done = push::push(&local.image, &to, local.insecure, auth, &note).await.map_err(failed)?;
    progress.waiting(
        id,
        &format!(
            "pushed {}: {} blobs uploaded ({} bytes), {} already there",
            done.reference, done.uploaded, done.uploaded_bytes, done.skipped
        ),
    );
    pushed.insert(key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_and_tokens() {
        assert!(is_ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        assert!(is_ecr_registry("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"));
        assert!(!is_ecr_registry("127.0.0.1:5000"));
        assert!(!is_ecr_registry("registry.example.com"));
        assert_eq!(base64_decode("QVdTOnNlY3JldA==").as_deref(), Some(&b"AWS:secret"[..]));
        assert_eq!(base64_decode("QVdTOnNlY3JldDE=").as_deref(), Some(&b"AWS:secret1"[..]));
        assert_eq!(base64_decode("QVdTOnNlY3JldDEy").as_deref(), Some(&b"AWS:secret12"[..]));
        assert_eq!(base64_decode("not base64!"), None);
        let policy: Value = serde_json::from_str(&lifecycle_policy(20)).unwrap();
        assert_eq!(policy["rules"][0]["selection"]["countNumber"], 20);
    }
}
