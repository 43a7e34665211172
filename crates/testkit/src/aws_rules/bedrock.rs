//! Amazon Bedrock's control plane as the pre-flight reads it, which moto lacks: a small
//! catalogue of foundation models and system-defined inference profiles, answered in AWS's shapes
//! (Bedrock API Reference: `GetFoundationModel`, `GetInferenceProfile`, `ListInferenceProfiles`).

use super::*;

/// The account moto answers for.
const ACCOUNT: &str = "123456789012";

/// (model id, served on demand): every region of the catalogue has each model; a model served
/// on demand nowhere is reached only through an inference profile (as recent Claude models are).
const MODELS: &[(&str, bool)] = &[
    ("amazon.nova-lite-v1:0", true),
    ("anthropic.claude-3-haiku-20240307-v1:0", true),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", false),
];

/// (profile id, the regions it routes to): a profile is available in each region it routes to.
const PROFILES: &[(&str, &[&str])] = &[
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", &["us-east-1", "us-east-2", "us-west-2"]),
    ("us.amazon.nova-lite-v1:0", &["us-east-1", "us-east-2", "us-west-2"]),
    ("eu.amazon.nova-lite-v1:0", &["eu-central-1", "eu-west-1", "eu-west-3"]),
];

fn model_arn(region: &str, model: &str) -> String {
    format!("arn:aws:bedrock:{region}::foundation-model/{model}")
}

fn profile_json(region: &str, id: &str, routes: &[&str]) -> Value {
    let model = id.split_once('.').map_or(id, |(_, m)| m);
    json!({
        "inferenceProfileId": id,
        "inferenceProfileName": id,
        "inferenceProfileArn": format!("arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{id}"),
        "models": routes.iter().map(|r| json!({ "modelArn": model_arn(r, model) })).collect::<Vec<_>>(),
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    })
}

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status).header("content-type", "application/json");
    if let Some(kind) = body["__type"].as_str() {
        r = r.header("x-amzn-errortype", kind);
    }
    r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn not_found(message: &str) -> Response<Full<Bytes>> {
    answer(404, json!({ "__type": "ResourceNotFoundException", "message": message }))
}

/// The answer to a `bedrock:` control-plane call, `None` for any other call.
pub fn bedrock_catalogue(call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let (method, path) = call.call.strip_prefix("bedrock:")?.split_once(' ')?;
    if method != "GET" {
        return None;
    }
    let region = scope_part(call.headers, 2).unwrap_or_else(|| "us-east-1".into());
    let segments: Vec<String> = path.trim_start_matches('/').split('/').map(decode).collect();
    let available = |routes: &&[&str]| routes.contains(&region.as_str());
    match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["foundation-models", id] => match MODELS.iter().find(|(m, _)| *m == id) {
            Some((model, on_demand)) => {
                let types = if *on_demand { vec!["ON_DEMAND"] } else { vec!["INFERENCE_PROFILE"] };
                let details = json!({
                    "modelId": model,
                    "modelArn": model_arn(&region, model),
                    "modelName": model,
                    "providerName": model.split('.').next().unwrap_or_default(),
                    "inferenceTypesSupported": types,
                    "inputModalities": ["TEXT"],
                    "outputModalities": ["TEXT"],
                    "responseStreamingSupported": true,
                    "modelLifecycle": { "status": "ACTIVE" },
                });
                Some(answer(200, json!({ "modelDetails": details })))
            }
            None => Some(not_found("Could not resolve the foundation model from the provided model identifier.")),
        },
        ["inference-profiles", id] => match PROFILES.iter().find(|(p, routes)| *p == id && available(routes)) {
            Some((id, routes)) => Some(answer(200, profile_json(&region, id, routes))),
            None => Some(not_found("The specified inference profile could not be found.")),
        },
        ["inference-profiles"] => {
            let summaries: Vec<Value> = PROFILES
                .iter()
                .filter(|(_, routes)| available(routes))
                .map(|(id, routes)| profile_json(&region, id, routes))
                .collect();
            Some(answer(200, json!({ "inferenceProfileSummaries": summaries })))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_found_in_the_regions_it_routes_to_only() {
        let headers = |region: &str| {
            let mut h = HeaderMap::new();
            let auth = format!("AWS4-HMAC-SHA256 Credential=k/20260101/{region}/bedrock/aws4_request, Signature=0");
            h.insert("authorization", auth.parse().unwrap());
            h
        };
        let status = |region: &str, call: &str| {
            let h = headers(region);
            bedrock_catalogue(&Call { call, headers: &h, body: b"" }).map(|r| r.status().as_u16())
        };
        let profile = "bedrock:GET /inference-profiles/us.anthropic.claude-3-5-haiku-20241022-v1%3A0";
        assert_eq!(status("us-west-2", profile), Some(200));
        assert_eq!(status("eu-west-1", profile), Some(404));
        assert_eq!(status("eu-west-1", "bedrock:GET /foundation-models/amazon.nova-lite-v1%3A0"), Some(200));
        assert_eq!(status("eu-west-1", "bedrock:GET /foundation-models/x.y"), Some(404));
        assert_eq!(status("eu-west-1", "bedrock:POST /model/x/converse"), None);
    }
}
