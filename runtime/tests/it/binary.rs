//! The `aira-runtime serve` binary as the local target runs it: answers with echo, serves
//! readiness and metrics on its operations listener only, and exits cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Serve;

#[tokio::test]
async fn serve_binary_answers_and_exits_on_sigterm() {
    let mut s = Serve::start(&[]).await;
    let (base, ops) = (s.base.clone(), s.ops.clone());
    let http = reqwest::Client::new();
    let (token, conv) = crate::common::sign_up_over_http(&http, &base, "bin@example.com").await;
    let m = crate::common::answered_over_http(&http, &base, &token, &conv, "from the binary").await;
    assert!(m["answer"].as_str().unwrap().contains("from the binary"), "{m}");
    // Readiness and metrics on the operations listener only; the app port answers them 404.
    for path in ["/metrics", "/readyz"] {
        let on_app = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(on_app.status(), 404, "{path} on the app port");
        let on_ops = http.get(format!("{ops}{path}")).send().await.unwrap();
        assert_eq!(on_ops.status(), 200, "{path} on --metrics-listen");
    }
    assert_eq!(s.metric("aira_messages_accepted_total").await, 1.0);
    // Queued once, in the message's own write (one file): read apart from the runtime, the
    // queue empties and was never given the message twice.
    let file = rusqlite::Connection::open(s.data().join("store.sqlite")).unwrap();
    let waiting = || file.query_row("SELECT COUNT(*) FROM queue_messages", [], |r| r.get::<_, i64>(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting() > 0 {
        assert!(Instant::now() < deadline, "the queue did not empty");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!s.data().join("queue.sqlite").exists());
    assert_eq!(s.metric("aira_queue_sent_total").await, 1.0);
    assert_eq!(s.metric("aira_worker_messages_total{outcome=\"duplicate\"}").await, 0.0, "a message was queued twice");
    let spec: Value = http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");

    // The container health check: exit 0 on 200 only.
    let health = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_aira-runtime"))
            .args(["health", &url, "--timeout", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(health(format!("{base}/healthz")), Some(0));
    assert_eq!(health(format!("{base}/no-such-page")), Some(1), "a 404 is unhealthy");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(health(format!("http://127.0.0.1:{closed}/healthz")), Some(1), "no answer is unhealthy");

    // Exits 0 within 10 s of SIGTERM.
    s.terminate(Duration::from_secs(10)).await;
}
