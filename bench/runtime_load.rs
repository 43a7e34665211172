//! Load generator for the POST path of aira-runtime (its `load` bench), run with
//! `bash bench/runtime-load.sh` (not a timed test; figures in docs/performance.md).
//!
//! Measures, with the same client in the same run:
//! 1. a bare axum handler (parse JSON, answer 202) in a child process: the ceiling;
//! 2. `aira-runtime serve` (embedded SQLite backends, echo model, no backlog bound) in a child process:
//!    accepted messages/s and p50/p99 of `POST /v1/conversations/{id}/messages` at
//!    `BENCH_CLIENTS` concurrent clients (default 2000), its resident memory, and worker
//!    throughput (answered/s during the load and while draining the backlog);
//! 3. end-to-end latency (POST to answered, polling `GET /v1/messages/{id}`) at light load;
//! 4. the same flood against `serve` with its default backlog bound: accepted, refused (503
//!    `busy`) and answered per second, and the backlog's peak.
//!
//! Environment: BENCH_CLIENTS (2000), BENCH_SECS (15), BENCH_WARMUP_SECS (3), BENCH_USERS (50),
//! BENCH_E2E_CLIENTS (20), BENCH_RUNTIME_BIN (the runtime to serve; default: this build's).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bare-server") {
        bare_server();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

