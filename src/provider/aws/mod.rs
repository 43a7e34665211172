//! The AWS provider: the only module that imports `aws-sdk-*`.

mod sqs;

use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::{Observed, Progress, Provider, ProviderError, Resolved, Scope};
use crate::graph::Kind;

/// Where and how to reach AWS; `None` fields fall back to the SDK's configuration chain
/// (environment, profiles, SSO, IMDS; `AWS_ENDPOINT_URL` included).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

pub async fn sdk_config(conn: &Connection) -> SdkConfig {
    // Throttling, `RequestLimitExceeded` and 5xx are retried with jittered exponential backoff
    // by the SDK's standard mode; more attempts than its default 3, since a run must converge.
    let retry = RetryConfig::standard()
        .with_max_attempts(10)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(10));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry);
    if let Some(region) = &conn.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &conn.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &conn.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

pub struct AwsProvider {
    sqs: aws_sdk_sqs::Client,
}

impl AwsProvider {
    pub fn new(config: &SdkConfig) -> Self {
        AwsProvider {
            sqs: aws_sdk_sqs::Client::new(config),
        }
    }
}

/// The AWS error code and message, or the whole error chain when there is no service error.
fn aws_error<E, R>(e: aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = e.as_service_error() {
        if let Some(code) = service.code() {
            return format!("{code}: {}", service.message().unwrap_or("(no message)"));
        }
    }
    aws_sdk_sqs::error::DisplayErrorContext(e).to_string()
}

#[async_trait]
impl Provider for AwsProvider {
    async fn observe(&self, scope: &Scope) -> Result<Vec<Observed>, ProviderError> {
        sqs::observe(&self.sqs, scope).await
    }

    async fn create(&self, scope: &Scope, res: &Resolved, _: &dyn Progress) -> Result<Observed, ProviderError> {
        match res.kind {
            Kind::SqsQueue => sqs::create(&self.sqs, scope, res).await,
        }
    }

    async fn update(
        &self,
        scope: &Scope,
        res: &Resolved,
        current: &Observed,
        _: &dyn Progress,
    ) -> Result<Observed, ProviderError> {
        match res.kind {
            Kind::SqsQueue => sqs::update(&self.sqs, scope, res, current).await,
        }
    }

    async fn delete(&self, _: &Scope, current: &Observed, _: &dyn Progress) -> Result<(), ProviderError> {
        match current.kind {
            Kind::SqsQueue => sqs::delete(&self.sqs, current).await,
        }
    }
}
