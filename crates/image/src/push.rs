//! `aira image push`: the OCI distribution protocol, the part needed to push one image.
//!
//! For each blob (layers, then the config): `HEAD /v2/<repo>/blobs/<digest>`; when absent,
//! `POST /v2/<repo>/blobs/uploads/` then a monolithic `PUT <location>?digest=<digest>`. Then
//! `PUT /v2/<repo>/manifests/<tag or digest>`. Blobs the registry already holds are not sent.
//!
//! Authentication: the pair the caller passes (`aira image push` reads it from
//! `AIRA_REGISTRY_USER` / `AIRA_REGISTRY_PASSWORD`, [`env_auth`]; `aira up` gets it from ECR's
//! `GetAuthorizationToken`). First `GET /v2/`: a registry that answers `401` with
//! `WWW-Authenticate: Bearer realm=…,service=…` (GitHub's, Docker Hub) gets the distribution
//! token flow: the pair goes to the realm once, as basic auth, for a token scoped to
//! `repository:<repo>:pull,push`, and every call carries that token. Others (ECR, a registry
//! with htpasswd) get HTTP basic on every call.

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use reqwest::{Method, StatusCode};

use super::oci::{Blob, Image};
use super::Error;

/// `REGISTRY/REPOSITORY[:TAG]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let help = "expected REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/aira/runtime:v1";
        if s.contains('@') {
            return Err(format!("`{s}`: push names a tag, not a digest ({help})"));
        }
        let Some((registry, rest)) = s.split_once('/') else {
            return Err(format!("`{s}` names no registry ({help})"));
        };
        if registry.is_empty() || !(registry.contains(['.', ':']) || registry == "localhost") {
            return Err(format!("`{registry}` is not a registry host ({help})"));
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (rest, None),
        };
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !c.is_empty()
                && c.bytes().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || b"._-".contains(&ch))
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(format!(
                "`{repository}` is not a valid repository name (lower-case letters, digits, `.`, `_`, `-`, components separated by `/`)"
            ));
        }
        if let Some(t) = &tag {
            let ok = t.len() <= 128
                && t.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(format!("`{t}` is not a valid tag (up to 128 of letters, digits, `.`, `_`, `-`)"));
            }
        }
        Ok(Reference { registry: registry.into(), repository: repository.into(), tag })
    }
}

impl Reference {
    fn host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.rsplit_once(':').map_or(r, |(h, _)| h)
    }

    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// `REGISTRY/REPOSITORY@sha256:…`: what a deployment pins.
    pub reference: String,
    pub digest: String,
    pub tag: Option<String>,
    pub uploaded: usize,
    pub skipped: usize,
    pub uploaded_bytes: u64,
}

struct Registry {
    http: reqwest::Client,
    base: String,
    repository: String,
    auth: Auth,
}

enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",…` challenge; `None` for another scheme.
fn bearer_challenge(header: &str) -> Option<Vec<(String, String)>> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.push((key.trim().to_ascii_lowercase(), value.to_string()));
        rest = next.trim_start_matches([',', ' ']);
    }
    Some(params)
}

/// The reason a registry call failed: its status and the registry's `errors[]`.
fn failure(what: &str, status: StatusCode, body: &[u8]) -> anyhow::Error {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let errors = v["errors"].as_array()?;
            let list: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e["code"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
                .collect();
            (!list.is_empty()).then(|| list.join("; "))
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "no error details".into()
            } else {
                text.chars().take(300).collect()
            }
        });
    anyhow!("{what}: HTTP {status}: {detail}")
}

impl Registry {
    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Auth::Basic(user, password) => req.basic_auth(user, Some(password)),
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::None => req,
        }
    }

    /// `GET /v2/`: a Bearer challenge is answered with a token from its realm (module doc).
    async fn authenticate(&mut self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let resp = self.request(Method::GET, &url).send().await.with_context(|| format!("no answer from {url}"))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        let challenge = resp.headers().get("www-authenticate").and_then(|h| h.to_str().ok()).unwrap_or_default();
        let Some(params) = bearer_challenge(challenge) else { return Ok(()) };
        let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let realm =
            param("realm").ok_or_else(|| anyhow!("the registry's Bearer challenge names no realm: {challenge}"))?;
        let scope = format!("repository:{}:pull,push", self.repository);
        let mut query = vec![("scope", scope.as_str())];
        query.extend(param("service").map(|s| ("service", s)));
        let what = format!("getting a push token for {} from {realm}", self.repository);
        let mut req = self.http.get(realm).query(&query);
        if let Auth::Basic(user, password) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = self.send(&what, req).await?;
        let body: serde_json::Value = resp.json().await.with_context(|| format!("{what}: the answer is not JSON"))?;
        let token = body["token"].as_str().or(body["access_token"].as_str());
        let token = token.ok_or_else(|| anyhow!("{what}: the answer holds no token"))?;
        self.auth = Auth::Bearer(token.to_string());
        Ok(())
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.with_context(|| format!("{what}: no answer from {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        Err(failure(what, status, &body))
    }

    /// Whether the registry already holds a blob.
    async fn has_blob(&self, blob: &Blob) -> Result<bool> {
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repository, blob.digest);
        let what = format!("checking blob {}", blob.digest);
        let resp = self.request(Method::HEAD, &url).send().await.with_context(|| format!("{what}: no answer"))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            // HEAD has no body: ask again with GET to read the registry's reason.
            s => {
                let body = self.request(Method::GET, &url).send().await.ok();
                let body = match body {
                    Some(r) => r.bytes().await.unwrap_or_default(),
                    None => Default::default(),
                };
                Err(failure(&what, s, &body))
            }
        }
    }

    async fn upload(&self, blob: &Blob) -> Result<()> {
        let what = format!("starting the upload of blob {} ({})", blob.digest, blob.media_type);
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.repository);
        let resp = self.send(&what, self.request(Method::POST, &url).header("content-length", "0")).await?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| anyhow!("{what}: the registry gave no upload location"))?;
        // The location may be relative, and may carry a query (upload state) already.
        let mut put = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str("digest=");
        put.push_str(&blob.digest);
        let what = format!("uploading blob {} ({} bytes)", blob.digest, blob.bytes.len());
        self.send(
            &what,
            self.request(Method::PUT, &put).header("content-type", "application/octet-stream").body(blob.bytes.clone()),
        )
        .await?;
        Ok(())
    }

    async fn put_manifest(&self, manifest: &Blob, tag_or_digest: &str) -> Result<Option<String>> {
        let what = format!("putting manifest {} as `{tag_or_digest}`", manifest.digest);
        let url = format!("{}/v2/{}/manifests/{tag_or_digest}", self.base, self.repository);
        let resp = self
            .send(
                &what,
                self.request(Method::PUT, &url)
                    .header("content-type", manifest.media_type)
                    .body(manifest.bytes.clone()),
            )
            .await?;
        Ok(resp.headers().get("docker-content-digest").and_then(|d| d.to_str().ok()).map(String::from))
    }
}

