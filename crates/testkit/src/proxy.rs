//! A recording, fault-injecting HTTP proxy in front of the moto server.
//!
//! moto answers every call at once and never fails on its own; AWS is slower and throttles.
//! This proxy records the action of every call (to prove that a converged stack makes no
//! mutating call), adds a fixed latency per call, and answers a share of calls with the
//! throttling errors of each AWS protocol or a bare HTTP 503. Where moto's answer differs from
//! what AWS documents, the proxy gives AWS's (`as_aws`, and unless `Faults::moto_only` the
//! conformance layer `crate::aws_rules`; each rule is a row of `tests/it/README.md`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

use crate::aws_rules;

#[derive(Default)]
pub struct Faults {
    /// Added to every call.
    pub latency: Duration,
    /// Share of calls (0.0–1.0) answered with a throttling error instead of being forwarded.
    pub throttle: f64,
    /// The n-th mutating call (from 1) is forwarded but never answered; `Proxy::hung` fires.
    pub hang_after_mutations: Option<u64>,
    /// The first call of this action (`RunInstances`) is forwarded but never answered, as with
    /// `hang_after_mutations`.
    pub hang_on: Option<&'static str>,
    /// Calls of this action (`DeleteSubnet`) answered with an EC2 error `(code, times)`:
    /// the first `times` calls, or every call when `times` is 0. A call of a JSON protocol
    /// (`CreateQueue`) gets the code as its protocol carries it (`x-amzn-query-error`).
    pub ec2_error: Option<(&'static str, &'static str, u64)>,
    /// Every DynamoDB call of this action (`UpdateItem`) on this table answered with this
    /// error code (`AccessDeniedException`), as DynamoDB's JSON protocol writes it.
    pub dynamodb_error: Option<(&'static str, &'static str, &'static str)>,
    /// This many DynamoDB `TransactWriteItems` calls, every other one from the first, are
    /// cancelled as AWS cancels a transaction that meets another one on an item
    /// (`TransactionConflict`), which moto never does: so each transaction in a row meets one
    /// conflict, and its retry passes.
    pub transaction_conflicts: u64,
    /// `(service, zone)`: `DescribeVpcEndpointServices` answers without `zone` among the zones
    /// of the endpoint service `com.amazonaws.REGION.service` (`crate::endpoint_zones`).
    pub endpoint_service_without_zone: Option<(&'static str, &'static str)>,
    /// A region without this endpoint service (`aps-workspaces`): `DescribeVpcEndpointServices`
    /// naming `com.amazonaws.REGION.service` is refused as AWS refuses an unknown one
    /// (`InvalidServiceName`).
    pub endpoint_service_absent: Option<&'static str>,
    /// `(action, hold)`: calls of this action (`AttachInternetGateway`) are held this long before
    /// they are forwarded, as AWS may take longer than moto to finish them.
    pub slow: Option<(&'static str, Duration)>,
    /// Answers rewritten as AWS gives them where moto cannot (failed deployments, certificates
    /// not issued, roles not yet assumable); the test keeps a clone to switch them on.
    pub rewrite: crate::rewrite::Rewrites,
    /// Forward as moto answers, without the AWS rules of `crate::aws_rules`.
    pub moto_only: bool,
}

/// One call with what aira sent and the status it got.
#[derive(Clone, Debug)]
pub struct Sent {
    /// `service:Action`.
    pub call: String,
    /// The request body (JSON, or the query protocol's form).
    pub body: String,
    pub status: u16,
    /// The answer's body, and when the call reached the proxy and its answer left.
    pub answer: String,
    pub started: SystemTime,
    pub answered: SystemTime,
}

impl Sent {
    /// The body as JSON (JSON protocols), `Null` otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// A call with when it reached the proxy and when its answer left (wall clock, to compare with
/// the times a test reads from AWS).
#[derive(Clone, Debug)]
pub struct Timed {
    pub call: String,
    pub started: SystemTime,
    pub answered: Option<SystemTime>,
}

/// Sets a call's answer time when its handler ends, whichever way it ends.
struct Answered(Arc<Mutex<Vec<Timed>>>, usize);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.lock().unwrap()[self.1].answered = Some(SystemTime::now());
    }
}

pub struct Proxy {
    pub url: String,
    calls: Arc<Mutex<Vec<String>>>,
    timed: Arc<Mutex<Vec<Timed>>>,
    requests: Arc<Mutex<Vec<Sent>>>,
    pub faults_injected: Arc<AtomicU64>,
    /// Fires when the call chosen by `Faults::hang_after_mutations` is hanging.
    pub hung: Arc<Notify>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, faults: Faults) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let timed = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let injected = Arc::new(AtomicU64::new(0));
        let hung = Arc::new(Notify::new());
        let state = Arc::new(State {
            hung: hung.clone(),
            mutations: AtomicU64::new(0),
            hung_on: AtomicU64::new(0),
            ec2_errors: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            dynamodb: tokio::sync::RwLock::new(()),
            upstream: upstream.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            calls: calls.clone(),
            timed: timed.clone(),
            requests: requests.clone(),
            faults,
            injected: injected.clone(),
            counter: AtomicU64::new(0),
        });
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { url: format!("http://{addr}"), calls, timed, requests, faults_injected: injected, hung }
    }

    /// The calls so far as `service:Action` (`sqs:CreateQueue`, `ec2:DescribeVpcs`), and forgets them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }

    /// Every call so far with its times (kept by `take_calls`).
    pub fn timed_calls(&self) -> Vec<Timed> {
        self.timed.lock().unwrap().clone()
    }

    /// The calls answered so far with their bodies and statuses, and forgets them.
    pub fn take_requests(&self) -> Vec<Sent> {
        std::mem::take(&mut self.requests.lock().unwrap())
    }
}

