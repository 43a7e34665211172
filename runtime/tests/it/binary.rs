//! The `aira-runtime serve` binary as the local target runs it: answers with echo, serves
//! readiness and metrics on its operations listener only, and exits cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[tokio::test]
async fn serve_binary_answers_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, ops_port) = (free(), free());
    let child = Command::new(env!("CARGO_BIN_EXE_aira-runtime"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data", dir.path().to_str().unwrap()])
        .args(["--metrics-listen", &format!("127.0.0.1:{ops_port}")])
        .env("AIRA_LOG", "warn")
        .env_remove("AIRA_LLM_BASE_URL")
        .stdout(Stdio::null())
        .spawn()
        .expect("start aira-runtime serve");
    // A failed assertion leaves no server running.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (token, conv) = crate::common::sign_up_over_http(&http, &base, "bin@example.com").await;
    let m = crate::common::answered_over_http(&http, &base, &token, &conv, "from the binary").await;
    assert!(m["answer"].as_str().unwrap().contains("from the binary"), "{m}");
    // Readiness and metrics on the operations listener only; the app port answers them 404.
    let ops = format!("http://127.0.0.1:{ops_port}");
    for path in ["/metrics", "/readyz"] {
        let on_app = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(on_app.status(), 404, "{path} on the app port");
        let on_ops = http.get(format!("{ops}{path}")).send().await.unwrap();
        assert_eq!(on_ops.status(), 200, "{path} on --metrics-listen");
    }
    let scrape = http.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(scrape.contains("aira_messages_accepted_total 1"), "{scrape}");
    // Queued once, in the message's own write (one file): read apart from the runtime, the
    // queue empties and was never given the message twice.
    let file = rusqlite::Connection::open(dir.path().join("store.sqlite")).unwrap();
    let waiting = || file.query_row("SELECT COUNT(*) FROM queue_messages", [], |r| r.get::<_, i64>(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting() > 0 {
        assert!(Instant::now() < deadline, "the queue did not empty");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dir.path().join("queue.sqlite").exists());
    let scrape = http.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(scrape.contains("aira_queue_sent_total 1"), "{scrape}");
    assert!(!scrape.contains("outcome=\"duplicate\""), "a message was queued twice: {scrape}");
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

    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGTERM: i32 = 15;
    // SAFETY: sends a signal to our own child process; no memory is shared.
    assert_eq!(unsafe { kill(child.0.id() as i32, SIGTERM) }, 0);
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < stop_deadline, "serve did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
}