/// The basic-auth pair from `AIRA_REGISTRY_USER` / `AIRA_REGISTRY_PASSWORD`, if both are set.
pub fn env_auth() -> Result<Option<(String, String)>, Error> {
    match (std::env::var("AIRA_REGISTRY_USER"), std::env::var("AIRA_REGISTRY_PASSWORD")) {
        (Ok(u), Ok(p)) => Ok(Some((u, p))),
        (Err(_), Err(_)) => Ok(None),
        _ => Err(Error::Usage("set both AIRA_REGISTRY_USER and AIRA_REGISTRY_PASSWORD, or neither".into())),
    }
}

/// Pushes `image` to `to` with HTTP basic `auth` if given; blobs already there are not sent.
pub async fn push(
    image: &Image,
    to: &Reference,
    insecure: bool,
    auth: Option<(String, String)>,
    note: &(dyn Fn(&str) + Sync),
) -> Result<Pushed, Error> {
    if insecure && !to.is_loopback() {
        return Err(Error::Usage(format!(
            "--insecure (plain HTTP) is only allowed for a registry on loopback, not `{}`",
            to.registry
        )));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .https_only(!insecure)
        .user_agent(concat!("aira/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("create the HTTP client")?;
    let scheme = if insecure { "http" } else { "https" };
    let auth = match auth {
        Some((user, password)) => Auth::Basic(user, password),
        None => Auth::None,
    };
    let mut registry =
        Registry { http, base: format!("{scheme}://{}", to.registry), repository: to.repository.clone(), auth };
    registry.authenticate().await?;

    let (mut uploaded, mut skipped, mut uploaded_bytes) = (0, 0, 0u64);
    for blob in image.layers.iter().chain([&image.config]) {
        if registry.has_blob(blob).await? {
            note(&format!("blob {} is already in the registry", short(&blob.digest)));
            skipped += 1;
            continue;
        }
        note(&format!("uploading blob {} ({} bytes)", short(&blob.digest), blob.bytes.len()));
        registry.upload(blob).await?;
        uploaded += 1;
        uploaded_bytes += blob.bytes.len() as u64;
    }
    let digest = &image.manifest.digest;
    let answered = registry.put_manifest(&image.manifest, to.tag.as_deref().unwrap_or(digest)).await?;
    if let Some(d) = answered.filter(|d| d != digest) {
        return Err(Error::Failed(anyhow!("the registry stored the manifest as {d}, not {digest}")));
    }
    Ok(Pushed {
        reference: format!("{}/{}@{digest}", to.registry, to.repository),
        digest: digest.clone(),
        tag: to.tag.clone(),
        uploaded,
        skipped,
        uploaded_bytes,
    })
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let c =
            bearer_challenge(r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull""#);
        let c = c.unwrap();
        assert_eq!(c[0], ("realm".into(), "https://ghcr.io/token".into()));
        assert_eq!(c[1], ("service".into(), "ghcr.io".into()));
        assert_eq!(c[2], ("scope".into(), "repository:a/b:pull".into()));
        assert_eq!(bearer_challenge(r#"Basic realm="x""#), None);
        let unquoted = bearer_challenge("bearer realm=http://127.0.0.1:1/token, service=test").unwrap();
        assert_eq!(unquoted[1], ("service".into(), "test".into()));
    }

    #[test]
    fn references() {
        let r: Reference = "127.0.0.1:5000/aira/runtime:v1".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "aira/runtime", Some("v1"))
        );
        assert!(r.is_loopback());
        let r: Reference = "123.dkr.ecr.eu-west-1.amazonaws.com/aira".parse().unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_deref()), ("aira", None));
        assert!(!r.is_loopback());
        assert!("localhost/x".parse::<Reference>().unwrap().is_loopback());
        assert!("[::1]:5000/x:t".parse::<Reference>().unwrap().is_loopback());
        for bad in ["runtime", "aira/runtime", "h:1/Upper", "h:1/a//b", "h:1/a:bad tag", "h:1/a@sha256:00", "h:1/-a"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_errors_are_quoted() {
        let body = br#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#;
        let e = failure("uploading blob sha256:ab", StatusCode::METHOD_NOT_ALLOWED, body);
        assert_eq!(
            e.to_string(),
            "uploading blob sha256:ab: HTTP 405 Method Not Allowed: UNSUPPORTED: The operation is unsupported."
        );
    }
}
