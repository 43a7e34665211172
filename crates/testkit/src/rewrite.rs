//! Answers the proxy gives as AWS would where the moto server cannot: a deployment the circuit
//! breaker failed, a certificate that is not ISSUED, a role IAM has not yet made assumable.
//!
//! A [`Rewrites`] is shared between the proxy (in [`crate::proxy::Faults`]) and the test, so that
//! a test can break something between two runs of `aira`, and read what `aira` sent to mend it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use serde_json::{json, Value};

/// moto's account.
const ACCOUNT: &str = "123456789012";

#[derive(Clone, Default)]
pub struct Rewrites(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    /// ECS services (by name) whose PRIMARY deployment is reported FAILED by the circuit breaker.
    failed_deployments: BTreeSet<String>,
    /// Services (by name) an `UpdateService` with `forceNewDeployment` was sent for.
    forced: Vec<String>,
    /// Certificate ARN → the status `DescribeCertificate` and `ListCertificates` report.
    certificate_status: BTreeMap<String, String>,
    /// How long each call that hands AWS a role is refused after a `CreateRole`.
    role_delay: Option<Duration>,
    /// The ARN of the role created last.
    new_role: Option<String>,
    /// Action → when it was first refused since the last `CreateRole`.
    refusing: BTreeMap<&'static str, Instant>,
    refused: Vec<String>,
    /// Set when the harness runs the tasks (`scripts/deployed`): service name → what
    /// `DescribeServices` reports of it (`deployments`, `runningCount`, `pendingCount`).
    services: Option<BTreeMap<String, Value>>,
    /// Service name → deployment configuration fields `DescribeServices` reports instead of
    /// those aira sent: the deployed harness's negative control (a broken setting).
    deployment_overrides: BTreeMap<String, Value>,
}

/// The calls that hand AWS a role to assume, with the error AWS gives while IAM has not yet
/// propagated it to that service. ECS names the task's role; Application Auto Scaling its
/// service-linked role, which its first registration creates.
fn refusal(call: &str, request: &[u8], role: &str) -> Option<(&'static str, &'static str, String)> {
    let slr = format!(
        "arn:aws:iam::{ACCOUNT}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/\
         AWSServiceRoleForApplicationAutoScaling_ECSService"
    );
    let ecs = format!(
        "ECS was unable to assume the role '{role}' that was provided for this task. Please verify that the role \
         being passed has the proper trust relationship and permissions and that your IAM user has permissions to \
         pass this role."
    );
    match call {
        "ecs:CreateService" => Some(("ecs:CreateService", "InvalidParameterException", ecs)),
        // Only an update that deploys a task definition hands ECS its roles (not a scale to 0).
        "ecs:UpdateService" if contains(request, b"\"taskDefinition\"") => {
            Some(("ecs:UpdateService", "InvalidParameterException", ecs))
        }
        "application-autoscaling:RegisterScalableTarget" => Some((
            "application-autoscaling:RegisterScalableTarget",
            "ValidationException",
            format!("Unable to assume IAM role: {slr}"),
        )),
        "application-autoscaling:PutScalingPolicy" => Some((
            "application-autoscaling:PutScalingPolicy",
            "FailedResourceAccessException",
            format!(
                "User: arn:aws:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForApplicationAutoScaling_ECSService/\
                 AutoScaling is not authorized to perform: cloudwatch:DescribeAlarms"
            ),
        )),
        _ => None,
    }
}

impl Rewrites {
    /// From now on, `DescribeServices` reports the PRIMARY deployment of `service` FAILED by the
    /// circuit breaker with no task running, until an `UpdateService` forces a new deployment.
    pub fn fail_deployment(&self, service: &str) {
        self.0.lock().unwrap().failed_deployments.insert(service.to_string());
    }

    /// The services an `UpdateService` with `forceNewDeployment: true` was sent for.
    pub fn forced_deployments(&self) -> Vec<String> {
        self.0.lock().unwrap().forced.clone()
    }

    /// From now on, ACM reports the certificate `arn` with `status`. A PENDING_VALIDATION one is
    /// issued once a validation CNAME is written (UPSERT) again, as ACM does when it finds it.
    pub fn certificate_status(&self, arn: &str, status: &str) {
        self.0.lock().unwrap().certificate_status.insert(arn.to_string(), status.to_string());
    }