/// Whether a call (`service:Action`) changes anything.
pub fn is_mutating(call: &str) -> bool {
    let action = call.rsplit(':').next().unwrap_or(call);
    // REST protocols: `aps:GET /workspaces`.
    !["List", "Get", "Describe", "Head", "GET ", "HEAD "].iter().any(|p| action.starts_with(p))
}

struct State {
    upstream: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    calls: Arc<Mutex<Vec<String>>>,
    timed: Arc<Mutex<Vec<Timed>>>,
    requests: Arc<Mutex<Vec<Sent>>>,
    faults: Faults,
    injected: Arc<AtomicU64>,
    counter: AtomicU64,
    mutations: AtomicU64,
    /// Calls of `Faults::hang_on`'s action seen.
    hung_on: AtomicU64,
    ec2_errors: AtomicU64,
    conflicts: AtomicU64,
    /// DynamoDB writes hold it alone, reads together (see `answer`).
    dynamodb: tokio::sync::RwLock<()>,
    hung: Arc<Notify>,
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The body is kept for the request log, which tests read to see what aira sent.
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (call, service, json_protocol) = call_of(&parts, &body);
    let started = SystemTime::now();
    let Ok(resp) = answer(&state, &call, &service, json_protocol, parts, body.clone()).await;
    let (head, answer) = resp.into_parts();
    let Ok(answer) = answer.collect().await.map(|b| b.to_bytes());
    let sent = Sent {
        call,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: head.status.as_u16(),
        answer: String::from_utf8_lossy(&answer).into_owned(),
        started,
        answered: SystemTime::now(),
    };
    state.requests.lock().unwrap().push(sent);
    Ok(Response::from_parts(head, Full::new(answer)))
}

