//! The metrics a running `serve` pushes with Prometheus remote write: into a real Prometheus
//! (Debian's `prometheus`, with its remote-write receiver), to receivers that are down or never
//! answer (requests keep their latency, failures are counted), and SigV4-signed to a capture
//! server whose requests are decoded here by hand (not with the runtime's own messages).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use crate::common::*;
use crate::sigv4;

/// Labels `AIRA_TASK_ID`/`AIRA_STACK` give, and those `serve` adds itself.
const LABELS: &str = r#"service="serve",job="aira-api",task="some-task",instance="some-task",stack="some-stack""#;

/// Debian's Prometheus on a free loopback port, with the remote-write receiver and no scrape
/// job, in a temporary folder; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// `None` (the caller skips) when the binary is missing and `AIRA_ALLOW_SKIP=1`; otherwise
    /// that fails.
    async fn start() -> Option<Prometheus> {
        let exe = std::env::var_os("AIRA_PROMETHEUS").map(PathBuf::from).unwrap_or("/usr/bin/prometheus".into());
        if !exe.is_file() {
            let why = format!("prometheus not found at {} (scripts/test installs Debian's)", exe.display());
            assert!(std::env::var("AIRA_ALLOW_SKIP").as_deref() == Ok("1"), "{why} (AIRA_ALLOW_SKIP=1 skips)");
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&exe)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--web.enable-remote-write-receiver", "--log.level=warn"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let p = Prometheus { child, base: format!("http://127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(format!("{}/-/ready", p.base)).await.is_ok_and(|r| r.status() == 200) {
                return Some(p);
            }
            assert!(Instant::now() < deadline, "prometheus not ready:\n{}", p.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector of a PromQL query: (labels, value) per series.
    async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let url = format!("{}/api/v1/query", self.base);
        let r: Value =
            reqwest::Client::new().get(url).query(&[("query", promql)]).send().await.unwrap().json().await.unwrap();
        assert_eq!(r["status"], "success", "{promql}: {r}");
        let result = r["data"]["result"].as_array().cloned().unwrap_or_default();
        result
            .into_iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` pushing every second to a real Prometheus: after one answered message, PromQL
/// finds the request, message and worker series under the labels of the process, and the
/// latency histogram's buckets work with `histogram_quantile` as scraped ones do.
#[tokio::test]
async fn pushed_metrics_are_queryable_in_a_real_prometheus() {
    let Some(prometheus) = Prometheus::start().await else { return };
    let url = prometheus.write_url();
    let serve = Serve::start(&[
        ("AIRA_REMOTE_WRITE_URL", &url),
        ("AIRA_REMOTE_WRITE_INTERVAL_SECS", "1"),
        ("AIRA_TASK_ID", "some-task"),
        ("AIRA_STACK", "some-stack"),
    ])
    .await;
    let http = reqwest::Client::new();
    let (token, conv) = sign_up_over_http(&http, &serve.base, "pushed@example.com").await;
    let answered = answered_over_http(&http, &serve.base, &token, &conv, "pushed, then queried").await;
    assert!(answered["answer"].as_str().unwrap().contains("pushed, then queried"));

    let queries = [
        format!("sum(aira_http_requests_total{{{LABELS}}})"),
        format!("aira_messages_accepted_total{{{LABELS}}}"),
        format!("aira_worker_messages_total{{{LABELS},outcome=\"answered\"}}"),
        format!(
            "histogram_quantile(0.99, sum by (le) (rate(aira_http_request_duration_seconds_bucket{{{LABELS}}}[1m])))"
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let results = loop {
        // A request between two pushes, so that the histogram's rate is not zero.
        let r = http.get(format!("{}/v1/conversations", serve.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mut results = Vec::new();
        for q in &queries {
            results.push(prometheus.query(q).await);
        }
        let one = |i: usize| (results[i].len() == 1).then(|| results[i][0].1);
        let found = one(0).is_some_and(|v| v >= 3.0)
            && one(1).is_some_and(|v| v >= 1.0)
            && one(2).is_some_and(|v| v >= 1.0)
            && one(3).is_some_and(|v| v.is_finite() && v > 0.0);
        if found {
            break results;
        }
        assert!(
            Instant::now() < deadline,
            "not in prometheus after 20 s:\n{:#?}\nserve:\n{}\nprometheus:\n{}",
            queries.iter().zip(&results).collect::<Vec<_>>(),
            serve.log(),
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Every label the process adds is there, and the metric's own.
    let series = prometheus.query(&format!("aira_worker_messages_total{{{LABELS}}}")).await;
    let answered = series.iter().find(|(m, _)| m["outcome"] == "answered").expect("the answered series");
    let expected = json!({"__name__": "aira_worker_messages_total", "outcome": "answered", "service": "serve",
        "job": "aira-api", "task": "some-task", "instance": "some-task", "stack": "some-stack"});
    assert_eq!(answered.0, expected);
    eprintln!("p99 of the pushed request latency: {} s", results[3][0].1);
    assert!(serve.metric(r#"aira_remote_write_requests_total{outcome="ok"}"#).await >= 2.0);
    assert_eq!(serve.metric(r#"aira_remote_write_requests_total{outcome="error"}"#).await, 0.0);
    assert!(serve.metric("aira_remote_write_samples_total").await > 50.0);
}

/// A loopback listener that accepts connections and never reads or answers.
struct BlackHole {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl BlackHole {
    async fn start() -> BlackHole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        BlackHole { addr, accepted }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Receivers down: a closed port (refused at once) and a black hole (every push waits for its
/// 1 s timeout). 50 sequential requests to each `serve`, interleaved with the same requests to
/// a `serve` without remote write, keep their latency: a request that waited for a push would
/// take a good part of a second. The failures are counted and rise; each is logged once (the
/// first of the minute); SIGTERM still exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_are_down_or_never_answer_slow_no_request() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hole = BlackHole::start().await;
    let push = |url: String| async move {
        Serve::start(&[("AIRA_REMOTE_WRITE_URL", &url), ("AIRA_REMOTE_WRITE_INTERVAL_SECS", "1")]).await
    };
    let baseline = Serve::start(&[]).await;
    let refused = push(format!("http://127.0.0.1:{closed}/api/v1/write")).await;
    let mut held = push(format!("http://{}/api/v1/write", hole.addr)).await;
    let http = reqwest::Client::new();
    let mut users = Vec::new();
    for (i, s) in [&baseline, &refused, &held].into_iter().enumerate() {
        users.push(sign_up_over_http(&http, &s.base, &format!("down-{i}@example.com")).await);
    }
    // A first failure of each, and the black hole holding the next push.
    let errors = r#"aira_remote_write_requests_total{outcome="error"}"#;
    wait_until("a failure of each and a held push", Duration::from_secs(10), || async {
        refused.metric(errors).await >= 1.0
            && held.metric(errors).await >= 1.0
            && hole.accepted.load(Ordering::SeqCst) >= 2
    })
    .await;
    let (refused_before, held_before) = (refused.metric(errors).await, held.metric(errors).await);

    let mut took: [Vec<Duration>; 3] = Default::default();
    for _ in 0..50 {
        for (i, s) in [&baseline, &refused, &held].into_iter().enumerate() {
            let start = Instant::now();
            let r = http.get(format!("{}/v1/conversations", s.base)).bearer_auth(&users[i].0).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
            took[i].push(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let [base, refused_took, held_took] = took;
    let (base_median, base_max) = (median(base.clone()), *base.iter().max().unwrap());
    for (name, t) in [("refused", refused_took), ("black hole", held_took)] {
        let (m, max) = (median(t.clone()), *t.iter().max().unwrap());
        eprintln!(
            "{name}: median {m:?}, slowest {max:?}; without remote write: median {base_median:?}, slowest {base_max:?}"
        );
        assert!(max < Duration::from_millis(500), "{name}: a request took {max:?}");
        assert!(m <= base_median * 3 + Duration::from_millis(10), "{name}: median {m:?} against {base_median:?}");
    }

    // Counted, and still rising.
    let (refused_after, held_after) = (refused.metric(errors).await, held.metric(errors).await);
    assert!(refused_after > refused_before, "{refused_before} then {refused_after}");
    assert!(held_after > held_before, "{held_before} then {held_after}");
    for s in [&refused, &held] {
        assert_eq!(s.metric(r#"aira_remote_write_requests_total{outcome="ok"}"#).await, 0.0);
        assert_eq!(s.metric("aira_remote_write_samples_total").await, 0.0);
        // Several failures within the minute, one warning.
        let log = s.log();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("remote write failed")).collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(warnings[0].contains("\"WARN\""), "{}", warnings[0]);
    }
    let refused_log = refused.log();
    assert!(refused_log.contains("Connection refused") || refused_log.contains("connection refused"), "{refused_log}");

    // Shutdown with a push held: that push is dropped and the last one is bounded (1 s here).
    let exit = held.terminate(Duration::from_secs(3)).await;
    eprintln!("exit after SIGTERM with a push held: {exit:?}");
}

/// What the capture server received.
#[derive(Clone)]
struct Captured {
    headers: HeaderMap,
    body: Bytes,
}

/// A remote-write receiver that records every request, refuses the first with 400 (as
/// Prometheus refuses out-of-bounds samples) and accepts the others with 204; it also stands in
/// for the ECS task metadata endpoint (`/ecs/task`).
async fn capture_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<Captured>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/write",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move {
                    let mut seen = s.lock().unwrap();
                    seen.push(Captured { headers, body });
                    if seen.len() == 1 {
                        (StatusCode::BAD_REQUEST, "out of bounds: the first push is refused\n").into_response()
                    } else {
                        StatusCode::NO_CONTENT.into_response()
                    }
                }
            }),
        )
        .route(
            "/ecs/task",
            axum::routing::get(|| async {
                axum::Json(
                    json!({"Cluster": "aira", "TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/aira/0f1e2d3c4b5a"}),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

/// With AWS credentials in the environment, every push is signed for `aps` in the region of
/// the AWS configuration (the signature checked here from scratch), carries the protocol's
/// headers, and its body is a snappy block holding series whose labels are sorted and carry
/// the process's labels (the ECS task id over `AIRA_TASK_ID`). A refusal (400) is counted and
/// logged with its status and the start of its body.
#[tokio::test]
async fn pushes_are_signed_with_sigv4_and_carry_sorted_labels() {
    let (addr, seen) = capture_server().await;
    let url = format!("http://{addr}/api/v1/write");
    let metadata = format!("http://{addr}/ecs");
    let serve = Serve::start(&[
        ("AIRA_REMOTE_WRITE_URL", &url),
        ("AIRA_REMOTE_WRITE_INTERVAL_SECS", "1"),
        ("AIRA_TASK_ID", "not-used-on-ecs"),
        ("AIRA_STACK", "signed-stack"),
        ("ECS_CONTAINER_METADATA_URI_V4", &metadata),
        ("AWS_ACCESS_KEY_ID", "AKIDREMOTEWRITE"),
        ("AWS_SECRET_ACCESS_KEY", "remote-write-secret"),
        ("AWS_REGION", "us-east-1"),
    ])
    .await;
    let http = reqwest::Client::new();
    sign_up_over_http(&http, &serve.base, "signed@example.com").await;
    let pushed_before = seen.lock().unwrap().len();
    wait_until("two pushes after the sign-up", Duration::from_secs(15), || async {
        seen.lock().unwrap().len() >= pushed_before + 2
    })
    .await;
    let last = seen.lock().unwrap().last().cloned().unwrap();

    let h = |name: &str| last.headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(h("content-encoding"), "snappy");
    assert_eq!(h("content-type"), "application/x-protobuf");
    assert_eq!(h("x-prometheus-remote-write-version"), "0.1.0");
    assert_eq!(h("user-agent"), format!("aira-runtime/{}", env!("CARGO_PKG_VERSION")));
    let amz_date = h("x-amz-date");
    let scope = format!("{}/us-east-1/aps/aws4_request", &amz_date[..8]);
    let authorization = h("authorization");
    assert!(
        authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential=AKIDREMOTEWRITE/{scope}, SignedHeaders=")),
        "{authorization}"
    );
    let signed = authorization.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
    for needed in ["content-encoding", "content-type", "x-prometheus-remote-write-version"] {
        assert!(signed.split(';').any(|s| s == needed), "{needed} is not signed: {signed}");
    }
    let arrived = sigv4::Arrived {
        method: axum::http::Method::POST,
        path: "/api/v1/write".into(),
        headers: last.headers.clone(),
        body: last.body.clone(),
    };
    sigv4::verify(&arrived, &scope, "remote-write-secret").unwrap();
    // The check fails for a body changed after signing, and for another secret.
    let tampered = sigv4::Arrived { body: Bytes::from([&last.body[..], b"x"].concat()), ..arrived.clone() };
    assert_eq!(sigv4::verify(&tampered, &scope, "remote-write-secret"), Err("the signature does not verify".into()));
    assert!(sigv4::verify(&arrived, &scope, "another-secret").is_err());

    let raw = snap::raw::Decoder::new().decompress_vec(&last.body).expect("a snappy block");
    let series = decode_write_request(&raw);
    assert!(series.len() > 50, "{} series", series.len());
    let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
    for (labels, samples) in &series {
        let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "labels not sorted: {names:?}");
        let get = |n: &str| labels.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert!(get("__name__").is_some_and(|n| n.starts_with("aira_")), "{labels:?}");
        for (k, v) in [
            ("job", "aira-api"),
            ("service", "serve"),
            ("task", "0f1e2d3c4b5a"),
            ("instance", "0f1e2d3c4b5a"),
            ("stack", "signed-stack"),
        ] {
            assert_eq!(get(k), Some(v), "{k} of {labels:?}");
        }
        assert_eq!(samples.len(), 1);
        assert!((samples[0].1 - now_ms).abs() < 60_000, "timestamp {} is not now", samples[0].1);
    }
    let value = |name: &str, with: &[(&str, &str)]| {
        series
            .iter()
            .find(|(l, _)| {
                l.iter().any(|(k, v)| k == "__name__" && v == name)
                    && with.iter().all(|(wk, wv)| l.iter().any(|(k, v)| k == wk && v == wv))
            })
            .map(|(_, s)| s[0].0)
    };
    let signup = [("route", "/v1/auth/signup"), ("method", "POST"), ("status", "201")];
    assert_eq!(value("aira_http_requests_total", &signup), Some(1.0));
    let route = [("route", "/v1/auth/signup"), ("method", "POST")];
    assert_eq!(value("aira_http_request_duration_seconds_count", &route), Some(1.0));
    assert!(value("aira_http_request_duration_seconds_sum", &route).is_some());
    assert_eq!(value("aira_http_request_duration_seconds_bucket", &[route[0], route[1], ("le", "+Inf")]), Some(1.0));
    assert!(value("aira_http_request_duration_seconds_bucket", &[route[0], route[1], ("le", "0.001")]).is_some());
    // The refusal of the first push: counted, and logged with its status and body.
    assert_eq!(value("aira_remote_write_requests_total", &[("outcome", "error")]), Some(1.0));

    assert!(serve.metric(r#"aira_remote_write_requests_total{outcome="ok"}"#).await >= 1.0);
    let log = serve.log();
    assert!(log.contains("HTTP 400 Bad Request: out of bounds: the first push is refused"), "{log}");
}

type Series = (Vec<(String, String)>, Vec<(f64, i64)>);

/// `WriteRequest{1: TimeSeries{1: Label{1: name, 2: value}, 2: Sample{1: double, 2: int64}}}`
/// read with a minimal protobuf walk.
fn decode_write_request(b: &[u8]) -> Vec<Series> {
    let mut out = Vec::new();
    for (field, v) in fields(b) {
        assert_eq!(field, 1, "WriteRequest has only timeseries here");
        let Field::Bytes(ts) = v else { panic!("timeseries is a message") };
        let (mut labels, mut samples) = (Vec::new(), Vec::new());
        for (field, v) in fields(ts) {
            match (field, v) {
                (1, Field::Bytes(label)) => {
                    let mut pair = (String::new(), String::new());
                    for (f, v) in fields(label) {
                        let Field::Bytes(s) = v else { panic!("label fields are strings") };
                        let s = String::from_utf8(s.to_vec()).unwrap();
                        if f == 1 {
                            pair.0 = s
                        } else {
                            pair.1 = s
                        }
                    }
                    labels.push(pair);
                }
                (2, Field::Bytes(sample)) => {
                    let (mut value, mut timestamp) = (0.0, 0);
                    for (f, v) in fields(sample) {
                        match (f, v) {
                            (1, Field::Fixed64(bits)) => value = f64::from_bits(bits),
                            (2, Field::Varint(t)) => timestamp = t as i64,
                            other => panic!("unexpected sample field {other:?}"),
                        }
                    }
                    samples.push((value, timestamp));
                }
                other => panic!("unexpected timeseries field {other:?}"),
            }
        }
        out.push((labels, samples));
    }
    out
}

#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

fn fields(mut b: &[u8]) -> Vec<(u64, Field<'_>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long")
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut b)),
            1 => {
                let (bytes, rest) = b.split_at(8);
                b = rest;
                Field::Fixed64(u64::from_le_bytes(bytes.try_into().unwrap()))
            }
            2 => {
                let len = varint(&mut b) as usize;
                let (bytes, rest) = b.split_at(len);
                b = rest;
                Field::Bytes(bytes)
            }
            wire => panic!("unexpected wire type {wire}"),
        };
        out.push((key >> 3, field));
    }
    out
}