    /// Each call that hands AWS a role (ECS `CreateService`, `UpdateService` with a task
    /// definition; Application Auto Scaling `RegisterScalableTarget`, `PutScalingPolicy`) is
    /// refused with AWS's error from its first try after a `CreateRole` until `delay` later:
    /// IAM reaches each service separately, seconds after the role was created.
    pub fn role_not_assumable_for(&self, delay: Duration) {
        self.0.lock().unwrap().role_delay = Some(delay);
    }

    /// The calls refused by [`Rewrites::role_not_assumable_for`], as `service:Action`.
    pub fn refused(&self) -> Vec<String> {
        self.0.lock().unwrap().refused.clone()
    }

    /// From now on the harness runs the services' tasks: `DescribeServices` reports what
    /// [`Rewrites::service_state`] last set for each service, and a service not set yet a PRIMARY
    /// deployment IN_PROGRESS with no task running (moto runs none, and reports a fixed count).
    pub fn run_tasks(&self) {
        self.0.lock().unwrap().services.get_or_insert_with(BTreeMap::new);
    }

    /// `DescribeServices` reports these `deploymentConfiguration` fields of `service` from now on
    /// (`None`: what aira sent again), as if another tool had changed them.
    pub fn deployment_override(&self, service: &str, fields: Option<Value>) {
        let mut inner = self.0.lock().unwrap();
        match fields {
            Some(f) => inner.deployment_overrides.insert(service.to_string(), f),
            None => inner.deployment_overrides.remove(service),
        };
    }

    /// What `DescribeServices` reports of `service` from now on (fields replaced as given).
    pub fn service_state(&self, service: &str, state: Value) {
        self.0.lock().unwrap().services.get_or_insert_with(BTreeMap::new).insert(service.to_string(), state);
    }

