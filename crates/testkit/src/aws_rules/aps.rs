//! Amazon Managed Service for Prometheus: the states moto skips (`CREATING`, `DELETING`) and the
//! alert manager definitions moto 5.1 lacks, answered by the proxy.

use super::*;

/// How long a new workspace stays `CREATING`, and a deleted one `DELETING` (moto: neither).
pub const WORKSPACE_SETTLING: Duration = Duration::from_secs(2);
/// How long a rule groups namespace or alert manager definition stays `CREATING`/`UPDATING`.
pub const APS_SETTLING: Duration = Duration::from_secs(1);

/// An alert manager definition the proxy keeps for a workspace (moto 5.1 has none).
struct Definition {
    /// Base64, as AMP's JSON carries it.
    data: String,
    /// `CREATING` or `UPDATING` until `since + APS_SETTLING`, then `ACTIVE`.
    writing: &'static str,
    since: Instant,
}

/// What the AMP rules remember.
#[derive(Default)]
struct Aps {
    /// Workspace id → when `CreateWorkspace` answered.
    created: HashMap<String, Instant>,
    /// Workspace id → its description as `DELETING`, and when `DeleteWorkspace` answered.
    deleted: HashMap<String, (Value, Option<Instant>)>,
    /// `workspace/name` → (`CREATING` or `UPDATING`, when written).
    namespaces: HashMap<String, (&'static str, Instant)>,
    definitions: HashMap<String, Definition>,
}

fn aps() -> std::sync::MutexGuard<'static, Aps> {
    static APS: OnceLock<Mutex<Aps>> = OnceLock::new();
    APS.get_or_init(Mutex::default).lock().unwrap()
}

/// `aps:METHOD /path` → (method, path segments).
fn rest(call: &Call<'_>) -> Option<(String, Vec<String>)> {
    let (method, path) = call.call.strip_prefix("aps:")?.split_once(' ')?;
    let path = path.split('?').next().unwrap_or(path);
    Some((method.to_string(), path.trim_matches('/').split('/').map(String::from).collect()))
}

fn aps_error(status: u16, kind: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-errortype", kind)
        .body(Full::new(Bytes::from(json!({ "message": message }).to_string())))
        .unwrap()
}

fn aps_json(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// AMP calls answered or refused before moto sees them:
/// - a rule groups namespace or alert manager definition written to a workspace still
///   `CREATING` is refused with `ConflictException` (AMP API reference: "The request would cause
///   an inconsistent state"; the workspace must be `ACTIVE`);
/// - `DescribeWorkspace` of a workspace deleted moments ago answers `DELETING`, as AWS deletes
///   asynchronously.
pub(super) fn aps_rules(call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let (method, path) = rest(call)?;
    let ws = path.get(1)?.clone();
    if path.first().map(String::as_str) != Some("workspaces") {
        return None;
    }
    let writes_into = path.len() >= 3 && method != "GET" && method != "DELETE";
    if writes_into && aps().created.get(&ws).is_some_and(|t| t.elapsed() < WORKSPACE_SETTLING) {
        return Some(aps_error(409, "ConflictException", &format!("Workspace {ws} is in CREATING state")));
    }
    if path.len() == 2 && method == "GET" {
        let deleting = aps()
            .deleted
            .get(&ws)
            .filter(|(_, t)| t.is_some_and(|t| t.elapsed() < WORKSPACE_SETTLING))
            .map(|(v, _)| v.clone());
        return deleting.map(|w| aps_json(200, json!({ "workspace": w })));
    }
    None
}

/// AMP's alert manager definitions (moto 5.1 has none): `CreateAlertManagerDefinition` (409 when
/// one exists), `Describe…`, `Put…`, `Delete…`, each refusing a workspace moto does not have; a
/// definition with `api_url` or `http_config` in its SNS receivers is refused as the user guide
/// says ("Configure alert manager to send messages to your Amazon SNS topic": not allowed), and
/// so is one without `alertmanager_config`. A new or rewritten one is `CREATING`/`UPDATING` for
/// [`APS_SETTLING`].
pub(super) async fn aps_alert_manager(moto: &Moto<'_>, call: &Call<'_>) -> Option<Response<Full<Bytes>>> {
    let (method, path) = rest(call)?;
    if path.first().map(String::as_str) != Some("workspaces") || path.get(2).map(String::as_str) != Some("alertmanager")
    {
        return None;
    }
    let ws = path.get(1)?.clone();
    if !moto.rest_get(call, "aps", &format!("/workspaces/{ws}")).await.0 {
        return Some(aps_error(404, "ResourceNotFoundException", &format!("Workspace {ws} not found")));
    }
    let mut state = aps();
    let defs = &mut state.definitions;
    let now = Instant::now();
    match method.as_str() {
        "POST" | "PUT" => {
            let data = call.json().and_then(|b| b["data"].as_str().map(String::from)).unwrap_or_default();
            let text = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &data)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if !text.contains("alertmanager_config:") {
                return Some(aps_error(400, "ValidationException", "the definition has no alertmanager_config"));
            }
            if let Some(bad) = ["api_url:", "http_config:"].into_iter().find(|k| text.contains(k)) {
                return Some(aps_error(
                    400,
                    "ValidationException",
                    &format!("{bad} is not allowed in an SNS receiver"),
                ));
            }
            let writing = if method == "POST" {
                if defs.contains_key(&ws) {
                    return Some(aps_error(409, "ConflictException", "an alert manager definition exists"));
                }
                "CREATING"
            } else {
                if !defs.contains_key(&ws) {
                    return Some(aps_error(404, "ResourceNotFoundException", "no alert manager definition"));
                }
                "UPDATING"
            };
            defs.insert(ws, Definition { data, writing, since: now });
            Some(aps_json(202, json!({ "status": { "statusCode": writing } })))
        }
        "GET" => Some(match defs.get(&ws) {
            Some(d) => {
                let code = if d.since.elapsed() < APS_SETTLING { d.writing } else { "ACTIVE" };
                aps_json(
                    200,
                    json!({ "alertManagerDefinition": {
                        "createdAt": 0, "modifiedAt": 0, "data": d.data, "status": { "statusCode": code },
                    } }),
                )
            }
            None => aps_error(404, "ResourceNotFoundException", "no alert manager definition"),
        }),
        "DELETE" => Some(match defs.remove(&ws) {
            Some(_) => aps_json(202, json!({})),
            None => aps_error(404, "ResourceNotFoundException", "no alert manager definition"),
        }),
        _ => None,
    }
}

