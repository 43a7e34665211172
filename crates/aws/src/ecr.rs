//! The stack's ECR repository `aira/<stack>`, and the push of the image `up` built to the
//! repository a task definition names, before the task definition is registered.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_ecr::types::ImageScanningConfiguration;
use serde_json::{json, Value};

use crate::kinds::{Cx, KindOps, Observing};
use crate::{sdk, AwsProvider};
use aira_engine::graph::{Kind, LogicalId};
use aira_engine::provider::{Observed, Progress, ProviderError, Resolved};
use aira_image::push;

type Result<T> = std::result::Result<T, ProviderError>;

/// An image built on this machine, to push before a task definition names its digest.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub image: aira_image::oci::Image,
    /// Plain HTTP to a registry on loopback (`--insecure-registry`).
    pub insecure: bool,
}

const GONE: &[&str] = &["RepositoryNotFoundException"];
const NO_POLICY: &[&str] = &["LifecyclePolicyNotFoundException"];

pub struct Repository;

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

async fn read(p: &AwsProvider, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read ECR repository `{id}` ({name})");
    let out = sdk::found(&what, GONE, p.ecr.describe_repositories().repository_names(name).send().await)?;
    let Some(repo) = out.and_then(|out| out.repositories().first().cloned()) else { return Ok(None) };
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
        Err(e) if sdk::is_gone(&e, NO_POLICY) => Value::Null,
        Err(e) if sdk::is_gone(&e, GONE) => return Ok(None),
        Err(e) => return Err(sdk::error(what, e)),
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
        repair: None,
    }))
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
        None => {
            sdk::found(what, NO_POLICY, p.ecr.delete_lifecycle_policy().repository_name(name).send().await)?;
        }
    }
    Ok(())
}

async fn reread(p: &AwsProvider, name: &str, res: &Resolved, what: &str) -> Result<Observed> {
    read(p, name, res.id.clone())
        .await?
        .ok_or_else(|| ProviderError::new(format!("{what}: the repository disappeared right after the call")))
}

fn scanning(res: &Resolved) -> ImageScanningConfiguration {
    ImageScanningConfiguration::builder().scan_on_push(res.props["scan_on_push"].as_bool().unwrap_or(false)).build()
}

#[async_trait]
impl KindOps for Repository {
    async fn observe(&self, cx: &Cx<'_>, _: &Observing) -> Result<Vec<Observed>> {
        let Cx { aws, scope, .. } = *cx;
        let prefix = format!("aira/{}", scope.stack);
        let mut repos = Vec::new();
        let mut pages = aws.ecr.describe_repositories().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk::error("list ECR repositories", e))?;
            let ours =
                page.repositories().iter().filter(|r| r.repository_name().is_some_and(|n| n.starts_with(&prefix)));
            repos.extend(ours.cloned());
        }
        let mut found = Vec::new();
        for repo in repos {
            let (Some(name), Some(arn)) = (repo.repository_name(), repo.repository_arn()) else { continue };
            let out = aws.ecr.list_tags_for_resource().resource_arn(arn).send().await;
            let Some(out) = sdk::found(format!("read tags of ECR repository {name}"), GONE, out)? else { continue };
            let Some(id) = sdk::adopt_tags(scope, out.tags()) else { continue };
            found.extend(read(aws, name, id).await?);
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let Cx { aws, scope, .. } = *cx;
        let name = res.props["name"].as_str().unwrap_or_default().to_string();
        let what = format!("create ECR repository `{}` ({name})", res.id);
        let req = aws.ecr.create_repository().repository_name(&name).image_scanning_configuration(scanning(res));
        call!(what, req.set_tags(Some(sdk::tag_list(scope, &res.id, &[]))).send());
        lifecycle(aws, &name, res, &Value::Null, &what).await?;
        reread(aws, &name, res, &what).await
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let Cx { aws, .. } = *cx;
        let name = current.physical_id.clone();
        let what = format!("update ECR repository `{}` ({name})", res.id);
        if current.props["scan_on_push"] != res.props["scan_on_push"] {
            let req = aws.ecr.put_image_scanning_configuration().repository_name(&name);
            call!(what, req.image_scanning_configuration(scanning(res)).send());
        }
        lifecycle(aws, &name, res, &current.props["keep_images"], &what).await?;
        reread(aws, &name, res, &what).await
    }

    /// With its images: they are the stack's builds, reproducible from the source.
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let Cx { aws, .. } = *cx;
        let what = format!("delete ECR repository `{}` ({})", current.id, current.physical_id);
        sdk::found(
            what,
            GONE,
            aws.ecr.delete_repository().repository_name(&current.physical_id).force(true).send().await,
        )?;
        Ok(())
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
