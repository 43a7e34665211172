//! Pre-flight of a model on Amazon Bedrock (`llm.provider: bedrock`): whether the stack's region
//! serves it on demand, or the inference profile it names and the regions that routes to, for
//! the worker's grant.

use aws_sdk_bedrock::types::{InferenceProfileType, InferenceType};
use aws_sdk_bedrock::Client;

use crate::sdk;
use aira_engine::provider::{BedrockModel, ProviderError};

type Result<T> = std::result::Result<T, ProviderError>;

/// Codes of a model or profile the region does not have (GetFoundationModel and
/// GetInferenceProfile answer either, by the form of the id).
const UNKNOWN: &[&str] = &["ResourceNotFoundException", "ValidationException"];

/// The model `id` of the stack's region, read from Bedrock: a foundation model it serves on
/// demand, or an inference profile with the foundation models it routes to. A model the region
/// does not have, or serves only through an inference profile, is the user's to fix, with the id
/// to use; when the deployer may not read Bedrock, the grant is what the id alone tells and a
/// note says so.
pub async fn preflight(client: &Client, region: &str, account: &str, id: &str) -> Result<(BedrockModel, Vec<String>)> {
    let assumed = aira_engine::expand::assumed_model(region, account, id);
    let read = match aira_engine::stack::inference_profile(id) {
        Some(_) => profile(client, region, id).await,
        None => foundation_model(client, region, id).await.map(|()| Some(assumed.invoke.clone())),
    };
    match read {
        Ok(Some(invoke)) => Ok((BedrockModel { invoke, ..assumed }, Vec::new())),
        Ok(None) => Err(ProviderError::user(format!(
            "llm.model: {region} has no Bedrock model or inference profile `{id}` (`aws bedrock list-foundation-models \
             --region {region}` and `aws bedrock list-inference-profiles --region {region}` list what it has)"
        ))),
        Err(e) if e.is_user() => Err(e),
        Err(e) => Ok((
            assumed,
            vec![format!(
                "could not read the model `{id}` from Bedrock ({}); the worker is granted what its id names, going on",
                e.message
            )],
        )),
    }
}

/// Whether the region serves the foundation model on demand; `Err` (the user's) naming the
/// inference profile to use when it serves it only through one.
async fn foundation_model(client: &Client, region: &str, id: &str) -> Result<()> {
    let out = match client.get_foundation_model().model_identifier(id).send().await {
        Ok(out) => out,
        Err(e) if sdk::code(&e).is_some_and(|c| UNKNOWN.contains(&c)) => {
            return Err(ProviderError::user(format!(
            "llm.model: {region} has no Bedrock model `{id}` (`aws bedrock list-foundation-models --region {region}` \
                 lists what it has)"
        )))
        }
        Err(e) => return Err(sdk::error(format!("read the Bedrock model `{id}`"), e)),
    };
    let types = out.model_details().map(|d| d.inference_types_supported()).unwrap_or_default();
    if types.contains(&InferenceType::OnDemand) {
        return Ok(());
    }
    let arn = out.model_details().map(|d| d.model_arn()).unwrap_or_default().to_string();
    let profiles = profiles_of(client, &arn).await?;
    let hint = match profiles.first() {
        Some(p) => format!("name its inference profile instead, `{p}`"),
        None => "no system-defined inference profile of the region routes to it".into(),
    };
    Err(ProviderError::user(format!(
        "llm.model: {region} does not serve `{id}` on demand, only through an inference profile; {hint}"
    )))
}

/// The ids of the system-defined inference profiles that route to the foundation model `arn`.
async fn profiles_of(client: &Client, arn: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pages =
        client.list_inference_profiles().type_equals(InferenceProfileType::SystemDefined).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk::error("list the Bedrock inference profiles", e))?;
        for p in page.inference_profile_summaries() {
            if p.models().iter().any(|m| m.model_arn() == Some(arn)) {
                found.push(p.inference_profile_id().to_string());
            }
        }
    }
    Ok(found)
}

/// The ARNs to grant for the inference profile `id`: its own and its models' (one a region it
/// routes to); `None` when the region has no such profile.
async fn profile(client: &Client, region: &str, id: &str) -> Result<Option<Vec<String>>> {
    let out = match client.get_inference_profile().inference_profile_identifier(id).send().await {
        Ok(out) => out,
        Err(e) if sdk::code(&e).is_some_and(|c| UNKNOWN.contains(&c)) => return Ok(None),
        Err(e) => return Err(sdk::error(format!("read the Bedrock inference profile `{id}` of {region}"), e)),
    };
    let mut invoke = vec![out.inference_profile_arn().to_string()];
    invoke.extend(out.models().iter().filter_map(|m| m.model_arn().map(String::from)));
    Ok(Some(invoke))
}