async fn answer(
    state: &Arc<State>,
    call: &str,
    service: &str,
    json_protocol: bool,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (state, call) = (state.clone(), call.to_string());
    let mutating = is_mutating(&call);
    state.calls.lock().unwrap().push(call.clone());
    let _answered = {
        let mut timed = state.timed.lock().unwrap();
        timed.push(Timed { call: call.clone(), started: SystemTime::now(), answered: None });
        Answered(state.timed.clone(), timed.len() - 1)
    };
    let hang_here = state.faults.hang_on.is_some_and(|action| call.ends_with(&format!(":{action}")))
        && state.hung_on.fetch_add(1, Ordering::SeqCst) == 0;
    if mutating || hang_here {
        let n = if mutating { state.mutations.fetch_add(1, Ordering::SeqCst) + 1 } else { 0 };
        if hang_here || state.faults.hang_after_mutations == Some(n) {
            // The call reaches AWS, but its answer never reaches the client: the worst moment
            // for a crash, since the resource exists and the client never learnt its id.
            let _ = forward(&state, &call, parts, body).await;
            state.hung.notify_one();
            let never: Infallible = std::future::pending().await;
            match never {}
        }
    }
    if let Some(refused) = state.faults.rewrite.refuse(&call, &body) {
        state.injected.fetch_add(1, Ordering::SeqCst);
        return Ok(refused);
    }
    if !state.faults.latency.is_zero() {
        tokio::time::sleep(state.faults.latency).await;
    }
    if let Some((action, hold)) = state.faults.slow {
        if call.ends_with(&format!(":{action}")) {
            tokio::time::sleep(hold).await;
        }
    }
    if let Some((action, code, times)) = state.faults.ec2_error {
        if call.ends_with(&format!(":{action}")) {
            let seen = state.ec2_errors.fetch_add(1, Ordering::SeqCst);
            if times == 0 || seen < times {
                state.injected.fetch_add(1, Ordering::SeqCst);
                return Ok(match (json_protocol, service) {
                    (true, _) => json_error(code),
                    // ELB's query protocol has its own error shape.
                    (false, "elasticloadbalancing") => crate::aws_rules::elb_error(code, "injected by the test proxy"),
                    (false, _) => ec2_error(code),
                });
            }
        }
    }
    if let Some(absent) = state.faults.endpoint_service_absent.filter(|_| call == "ec2:DescribeVpcEndpointServices") {
        let text = String::from_utf8_lossy(&body);
        let named = text
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, v)| k.starts_with("ServiceName.") && v.ends_with(&format!(".{absent}")));
        if let Some((_, name)) = named {
            state.injected.fetch_add(1, Ordering::SeqCst);
            let message = format!("The Vpc Endpoint Service '{name}' does not exist");
            return Ok(aws_rules::ec2_error("InvalidServiceName", &message));
        }
    }
    let conflicting = |n: u64| n % 2 == 0 && n / 2 < state.faults.transaction_conflicts;
    if call == "dynamodb:TransactWriteItems" && conflicting(state.conflicts.fetch_add(1, Ordering::SeqCst)) {
        state.injected.fetch_add(1, Ordering::SeqCst);
        return Ok(transaction_conflict(&body));
    }
    if let Some((action, table, code)) = state.faults.dynamodb_error {
        let names_table = std::str::from_utf8(&body).is_ok_and(|b| b.contains(&format!("\"TableName\":\"{table}\"")));
        if service == "dynamodb" && call.ends_with(&format!(":{action}")) && names_table {
            state.injected.fetch_add(1, Ordering::SeqCst);
            return Ok(dynamodb_error(code));
        }
    }
    // Deterministic share: every n-th call, so a test's fault count is reproducible.
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    if state.faults.throttle > 0.0 {
        let every = (1.0 / state.faults.throttle).round().max(1.0) as u64;
        if n % every == every - 1 {
            state.injected.fetch_add(1, Ordering::SeqCst);
            return Ok(throttled(json_protocol, n));
        }
    }
    if call == "application-autoscaling:DeregisterScalableTarget" {
        drop_scaling_policies(&state, &parts, &body).await;
    }
    // moto runs requests on threads and changes an item in place, one attribute after another:
    // a read during `UpdateItem` can see half of it (a status without its answer), and two
    // transactions at once can fail with an HTML 500. DynamoDB applies each write atomically
    // (cancelling a conflicting transaction, which `Faults::transaction_conflicts` shows); here
    // a write goes alone and reads go between writes.
    let _atomic = match dynamodb_access(&call) {
        Some(Access::Write) => Some(Guard::Write(state.dynamodb.write().await)),
        Some(Access::Read) => Some(Guard::Read(state.dynamodb.read().await)),
        None => None,
    };
    let answer = conform(&state, &call, parts, body.clone()).await;
    let answer = state.faults.rewrite.answer(&call, &body, answer).await;
    match state.faults.endpoint_service_without_zone {
        Some((service, zone)) if call == "ec2:DescribeVpcEndpointServices" => {
            let (mut parts, body) = answer.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            parts.headers.remove(hyper::header::CONTENT_LENGTH); // the body is shorter now
            let text = crate::endpoint_zones::drop_zone(&String::from_utf8_lossy(&body), service, zone);
            Ok(Response::from_parts(parts, Full::new(Bytes::from(text))))
        }
        _ => Ok(answer),
    }
}

