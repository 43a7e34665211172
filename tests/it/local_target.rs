//! `aira up --local`: the stack's runtime as a process on this machine, answering chat
//! messages through its HTTP API; `status`, `down`, and data that survives a restart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::harness::{aira, Workdir};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn call(http: &Http, method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(url).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let resp = http.request(req.body(Full::new(body)).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pid_alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test]
async fn local_target_serves_answers_stops_and_keeps_data() {
    let work = Workdir::new();
    let file = work.write("stack.yaml", "stack: localtest\nservices:\n  api: { role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }\n");
    let file = file.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cwd = work.dir.path();

    let up = aira(cwd, &["up", "--local", file, "--listen", &listen, "--output", "json"]).await;
    up.assert_code(0);
    let state = up.json();
    let pid = state["pid"].as_u64().unwrap();
    let base = state["url"].as_str().unwrap().trim_end_matches('/').to_string();
    assert_eq!(base, format!("http://{listen}"));
    assert!(pid_alive(pid));

    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    // The web page is served.
    let (status, _) = call(&http, "GET", &format!("{base}/"), None, None).await;
    assert_eq!(status, 200);
    // Metrics and readiness on their own listener, which the state names; 404 on the app's.
    let metrics = state["metrics_url"].as_str().expect("metrics_url in the state").to_string();
    assert_ne!(metrics, format!("{base}/metrics"));
    assert_eq!(call(&http, "GET", &metrics, None, None).await.0, 200);
    assert_eq!(call(&http, "GET", &metrics.replace("/metrics", "/readyz"), None, None).await.0, 200);
    assert_eq!(call(&http, "GET", &format!("{base}/metrics"), None, None).await.0, 404);
    assert_eq!(call(&http, "GET", &format!("{base}/readyz"), None, None).await.0, 404);
    // A chat message is answered (the offline echo model repeats the prompt).
    let creds = json!({ "email": "local@example.com", "password": "a long enough password", "keep_history": true });
    assert_eq!(call(&http, "POST", &format!("{base}/v1/auth/signup"), None, Some(creds.clone())).await.0, 201);
    let (_, login) = call(&http, "POST", &format!("{base}/v1/auth/login"), None, Some(creds.clone())).await;
    let _ = login;
    let token = {
        let req = Request::builder()
            .method("POST")
            .uri(format!("{base}/v1/auth/tokens"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(creds.to_string())))
            .unwrap();
        let resp = http.request(req).await.unwrap();
        let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        v["token"].as_str().expect("a token").to_string()
    };
    let (status, conv) = call(&http, "POST", &format!("{base}/v1/conversations"), Some(&token), Some(json!({}))).await;
    assert_eq!(status, 201);
    let conv = conv["id"].as_str().unwrap().to_string();
    let (status, msg) = call(
        &http,
        "POST",
        &format!("{base}/v1/conversations/{conv}/messages"),
        Some(&token),
        Some(json!({ "content": "hello from the local target" })),
    )
    .await;
    assert_eq!(status, 202, "{msg}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let answered = loop {
        let (_, c) = call(&http, "GET", &format!("{base}/v1/conversations/{conv}"), Some(&token), None).await;
        let m = &c["messages"][0];
        if m["status"] == "answered" {
            break m["answer"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "not answered: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(answered.contains("hello from the local target"), "{answered}");

    // Status, then a second up is a no-op.
    let st = aira(cwd, &["status", "--local", file, "--output", "json"]).await;
    st.assert_code(0);
    assert_eq!(st.json()["running"], true);
    assert_eq!(st.json()["healthy"], true);
    let again = aira(cwd, &["up", "--local", file, "--listen", &listen, "--output", "json"]).await;
    again.assert_code(0);
    assert_eq!(again.json()["pid"].as_u64(), Some(pid));

    // Down stops every process it started; the data stays.
    aira(cwd, &["down", "--local", file]).await.assert_code(0);
    assert!(!pid_alive(pid), "pid {pid} still runs after down");
    assert!(std::net::TcpStream::connect(&listen).is_err(), "nothing listens any more");
    assert_eq!(aira(cwd, &["status", "--local", file, "--output", "json"]).await.json()["running"], false);

    let up2 = aira(cwd, &["up", "--local", file, "--listen", &listen, "--output", "json"]).await;
    up2.assert_code(0);
    let (status, c) = call(&http, "GET", &format!("{base}/v1/conversations/{conv}"), Some(&token), None).await;
    assert_eq!(status, 200, "the token and the conversation survived down/up: {c}");
    assert_eq!(c["messages"][0]["answer"].as_str(), Some(answered.as_str()));

    // Down --purge removes the data too.
    aira(cwd, &["down", "--local", "--purge", file]).await.assert_code(0);
    assert!(!pid_alive(up2.json()["pid"].as_u64().unwrap()));
    assert!(!cwd.join(".aira/localtest").exists());
}

/// The stack's bounds on model spend reach `aira-runtime serve` as its environment, and the
/// runtime reports the daily bound it enforces (whatever the model: here Bedrock, which the local
/// target replaces by the echo model, which counts tokens too).
#[tokio::test]
async fn local_target_runs_with_the_spend_bounds_of_the_stack_file() {
    let work = Workdir::new();
    let file = work.write(
        "stack.yaml",
        "stack: localspend\nservices:\n  api: { role: api, cpu: 256, memory: 512, port: 8080, health: /healthz, public: true }\n\
         llm:\n  provider: bedrock\n  model: amazon.nova-lite-v1:0\n  max_tokens: 512\n  daily_tokens: 123456\n  \
         user_daily_tokens: 1000\n  user_in_flight: 2\n",
    );
    let file = file.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cwd = work.dir.path();

    let up = aira(cwd, &["up", "--local", file, "--listen", &listen, "--output", "json"]).await;
    up.assert_code(0);
    let state = up.json();
    let pid = state["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.starts_with("AIRA_"))
        .collect();
    for expected in
        ["AIRA_LLM_MAX_TOKENS=512", "AIRA_DAILY_TOKENS=123456", "AIRA_USER_DAILY_TOKENS=1000", "AIRA_USER_IN_FLIGHT=2"]
    {
        assert!(env.iter().any(|v| v == expected), "{expected} not in the runtime's environment: {env:?}");
    }
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let metrics = state["metrics_url"].as_str().unwrap();
    let resp = http.request(Request::get(metrics).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.lines().any(|l| l == "aira_llm_daily_tokens_limit 123456"), "the bound in /metrics:\n{text}");

    aira(cwd, &["down", "--local", "--purge", file]).await.assert_code(0);
    assert!(!pid_alive(pid));
}
