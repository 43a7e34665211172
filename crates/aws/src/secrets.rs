//! The Secrets Manager secrets a stack references (the model's API key): whether each exists,
//! never its value; and setting one from standard input.

use aws_sdk_secretsmanager::Client;
use serde::Serialize;

use crate::AwsProvider;
use aira_engine::provider::{ProviderError, TAG_MANAGED_BY};

#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    pub name: String,
    /// What in the stack refers to it.
    pub used_for: String,
    pub exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Unix seconds of the last change, when AWS says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_changed: Option<i64>,
}

/// The secrets a stack names, as `aira secret` reads and sets them.
impl AwsProvider {
    /// Whether the secret exists, never its value.
    pub async fn secret_info(&self, name: &str, used_for: &str) -> Result<SecretInfo, ProviderError> {
        describe(&self.clients.secrets, name, used_for).await
    }

    /// Creates the secret, or adds a new version of it. Returns whether it was created.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<bool, ProviderError> {
        set(&self.clients.secrets, name, value).await
    }
}

async fn describe(sm: &Client, name: &str, used_for: &str) -> Result<SecretInfo, ProviderError> {
    match sm.describe_secret().secret_id(name).send().await {
        Ok(out) => Ok(SecretInfo {
            name: name.into(),
            used_for: used_for.into(),
            exists: out.deleted_date.is_none(),
            arn: out.arn,
            last_changed: out.last_changed_date.map(|d| d.secs()),
        }),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(SecretInfo {
            name: name.into(),
            used_for: used_for.into(),
            exists: false,
            arn: None,
            last_changed: None,
        }),
        Err(e) => Err(crate::sdk::error(format!("read secret `{name}`"), e)),
    }
}

/// Creates the secret, or adds a new version of it. Returns whether it was created.
async fn set(sm: &Client, name: &str, value: &str) -> Result<bool, ProviderError> {
    match sm.put_secret_value().secret_id(name).secret_string(value).send().await {
        Ok(_) => return Ok(false),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {}
        Err(e) => return Err(crate::sdk::error(format!("set secret `{name}`"), e)),
    }
    let tag = aws_sdk_secretsmanager::types::Tag::builder().key(TAG_MANAGED_BY).value("aira").build();
    call!(format!("create secret `{name}`"), sm.create_secret().name(name).secret_string(value).tags(tag).send());
    Ok(true)
}

/// Pre-flight: the secret exists and this caller can read it. Returns its ARN and whether a
/// customer managed KMS key encrypts it (the tasks' execution role then needs `kms:Decrypt`:
/// this caller's rights say nothing of the role's); a user error naming the fix otherwise.
pub async fn preflight(sm: &Client, name: &str) -> Result<(String, bool), ProviderError> {
    match sm.get_secret_value().secret_id(name).send().await {
        Ok(out) => {
            let arn = out.arn.unwrap_or_default();
            let described = call!(format!("describe secret `{name}`"), sm.describe_secret().secret_id(&arn).send());
            // Absent for the AWS managed key `aws/secretsmanager` (Secrets Manager API Reference,
            // `DescribeSecret`: `KmsKeyId`).
            let own_key = described.kms_key_id().is_some_and(|k| !k.ends_with("alias/aws/secretsmanager"));
            Ok((arn, own_key))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            Err(ProviderError::user(format!(
                "llm.api_key: the secret `{name}` does not exist; create it with `aira secret set {name} < key.txt`"
            )))
        }
        Err(e) => Err(ProviderError::user(format!(
            "llm.api_key: cannot read the secret `{name}` ({}); the tasks' execution role will need the same access",
            crate::sdk::describe(&e)
        ))),
    }
}