enum Access {
    Read,
    Write,
}

#[allow(dead_code)] // held for its drop
enum Guard<'a> {
    Read(tokio::sync::RwLockReadGuard<'a, ()>),
    Write(tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Whether a call reads or writes DynamoDB items (table calls are neither).
fn dynamodb_access(call: &str) -> Option<Access> {
    match call.strip_prefix("dynamodb:")? {
        "GetItem" | "BatchGetItem" | "Query" | "Scan" | "TransactGetItems" => Some(Access::Read),
        "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems" => Some(Access::Write),
        _ => None,
    }
}

/// `service:Action` of a call (`sqs:CreateQueue`, `ec2:DescribeVpcs`), its service, and whether
/// it is of a JSON protocol (it has an `X-Amz-Target`).
fn call_of(parts: &hyper::http::request::Parts, body: &[u8]) -> (String, String, bool) {
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(String::from);
    let action = match &target {
        // JSON protocols: `AmazonSQS.CreateQueue`.
        Some(t) => t.rsplit('.').next().unwrap_or(t).to_string(),
        // Query protocols: `Action=CreateVpc&…` in the form body.
        None => form_action(body).unwrap_or_else(|| format!("{} {}", parts.method, parts.uri.path())),
    };
    // The service, from the signature's credential scope: `Credential=KEY/DATE/REGION/SERVICE/aws4_request`.
    let service = aws_rules::scope_part(&parts.headers, 3).unwrap_or_else(|| "?".into());
    (format!("{service}:{action}"), service, target.is_some())
}

/// Forwards a call to moto, unless an AWS rule refuses it, and amends moto's answer by the rules.
async fn conform(state: &State, call: &str, parts: hyper::http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let headers = parts.headers.clone();
    let seen = aws_rules::Call { call, headers: &headers, body: &body };
    let moto = aws_rules::Moto { upstream: &state.upstream, client: &state.client };
    if let Some(answer) = aws_rules::emulate(&moto, &seen).await {
        return answer;
    }
    if state.faults.moto_only {
        return forward(state, call, parts, body).await;
    }
    if let Some(refused) = aws_rules::refuse(&moto, &seen).await {
        return refused;
    }
    let (parts, answer) = forward(state, call, parts, body.clone()).await.into_parts();
    let answer = answer.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let amended = aws_rules::amend(&seen, parts.status.as_u16(), answer);
    let mut resp = Response::from_parts(parts, Full::new(amended));
    // The amended body may differ in length from moto's.
    resp.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    resp
}

async fn forward(state: &State, call: &str, parts: hyper::http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let uri = format!("{}{}", state.upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let json_protocol = parts.headers.contains_key("x-amz-target");
    let mut forward = Request::builder().method(parts.method).uri(uri);
    // The proxy's own read marker is never a client's to send.
    for (k, v) in parts.headers.iter().filter(|(k, _)| k.as_str() != aws_rules::HARNESS_READ) {
        forward = forward.header(k, v);
    }
    let forward = forward.body(Full::new(body)).unwrap();
    match state.client.request(forward).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            if parts.status == StatusCode::FORBIDDEN && json_protocol {
                if let Some(denied) = access_denied_as_json(call, &body) {
                    return denied;
                }
            }
            if parts.status == StatusCode::FORBIDDEN && !json_protocol && !call.starts_with("ec2:") {
                if let Some(denied) = refusal_as_query_error(&body) {
                    parts.headers.remove(hyper::header::CONTENT_LENGTH);
                    parts.headers.insert(hyper::header::CONTENT_TYPE, "text/xml".parse().unwrap());
                    return Response::from_parts(parts, Full::new(denied));
                }
            }
            let aws = as_aws(call, body.clone());
            if aws.len() != body.len() {
                parts.headers.remove(hyper::header::CONTENT_LENGTH);
            }
            Response::from_parts(parts, Full::new(aws))
        }
        Err(e) => {
            Response::builder().status(StatusCode::BAD_GATEWAY).body(Full::new(Bytes::from(e.to_string()))).unwrap()
        }
    }
}

/// An EC2 (query protocol) error answer.
fn ec2_error(code: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error></Errors><RequestID>aira-proxy</RequestID></Response>"
    );
    Response::builder().status(400).header("content-type", "text/xml").body(Full::new(Bytes::from(body))).unwrap()
}