/// moto's AMP answers amended: a new workspace is `CREATING` for a while, and so is a new or
/// rewritten rule groups namespace (`UPDATING`); a deleted workspace's last description is
/// kept to answer `DELETING`; its alert manager definition goes with it.
pub(super) fn aps_amend(call: &Call<'_>, body: Bytes) -> Bytes {
    let Some((method, path)) = rest(call) else { return body };
    // DeleteWorkspace answers with no body.
    let mut answer = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let now = Instant::now();
    let mut state = aps();
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["workspaces"]) => {
            if let Some(ws) = answer["workspaceId"].as_str() {
                state.created.insert(ws.to_string(), now);
                answer["status"] = json!({ "statusCode": "CREATING" });
            }
        }
        ("GET", ["workspaces", ws]) => {
            let creating = state.created.get(*ws).is_some_and(|t| t.elapsed() < WORKSPACE_SETTLING);
            if creating {
                answer["workspace"]["status"] = json!({ "statusCode": "CREATING" });
            }
            // Kept for the `DELETING` answers after it is deleted.
            let mut deleting = answer["workspace"].clone();
            deleting["status"] = json!({ "statusCode": "DELETING" });
            state.deleted.insert(ws.to_string(), (deleting, None));
        }
        ("DELETE", ["workspaces", ws]) => {
            if let Some((_, at)) = state.deleted.get_mut(*ws) {
                *at = Some(now);
            }
            state.definitions.remove(*ws);
            return body;
        }
        ("POST", ["workspaces", ws, "rulegroupsnamespaces"]) => {
            if let Some(name) = answer["name"].as_str() {
                state.namespaces.insert(format!("{ws}/{name}"), ("CREATING", now));
                answer["status"] = json!({ "statusCode": "CREATING" });
            }
        }
        ("PUT", ["workspaces", ws, "rulegroupsnamespaces", name]) => {
            state.namespaces.insert(format!("{ws}/{name}"), ("UPDATING", now));
            answer["status"] = json!({ "statusCode": "UPDATING" });
        }
        ("GET", ["workspaces", ws, "rulegroupsnamespaces", name]) => {
            if let Some((code, at)) = state.namespaces.get(&format!("{ws}/{name}")) {
                if at.elapsed() < APS_SETTLING {
                    answer["ruleGroupsNamespace"]["status"] = json!({ "statusCode": code });
                }
            }
        }
        _ => return body,
    }
    Bytes::from(answer.to_string())
}
