//! SigV4 for the runtime's own HTTP calls to AWS (Bedrock's Converse API, Prometheus remote
//! write to Amazon Managed Service for Prometheus): the credential chain's credentials, cached,
//! and the signature headers of one request.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use tokio::sync::Mutex;

/// Credentials are fetched again this long before they expire, so that a request signed with
/// them still arrives in time (the SDKs refresh 5 minutes early too).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// The chain's credentials, fetched once and again shortly before they expire (the chain's
/// own providers do not cache; the ECS endpoint would be asked on every call).
pub struct CachedCredentials {
    provider: SharedCredentialsProvider,
    current: Mutex<Option<Credentials>>,
}

impl CachedCredentials {
    pub fn new(provider: SharedCredentialsProvider) -> CachedCredentials {
        CachedCredentials { provider, current: Mutex::new(None) }
    }

    /// Valid credentials, or the chain's error as one line.
    pub async fn get(&self) -> Result<Credentials, String> {
        // One refresh at a time: callers that wait get the refreshed credentials.
        let mut current = self.current.lock().await;
        let fresh = |c: &Credentials| c.expiry().is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
        if let Some(c) = current.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        match self.provider.provide_credentials().await {
            Ok(c) => {
                *current = Some(c.clone());
                Ok(c)
            }
            // Credentials that are about to expire still work until they do.
            Err(_) if current.as_ref().is_some_and(|c| c.expiry().is_none_or(|e| e > SystemTime::now())) => {
                Ok(current.clone().expect("checked above"))
            }
            Err(e) => Err(error_chain(&e)),
        }
    }
}

/// The signature headers (`authorization`, `x-amz-date`, `x-amz-security-token` with
/// temporary credentials) of a request to `url` for `service` in `region`. `headers` are the
/// ones the request will carry besides (`host` is taken from the URL); they are signed too.
pub fn sign_headers(
    credentials: Credentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params).map_err(|e| e.to_string())?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// An error and its sources on one line (`a: b: c`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let _ = write!(s, ": {inner}");
        source = inner.source();
    }
    s
}