/// A JSON-protocol error answer with an AWS query-compatible code
/// (`AWS.SimpleQueueService.QueueDeletedRecently`), as SQS sends it.
fn json_error(code: &str) -> Response<Full<Bytes>> {
    let short = code.rsplit('.').next().unwrap_or(code);
    let body = format!(r#"{{"__type":"com.amazonaws.sqs#{short}","message":"injected by the test proxy"}}"#);
    Response::builder()
        .status(400)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-query-error", format!("{code};Sender"))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A DynamoDB (JSON 1.0 protocol) error answer.
fn dynamodb_error(code: &str) -> Response<Full<Bytes>> {
    let body =
        format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"injected by the test proxy"}}"#);
    Response::builder()
        .status(400)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// DynamoDB's cancellation of a transaction that met another one: one reason per item of the
/// request, the first `TransactionConflict`, the others `None`.
fn transaction_conflict(request: &[u8]) -> Response<Full<Bytes>> {
    let items = serde_json::from_slice::<serde_json::Value>(request)
        .ok()
        .and_then(|v| v["TransactItems"].as_array().map(Vec::len))
        .unwrap_or(1)
        .max(1);
    let mut reasons =
        vec![serde_json::json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"})];
    reasons.resize(items, serde_json::json!({"Code": "None"}));
    let codes: Vec<&str> = reasons.iter().map(|r| r["Code"].as_str().unwrap_or("None")).collect();
    let body = serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
        "CancellationReasons": reasons,
    });
    Response::builder()
        .status(400)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn form_action(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|kv| kv.strip_prefix("Action=")).map(String::from)
}

/// The throttling answer of the protocol in use, or a bare 503 every third time.
fn throttled(json_protocol: bool, n: u64) -> Response<Full<Bytes>> {
    if n % 3 == 0 {
        return Response::builder().status(503).body(Full::new(Bytes::from_static(b"Service Unavailable"))).unwrap();
    }
    if json_protocol {
        Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-query-error", "ThrottlingException;Sender")
            .body(Full::new(Bytes::from_static(
                br#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#,
            )))
            .unwrap()
    } else {
        Response::builder()
            .status(503)
            .header("content-type", "text/xml")
            .body(Full::new(Bytes::from_static(
                b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>aira-proxy</RequestID></Response>",
            )))
            .unwrap()
    }
}