    /// An error answer instead of forwarding the call, or `None`.
    pub(crate) fn refuse(&self, call: &str, request: &[u8]) -> Option<Response<Full<Bytes>>> {
        let mut inner = self.0.lock().unwrap();
        if call == "iam:CreateRole" {
            let role = form_param(request, "RoleName").unwrap_or_default();
            let path = form_param(request, "Path").unwrap_or_else(|| "/".into());
            inner.new_role = Some(format!("arn:aws:iam::{ACCOUNT}:role{path}{role}"));
            inner.refusing.clear();
            return None;
        }
        let delay = inner.role_delay?;
        let role = inner.new_role.clone()?;
        let (action, code, message) = refusal(call, request, &role)?;
        let since = *inner.refusing.entry(action).or_insert_with(Instant::now);
        if since.elapsed() >= delay {
            return None;
        }
        inner.refused.push(call.to_string());
        let body = json!({ "__type": code, "message": message }).to_string();
        Some(
            Response::builder()
                .status(400)
                .header("content-type", "application/x-amz-json-1.1")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
    }

    /// moto's answer to `call`, rewritten as AWS would give it.
    pub(crate) async fn answer(
        &self,
        call: &str,
        request: &[u8],
        answer: Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>> {
        if !answer.status().is_success() {
            return answer;
        }
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let answer = (parts, body);
        let mut inner = self.0.lock().unwrap();
        match call {
            "ecs:UpdateService" => {
                let req: Value = serde_json::from_slice(request).unwrap_or_default();
                if req["forceNewDeployment"] == json!(true) {
                    let name = req["service"].as_str().unwrap_or_default();
                    let name = name.rsplit('/').next().unwrap_or(name).to_string();
                    // A new deployment replaces the failed one.
                    inner.failed_deployments.remove(&name);
                    inner.forced.push(name);
                }
                forward(answer)
            }
            "ecs:DescribeServices" if inner.services.is_some() => rewrite_json(answer, |v| {
                let states = inner.services.as_ref().unwrap();
                for s in v["services"].as_array_mut().into_iter().flatten() {
                    let mut state = states
                        .get(s["serviceName"].as_str().unwrap_or_default())
                        .cloned()
                        .unwrap_or_else(|| json!({ "deployments": [], "runningCount": 0, "pendingCount": 0 }));
                    // ECS makes a deployment of a new task definition PRIMARY as `CreateService` or
                    // `UpdateService` returns, before any task of it runs.
                    let deployments = state["deployments"].as_array_mut().unwrap();
                    if deployments.first().is_none_or(|d| d["taskDefinition"] != s["taskDefinition"]) {
                        for d in deployments.iter_mut() {
                            d["status"] = json!("ACTIVE");
                        }
                        deployments.insert(
                            0,
                            json!({
                                "id": format!("ecs-svc/{}", deployments.len() + 1),
                                "status": "PRIMARY",
                                "taskDefinition": s["taskDefinition"],
                                "desiredCount": s["desiredCount"],
                                "runningCount": 0,
                                "pendingCount": 0,
                                "rolloutState": "IN_PROGRESS",
                            }),
                        );
                    }
                    for (k, value) in state.as_object().into_iter().flatten() {
                        s[k] = value.clone();
                    }
                    let name = s["serviceName"].as_str().unwrap_or_default();
                    for (k, value) in
                        inner.deployment_overrides.get(name).and_then(Value::as_object).into_iter().flatten()
                    {
                        s["deploymentConfiguration"][k] = value.clone();
                    }
                }
            }),
            "ecs:DescribeServices" if !inner.failed_deployments.is_empty() => rewrite_json(answer, |v| {
                for s in v["services"].as_array_mut().into_iter().flatten() {
                    if inner.failed_deployments.contains(s["serviceName"].as_str().unwrap_or_default()) {
                        fail_primary(s);
                    }
                }
            }),
            "acm:DescribeCertificate" | "acm:ListCertificates" if !inner.certificate_status.is_empty() => {
                rewrite_json(answer, |v| {
                    let certs = if v.get("Certificate").is_some() {
                        std::slice::from_mut(&mut v["Certificate"])
                    } else {
                        v["CertificateSummaryList"].as_array_mut().map(|a| a.as_mut_slice()).unwrap_or_default()
                    };
                    for c in certs {
                        if let Some(status) = inner.certificate_status.get(c["CertificateArn"].as_str().unwrap_or("")) {
                            c["Status"] = json!(status);
                        }
                    }
                })
            }
            // Route 53 `ChangeResourceRecordSets`: a validation CNAME written again lets ACM issue.
            c if c.starts_with("route53:POST ")
                && c.contains("/rrset")
                && contains(request, b"UPSERT")
                && contains(request, b"CNAME") =>
            {
                inner.certificate_status.retain(|_, s| s != "PENDING_VALIDATION");
                forward(answer)
            }
            _ => forward(answer),
        }
    }
}

/// The service's PRIMARY deployment as the circuit breaker leaves it: FAILED, no task running.
fn fail_primary(service: &mut Value) {
    let desired = service["desiredCount"].clone();
    let td = service["taskDefinition"].clone();
    let deployments = service["deployments"].as_array_mut();
    let deployments = match deployments {
        Some(d) => d,
        None => {
            service["deployments"] = json!([]);
            service["deployments"].as_array_mut().unwrap()
        }
    };
    if !deployments.iter().any(|d| d["status"] == "PRIMARY") {
        deployments.push(json!({ "id": "ecs-svc/0000000000000000000", "status": "PRIMARY", "taskDefinition": td }));
    }
    for d in deployments.iter_mut().filter(|d| d["status"] == "PRIMARY") {
        d["rolloutState"] = json!("FAILED");
        d["rolloutStateReason"] = json!("ECS deployment circuit breaker: tasks failed to start.");
        d["desiredCount"] = desired.clone();
        d["runningCount"] = json!(0);
        d["pendingCount"] = json!(0);
        d["failedTasks"] = desired.clone();
    }
    service["runningCount"] = json!(0);
    service["pendingCount"] = json!(0);
}

type Answer = (hyper::http::response::Parts, Bytes);

fn forward(answer: Answer) -> Response<Full<Bytes>> {
    Response::from_parts(answer.0, Full::new(answer.1))
}

fn rewrite_json(answer: Answer, edit: impl FnOnce(&mut Value)) -> Response<Full<Bytes>> {
    let (mut parts, bytes) = answer;
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Full::new(bytes));
    };
    edit(&mut v);
    let out = Bytes::from(v.to_string());
    parts.headers.remove("content-length");
    Response::from_parts(parts, Full::new(out))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A form parameter of a query-protocol request, percent-decoded.
fn form_param(body: &[u8], key: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let raw = text.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
    let mut out = Vec::new();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}
