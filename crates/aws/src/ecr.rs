//! The stack's ECR repository `aira/<stack>`, and the push of the image `up` built to the
//! repository a task definition names, before the task definition is registered.

use async_trait::async_trait;
use aws_sdk_ecr::types::ImageScanningConfiguration;
use serde_json::{json, Value};

use crate::ops::{Cx, KindOps};
use crate::{sdk, Clients};
use aira_engine::graph::LogicalId;
use aira_engine::kind::{self, ContainerImage, PinnedImage};
use aira_engine::provider::{Observed, ProviderError, Resolved};
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

async fn read(p: &Clients, name: &str, id: LogicalId) -> Result<Option<Observed>> {
    let what = format!("read ECR repository `{id}` ({name})");
    let out = sdk::found(&what, GONE, p.ecr.describe_repositories().repository_names(name).send().await)?;
    let Some(repo) = out.and_then(|out| out.repositories().first().cloned()) else { return Ok(None) };
    let keep_images = match p.ecr.get_lifecycle_policy().repository_name(name).send().await {
        // The lifecycle policy is AWS's document, read for the one rule aira writes.
        Ok(out) => {
            let policy: Value =
                out.lifecycle_policy_text().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
            match policy["rules"].as_array().map(Vec::as_slice) {
                Some([rule]) if rule["selection"]["countType"] == "imageCountMoreThan" => {
                    rule["selection"]["countNumber"].as_u64()
                }
                _ => None,
            }
        }
        Err(e) if sdk::is_gone(&e, NO_POLICY) => None,
        Err(e) if sdk::is_gone(&e, GONE) => return Ok(None),
        Err(e) => return Err(sdk::error(what, e)),
    };
    let scan_on_push = repo.image_scanning_configuration().is_some_and(|c| c.scan_on_push());
    let props = kind::Repository { name: name.to_string(), scan_on_push, keep_images };
    Ok(Some(
        Observed::of(id, name, &props)
            .output("arn", repo.repository_arn().unwrap_or_default())
            .output("uri", repo.repository_uri().unwrap_or_default())
            .output("name", name),
    ))
}

/// The lifecycle policy to `want`'s, from `current` (`None`: no policy).
async fn lifecycle(p: &Clients, name: &str, want: Option<u64>, current: Option<u64>, what: &str) -> Result<()> {
    if current == want {
        return Ok(());
    }
    match want {
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

fn scanning(want: &kind::Repository) -> ImageScanningConfiguration {
    ImageScanningConfiguration::builder().scan_on_push(want.scan_on_push).build()
}

#[async_trait]
impl KindOps for Repository {
    async fn observe(&self, cx: &Cx<'_>) -> Result<Vec<Observed>> {
        let prefix = format!("aira/{}", cx.scope.stack);
        let pages =
            sdk::pages("list ECR repositories", cx.aws.ecr.describe_repositories().into_paginator().send()).await?;
        let repos = pages.iter().flat_map(|p| p.repositories());
        let named = repos.filter_map(|r| Some((r.repository_name()?, r.repository_arn()?)));
        let ours: Vec<(&str, &str)> = named.filter(|(name, _)| name.starts_with(&prefix)).collect();
        let tags = |(name, arn)| {
            let call = cx.aws.ecr.list_tags_for_resource().resource_arn(arn).send();
            sdk::adopted(cx.scope, format!("read tags of ECR repository {name}"), GONE, call)
        };
        sdk::adopt_each(ours, tags, |(name, _), id| read(cx.aws, name, id)).await
    }

    async fn create(&self, cx: &Cx<'_>, res: &Resolved) -> Result<Observed> {
        let want: kind::Repository = res.props()?;
        let name = want.name.as_str();
        let what = format!("create ECR repository `{}` ({name})", res.id);
        let req = cx.aws.ecr.create_repository().repository_name(name).image_scanning_configuration(scanning(&want));
        call!(what, req.set_tags(Some(sdk::tag_list(cx.scope, &res.id, &[]))).send());
        lifecycle(cx.aws, name, want.keep_images, None, &what).await?;
        sdk::read_back(&what, "repository", read(cx.aws, name, res.id.clone()).await?)
    }

    async fn update(&self, cx: &Cx<'_>, res: &Resolved, current: &Observed) -> Result<Observed> {
        let name = current.physical_id.as_str();
        let what = format!("update ECR repository `{}` ({name})", res.id);
        let (want, have): (kind::Repository, kind::Repository) = (res.props()?, current.props()?);
        if have.scan_on_push != want.scan_on_push {
            let req = cx.aws.ecr.put_image_scanning_configuration().repository_name(name);
            call!(what, req.image_scanning_configuration(scanning(&want)).send());
        }
        lifecycle(cx.aws, name, want.keep_images, have.keep_images, &what).await?;
        sdk::read_back(&what, "repository", read(cx.aws, name, res.id.clone()).await?)
    }

    /// With its images: they are the stack's builds, reproducible from the source.
    async fn delete(&self, cx: &Cx<'_>, current: &Observed) -> Result<()> {
        let what = format!("delete ECR repository `{}` ({})", current.id, current.physical_id);
        sdk::delete(what, GONE, cx.aws.ecr.delete_repository().repository_name(&current.physical_id).force(true).send())
            .await
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
async fn ecr_auth(p: &Clients) -> Result<(String, String)> {
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

/// The image `up` built, and what this run pushed of it.
#[derive(Default)]
pub(crate) struct Images {
    image: tokio::sync::Mutex<Option<LocalImage>>,
    /// `repository@digest` pushed in this run (both task definitions name the same image).
    pushed: tokio::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Images {
    pub async fn set(&self, image: LocalImage) {
        *self.image.lock().await = Some(image);
    }
}

/// Before a task definition naming `image` (`{repository, digest}`) is registered: pushes the
/// image `up` built to that repository, once per repository and digest in a run. Nothing to do
/// for an image given by reference (no local image).
pub(crate) async fn push_for(cx: &Cx<'_>, id: &LogicalId, image: &ContainerImage) -> Result<()> {
    let (p, images, progress) = (cx.aws, cx.images, cx.progress);
    let ContainerImage::Pinned(PinnedImage { repository, digest, .. }) = image else { return Ok(()) };
    let (repository, digest) = (repository.as_str(), digest.as_str());
    // Held for the whole push: a second task definition waits, then finds it pushed.
    let local = images.image.lock().await;
    let Some(local) = local.as_ref() else { return Ok(()) };
    if local.image.manifest.digest != digest {
        return Err(ProviderError::new(format!(
            "task definition `{id}` names image {repository}@{digest}, but the image built for this run is {}: \
             it cannot be pushed from here (deploy it with --image REPOSITORY@DIGEST once it is in the registry)",
            local.image.manifest.digest
        )));
    }
    let key = format!("{repository}@{digest}");
    let mut pushed = images.pushed.lock().await;
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