/// `DeregisterScalableTarget` deletes the target's scaling policies on AWS; moto keeps them, so
/// the proxy deletes them first, through moto's own calls.
async fn drop_scaling_policies(state: &State, parts: &hyper::http::request::Parts, body: &Bytes) {
    let Ok(target) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let key = |k: &str| target.get(k).cloned().unwrap_or_default();
    let (namespace, resource, dimension) = (key("ServiceNamespace"), key("ResourceId"), key("ScalableDimension"));
    let call = |action: &str, body: serde_json::Value| {
        let mut req = Request::builder().method("POST").uri(format!("{}/", state.upstream));
        let skipped = |k: &str| matches!(k, "x-amz-target" | "content-length") || k == aws_rules::HARNESS_READ;
        for (k, v) in parts.headers.iter().filter(|(k, _)| !skipped(k.as_str())) {
            req = req.header(k, v);
        }
        let req = req
            .header("x-amz-target", format!("AnyScaleFrontendService.{action}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        async move {
            let resp = state.client.request(req).await.ok()?;
            let bytes = resp.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).ok()
        }
    };
    let listed = call(
        "DescribeScalingPolicies",
        serde_json::json!({ "ServiceNamespace": namespace, "ResourceId": resource, "ScalableDimension": dimension }),
    )
    .await;
    let policies = listed.as_ref().and_then(|l| l["ScalingPolicies"].as_array()).cloned().unwrap_or_default();
    for p in policies {
        let body = serde_json::json!({
            "PolicyName": p["PolicyName"], "ServiceNamespace": namespace, "ResourceId": resource, "ScalableDimension": dimension,
        });
        call("DeleteScalingPolicy", body).await;
    }
}

/// moto refuses a call IAM does not allow (when it enforces IAM) with the query protocol's XML
/// `AccessDenied`, whatever the service's protocol; the JSON protocols (DynamoDB, SQS, ECS…)
/// answer `AccessDeniedException` in JSON, and SQS also names the query code in a header.
fn access_denied_as_json(call: &str, body: &[u8]) -> Option<Response<Full<Bytes>>> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.trim_start().starts_with('<') || !text.contains("<Code>AccessDenied</Code>") {
        return None;
    }
    let message = text.split("<Message>").nth(1)?.split("</Message>").next()?;
    let message = message.trim_start_matches("<![CDATA[").trim_end_matches("]]>");
    let json = serde_json::json!({"__type": "com.amazon.coral.service#AccessDeniedException", "message": message});
    let mut resp =
        Response::builder().status(StatusCode::FORBIDDEN).header("content-type", "application/x-amz-json-1.0");
    if call.starts_with("sqs:") {
        resp = resp.header("x-amzn-query-error", "AccessDenied;Sender");
    }
    Some(resp.body(Full::new(Bytes::from(json.to_string()))).unwrap())
}

/// moto refuses a query-protocol call (STS, ELB, IAM, SNS, CloudWatch) in EC2's error shape,
/// `<ErrorResponse><Errors><Error>`, which the SDKs of those services do not read (no code);
/// AWS answers `<ErrorResponse><Error><Type>Sender</Type><Code>…` (the query protocol's error
/// response, e.g. STS API Reference, "Common Errors").
fn refusal_as_query_error(body: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("<ErrorResponse>") || !text.contains("<Errors>") {
        return None;
    }
    let field = |name: &str| {
        let v = text.split(&format!("<{name}>")).nth(1)?.split(&format!("</{name}>")).next()?;
        let v = v.trim_start_matches("<![CDATA[").trim_end_matches("]]>");
        Some(v.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"))
    };
    let (code, message) = (field("Code")?, field("Message").unwrap_or_default());
    let request = field("RequestId").unwrap_or_default();
    Some(Bytes::from(format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request}</RequestId></ErrorResponse>"
    )))
}

/// moto's answer to `call` as AWS gives it, where they differ.
fn as_aws(call: &str, body: Bytes) -> Bytes {
    match call {
        "sns:ListSubscriptionsByTopic" | "sns:ListSubscriptions" => pending_confirmation(body),
        // Route 53 is a REST protocol: ListResourceRecordSets is `GET …/hostedzone/ID/rrset`.
        c if c.starts_with("route53:GET ") && c.ends_with("/rrset") => without_cdata(body),
        _ => body,
    }
}

