//! A recording, fault-injecting HTTP proxy in front of the moto server.
//!
//! moto answers every call at once and never fails on its own; AWS is slower and throttles.
//! This proxy records the action of every call (to prove that a converged stack makes no
//! mutating call), adds a fixed latency per call, and answers a share of calls with the
//! throttling errors of each AWS protocol or a bare HTTP 503.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Faults {
    /// Added to every call.
    pub latency: Duration,
    /// Share of calls (0.0–1.0) answered with a throttling error instead of being forwarded.
    pub throttle: f64,
    /// The n-th mutating call (from 1) is forwarded but never answered; `Proxy::hung` fires.
    pub hang_after_mutations: Option<u64>,
    /// Calls of this action (`DeleteSubnet`) answered with an EC2 error `(code, times)`:
    /// the first `times` calls, or every call when `times` is 0.
    pub ec2_error: Option<(&'static str, &'static str, u64)>,
    /// Answers rewritten as AWS gives them where moto cannot (failed deployments, certificates
    /// not issued, roles not yet assumable); the test keeps a clone to switch them on.
    pub rewrite: crate::rewrite::Rewrites,
}

pub struct Proxy {
    pub url: String,
    calls: Arc<Mutex<Vec<String>>>,
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
        let injected = Arc::new(AtomicU64::new(0));
        let hung = Arc::new(Notify::new());
        let state = Arc::new(State {
            hung: hung.clone(),
            mutations: AtomicU64::new(0),
            ec2_errors: AtomicU64::new(0),
            upstream: upstream.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            calls: calls.clone(),
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
        Proxy { url: format!("http://{addr}"), calls, faults_injected: injected, hung }
    }

    /// The calls so far as `service:Action` (`sqs:CreateQueue`, `ec2:DescribeVpcs`), and forgets them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
}

/// Whether a call (`service:Action`) changes anything.
pub fn is_mutating(call: &str) -> bool {
    let action = call.rsplit(':').next().unwrap_or(call);
    !["List", "Get", "Describe", "Head"].iter().any(|p| action.starts_with(p))
}

struct State {
    upstream: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    calls: Arc<Mutex<Vec<String>>>,
    faults: Faults,
    injected: Arc<AtomicU64>,
    counter: AtomicU64,
    mutations: AtomicU64,
    ec2_errors: AtomicU64,
    hung: Arc<Notify>,
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(String::from);
    let action = match &target {
        // JSON protocols: `AmazonSQS.CreateQueue`.
        Some(t) => t.rsplit('.').next().unwrap_or(t).to_string(),
        // Query protocols: `Action=CreateVpc&…` in the form body.
        None => form_action(&body).unwrap_or_else(|| format!("{} {}", parts.method, parts.uri.path())),
    };
    // The service, from the signature's credential scope: `Credential=KEY/DATE/REGION/SERVICE/aws4_request`.
    let service = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("?")
        .to_string();
    let call = format!("{service}:{action}");
    let mutating = is_mutating(&call);
    state.calls.lock().unwrap().push(call.clone());
    if mutating {
        let n = state.mutations.fetch_add(1, Ordering::SeqCst) + 1;
        if state.faults.hang_after_mutations == Some(n) {
            // The call reaches AWS, but its answer never reaches the client: the worst moment
            // for a crash, since the resource exists and the client never learnt its id.
            let _ = forward(&state, parts, body).await;
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
    if let Some((action, code, times)) = state.faults.ec2_error {
        if call.ends_with(&format!(":{action}")) {
            let seen = state.ec2_errors.fetch_add(1, Ordering::SeqCst);
            if times == 0 || seen < times {
                state.injected.fetch_add(1, Ordering::SeqCst);
                return Ok(ec2_error(code));
            }
        }
    }
    // Deterministic share: every n-th call, so a test's fault count is reproducible.
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    if state.faults.throttle > 0.0 {
        let every = (1.0 / state.faults.throttle).round().max(1.0) as u64;
        if n % every == every - 1 {
            state.injected.fetch_add(1, Ordering::SeqCst);
            return Ok(throttled(target.is_some(), n));
        }
    }
    let answer = forward(&state, parts, body.clone()).await;
    Ok(state.faults.rewrite.answer(&call, &body, answer).await)
}

async fn forward(state: &State, parts: hyper::http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let uri = format!("{}{}", state.upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut forward = Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        forward = forward.header(k, v);
    }
    let forward = forward.body(Full::new(body)).unwrap();
    match state.client.request(forward).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::from_parts(parts, Full::new(body))
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