/// The ceiling: the same route shape, JSON in, 202 JSON out, nothing else.
fn bare_server() {
    use axum::routing::post;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let app = axum::Router::new().route(
            "/v1/conversations/{id}/messages",
            post(|axum::Json(_body): axum::Json<Value>| async {
                let id = uuid::Uuid::now_v7().to_string();
                (
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(
                        json!({"id": id, "status": "queued", "events_url": format!("/v1/messages/{id}/events")}),
                    ),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Stats {
    accepted: u64,
    /// 503 `busy`: refused at the backlog's bound.
    refused: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.secs
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// `clients` tasks POST in a loop for warmup + measured seconds; only the measured window counts.
async fn load(
    http: &reqwest::Client,
    base: &str,
    targets: &[(String, String)],
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> Stats {
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + measure;
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let http = http.clone();
        let (token, conv) = targets[i % targets.len()].clone();
        let url = format!("{base}/v1/conversations/{conv}/messages");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut ok, mut busy, mut err) = (0u64, 0u64, 0u64);
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                n += 1;
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"content": format!("bench {i}-{n}")}))
                    .send()
                    .await;
                let status = match r {
                    Ok(resp) => {
                        let s = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                let good = status == 202;
                let done = Instant::now();
                if t0 >= measure_from && done <= until {
                    if good {
                        ok += 1;
                        lat.push(done.duration_since(t0).as_micros() as u32);
                    } else if status == 503 {
                        busy += 1;
                    } else {
                        err += 1;
                    }
                }
                // A flood: a refused client comes back after 10 ms, not after its Retry-After.
                if !good {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (lat, ok, busy, err)
        }));
    }
    let mut all = Vec::new();
    let (mut ok, mut refused, mut err) = (0, 0, 0);
    for t in tasks {
        let (l, o, b, e) = t.await.unwrap();
        all.extend(l);
        ok += o;
        refused += b;
        err += e;
    }
    all.sort_unstable();
    Stats {
        accepted: ok,
        refused,
        errors: err,
        secs: measure.as_secs_f64(),
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
    }
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not become healthy");
}

/// A series of the operations listener's `/metrics`.
async fn metric(http: &reqwest::Client, ops: &str, series: &str) -> f64 {
    let text = http.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// `aira-runtime serve` on `data` with the bench's settings and `env`.
fn start_serve(runtime: &str, data: &std::path::Path, port: u16, ops_port: u16, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(runtime);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data", data.to_str().unwrap()])
        .args(["--metrics-listen", &format!("127.0.0.1:{ops_port}")])
        .env("AIRA_LOG", "warn")
        .env("AIRA_RATE_PER_MINUTE", "1000000000")
        .env("AIRA_RATE_BURST", "1000000000")
        // Every bench user signs up from this one address.
        .env("AIRA_AUTH_ADDRESS_RATE_BURST", "1000000000")
        .env_remove("AIRA_LLM_BASE_URL")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

/// Users with a token and a conversation each.
async fn users(http: &reqwest::Client, base: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let creds =
            json!({"email": format!("bench{i}@example.com"), "password": "bench password", "keep_history": true});
        let r = http.post(format!("{base}/v1/auth/signup")).json(&creds).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let t: Value =
            http.post(format!("{base}/v1/auth/tokens")).json(&creds).send().await.unwrap().json().await.unwrap();
        let token = t["token"].as_str().unwrap().to_string();
        let c: Value = http
            .post(format!("{base}/v1/conversations"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.push((token, c["id"].as_str().unwrap().to_string()));
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn run() {
    let clients = env_or("BENCH_CLIENTS", 2000) as usize;
    let secs = Duration::from_secs(env_or("BENCH_SECS", 15));
    let warmup = Duration::from_secs(env_or("BENCH_WARMUP_SECS", 3));
    let n_users = env_or("BENCH_USERS", 50) as usize;
    let e2e_clients = env_or("BENCH_E2E_CLIENTS", 20) as usize;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients + 16)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# aira-runtime POST-path benchmark");
    println!(
        "clients={clients} measured={}s warmup={}s users={n_users} cores={} loadavg_at_start={}",
        secs.as_secs(),
        warmup.as_secs(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        loadavg.trim()
    );

    // 1. Bare axum handler.
    let mut bare =
        Command::new(std::env::current_exe().unwrap()).arg("--bare-server").stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(bare.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let bare = Proc(bare);
    let bare_base = format!("http://{}", line.trim());
    let bare_targets = vec![("x".to_string(), "c".to_string())];
    let b = load(&http, &bare_base, &bare_targets, clients, warmup, secs).await;
    let bare_rss = rss_kib(bare.0.id(), "VmHWM:");
    drop(bare);
    println!(
        "bare axum: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, errors {}, peak RSS {} MiB",
        b.rate(),
        b.p50_ms,
        b.p99_ms,
        b.max_ms,
        b.errors,
        bare_rss / 1024
    );

    // 2. aira-runtime serve on the embedded backends.
    let data = std::env::temp_dir().join(format!("aira-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (port, ops_port) = (free_port(), free_port());
    // BENCH_RUNTIME_BIN: another build of the runtime (e.g. the image's, `--profile image`).
    let runtime = std::env::var("BENCH_RUNTIME_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_aira-runtime").into());
    println!("runtime: {runtime}");
    // The accept path's capacity: no backlog bound (with one, the API accepts at the worker's pace).
    let serve = start_serve(&runtime, &data, port, ops_port, &[("AIRA_MAX_BACKLOG", "0")]);
    let pid = serve.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let ops = format!("http://127.0.0.1:{ops_port}");
    wait_healthy(&http, &base).await;
    let targets = users(&http, &base, n_users).await;
    let idle_rss = rss_kib(pid, "VmRSS:");

    let answered_before = metric(&http, &ops, "aira_worker_messages_total{outcome=\"answered\"}").await;
    let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = sampler_stop.clone();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid, "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak
    });
    let load_started = Instant::now();
    let s = load(&http, &base, &targets, clients, warmup, secs).await;
    let load_secs = load_started.elapsed().as_secs_f64();
    let answered_during =
        metric(&http, &ops, "aira_worker_messages_total{outcome=\"answered\"}").await - answered_before;
    let accepted_total = metric(&http, &ops, "aira_messages_accepted_total").await;
    println!(
        "aira serve: {:.0} accepted/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, errors {}",
        s.rate(),
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.errors
    );
    println!("ratio aira/bare accepted/s: {:.2}; p99 ratio {:.1}", s.rate() / b.rate(), s.p99_ms / b.p99_ms);

    // Worker: answered during the load, then drain the backlog.
    let backlog = accepted_total - answered_during - answered_before;
    let drain_started = Instant::now();
    let answered = loop {
        let answered = metric(&http, &ops, "aira_worker_messages_total{outcome=\"answered\"}").await;
        if answered >= accepted_total || drain_started.elapsed() > Duration::from_secs(600) {
            break answered;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drain_secs = drain_started.elapsed().as_secs_f64();
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_rss = sampler.await.unwrap();
    let during = format!(
        "worker: {:.0} answered/s during the load ({answered_during} in {load_secs:.1} s, sharing the process)",
        answered_during / load_secs
    );
    if answered < accepted_total {
        // A rate over a drain that did not end would be a rate of nothing in particular.
        println!(
            "{during}, backlog NOT drained: {} of {backlog} still unanswered when the drain timed out after {drain_secs:.0} s",
            accepted_total - answered
        );
    } else {
        println!(
            "{during}, backlog {backlog} drained in {drain_secs:.1} s = {:.0} answered/s",
            backlog / drain_secs.max(0.001)
        );
    }
    println!(
        "aira serve RSS: idle {} MiB, peak under load {} MiB (VmHWM {} MiB)",
        idle_rss / 1024,
        peak_rss / 1024,
        rss_kib(pid, "VmHWM:") / 1024
    );

    // 3. End to end at light load: POST then poll until answered.
    let e2e_until = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for i in 0..e2e_clients {
        let http = http.clone();
        let base = base.clone();
        let (token, conv) = targets[i % targets.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < e2e_until {
                let t0 = Instant::now();
                let r: Value = http
                    .post(format!("{base}/v1/conversations/{conv}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"content": "end to end"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = r["id"].as_str().unwrap().to_string();
                loop {
                    let m: Value = http
                        .get(format!("{base}/v1/messages/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if m["status"] == "answered" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                lat.push(t0.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    println!(
        "end to end (echo, {e2e_clients} clients, polling every 2 ms): {} messages, p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);

    // 4. The same flood against `serve` as shipped (its backlog bound, AIRA_MAX_BACKLOG 10,000):
    // the worker's share, and the backlog's peak (the gauge, sampled every 200 ms).
    let (port, ops_port) = (free_port(), free_port());
    let serve = start_serve(&runtime, &data, port, ops_port, &[]);
    let (base, ops) = (format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{ops_port}"));
    wait_healthy(&http, &base).await;
    let targets = users(&http, &base, n_users).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, o, st) = (http.clone(), ops.clone(), stop.clone());
    let peak_backlog = tokio::spawn(async move {
        let mut peak = 0f64;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(metric(&h, &o, "aira_queue_backlog").await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak
    });
    let answered_before = metric(&http, &ops, "aira_worker_messages_total{outcome=\"answered\"}").await;
    let started = Instant::now();
    let f = load(&http, &base, &targets, clients, warmup, secs).await;
    let flood_secs = started.elapsed().as_secs_f64();
    let answered = metric(&http, &ops, "aira_worker_messages_total{outcome=\"answered\"}").await - answered_before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "flood at the default backlog bound: {:.0} accepted/s, {:.0} refused/s (503 busy), errors {}; worker {:.0} answered/s during the flood ({answered} in {flood_secs:.1} s); backlog peak {:.0}",
        f.rate(),
        f.refused as f64 / f.secs,
        f.errors,
        answered / flood_secs,
        peak_backlog.await.unwrap()
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
}