/// Route 53 sends record values as XML text; moto wraps them in CDATA sections, which the Rust
/// SDK's XML reader returns as empty strings.
fn without_cdata(body: Bytes) -> Bytes {
    let Ok(text) = std::str::from_utf8(&body) else { return body };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<![CDATA[") {
        let Some(len) = rest[start..].find("]]>") else { break };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 9..start + len];
        out.push_str(&inner.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
        rest = &rest[start + len + 3..];
    }
    out.push_str(rest);
    Bytes::from(out)
}

/// SNS lists a subscription that awaits its confirmation with the ARN `PendingConfirmation`
/// (an e-mail address confirms by a link AWS mails it; nobody does here); moto lists a real ARN
/// at once.
fn pending_confirmation(body: Bytes) -> Bytes {
    let Ok(text) = std::str::from_utf8(&body) else { return body };
    let members: Vec<String> = text
        .split("<member>")
        .map(|m| {
            let email = m.contains("<Protocol>email</Protocol>") || m.contains("<Protocol>email-json</Protocol>");
            match (email, m.find("<SubscriptionArn>"), m.find("</SubscriptionArn>")) {
                (true, Some(a), Some(b)) if a < b => {
                    format!("{}<SubscriptionArn>PendingConfirmation{}", &m[..a], &m[b..])
                }
                _ => m.to_string(),
            }
        })
        .collect();
    Bytes::from(members.join("<member>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_subscriptions_are_listed_pending() {
        let moto = "<Subscriptions><member><TopicArn>arn:aws:sns:r:1:t</TopicArn><Protocol>email</Protocol>\
            <SubscriptionArn>arn:aws:sns:r:1:t:abc</SubscriptionArn><Endpoint>a@b.c</Endpoint></member>\
            <member><Protocol>sqs</Protocol><SubscriptionArn>arn:aws:sns:r:1:t:def</SubscriptionArn></member></Subscriptions>";
        let aws = pending_confirmation(Bytes::from(moto));
        let aws = std::str::from_utf8(&aws).unwrap();
        assert!(
            aws.contains("<Protocol>email</Protocol><SubscriptionArn>PendingConfirmation</SubscriptionArn>"),
            "{aws}"
        );
        assert!(aws.contains("<SubscriptionArn>arn:aws:sns:r:1:t:def</SubscriptionArn>"), "{aws}");
        assert!(!aws.contains(":abc<"), "{aws}");
    }

    #[test]
    fn record_values_are_plain_text() {
        let moto =
            "<ResourceRecord><Value><![CDATA[\"v=1 <a&b>\"]]></Value></ResourceRecord><Value><![CDATA[x.]]></Value>";
        let aws = without_cdata(Bytes::from(moto));
        assert_eq!(
            std::str::from_utf8(&aws).unwrap(),
            "<ResourceRecord><Value>\"v=1 &lt;a&amp;b&gt;\"</Value></ResourceRecord><Value>x.</Value>"
        );
    }

    #[test]
    fn a_query_protocol_refusal_takes_the_query_protocols_shape() {
        let moto = "<?xml version=\"1.0\"?>\n<ErrorResponse>\n<Errors>\n<Error>\n<Code>AccessDenied</Code>\n<Message><![CDATA[User: u is not authorized to perform: sts:AssumeRole]]></Message>\n</Error>\n</Errors>\n<RequestId>r1</RequestId>\n</ErrorResponse>";
        let aws = super::refusal_as_query_error(moto.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&aws).unwrap(),
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: u is not authorized to perform: sts:AssumeRole</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
        );
        // EC2's own shape, and anything else, pass as they are.
        assert!(super::refusal_as_query_error(b"<Response><Errors><Error><Code>X</Code></Error></Errors></Response>")
            .is_none());
    }
}
