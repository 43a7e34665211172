//! Attacks on the account routes of a running `aira-runtime serve`, over HTTP: password guessing
//! against one account, and floods of sign-ins that would queue hashing work.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::Serve;

fn retry_after(r: &reqwest::Response) -> Option<u64> {
    r.headers().get("retry-after")?.to_str().ok()?.parse().ok()
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn guessing_one_accounts_password_is_limited_and_the_owner_gets_in_after_the_wait() {
    // The defaults: a burst of 10, then 6 a minute.
    let s = Serve::start(&[]).await;
    let http = reqwest::Client::new();
    let email = "victim@example.com";
    let right = json!({"email": email, "password": "the right password"});
    assert_eq!(http.post(format!("{}/v1/auth/signup", s.base)).json(&right).send().await.unwrap().status(), 201);

    let mut limited = None;
    for n in 1..=50 {
        let wrong = json!({"email": email, "password": format!("guess number {n}")});
        let r = http.post(format!("{}/v1/auth/login", s.base)).json(&wrong).send().await.unwrap();
        match r.status().as_u16() {
            401 => {}
            429 => {
                let wait = retry_after(&r).expect("a 429 says when to retry");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"], "rate_limited");
                limited = Some((n, wait));
                break;
            }
            other => panic!("guess {n}: HTTP {other}"),
        }
    }
    let (n, wait) = limited.expect("50 wrong passwords were never refused");
    // The sign-up took one attempt of the account's burst of 10.
    assert!(n <= 10, "refused only at guess {n}");
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    // The right password is refused too while the account is limited, and works after the wait.
    let r = http.post(format!("{}/v1/auth/login", s.base)).json(&right).send().await.unwrap();
    assert_eq!(r.status(), 429);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = http.post(format!("{}/v1/auth/login", s.base)).json(&right).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // Another account from the same address is not limited by this one's guesses.
    let other = json!({"email": "other@example.com", "password": "another password"});
    assert_eq!(http.post(format!("{}/v1/auth/signup", s.base)).json(&other).send().await.unwrap().status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_sign_ins_are_refused_cheaply_and_health_stays_fast() {
    // The per-address limit is lifted, so that each flood reaches the password checks.
    let s = Serve::start(&[("AIRA_AUTH_ADDRESS_RATE_BURST", "100000"), ("AIRA_AUTH_RATE_BURST", "100000")]).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let owner = json!({"email": "flooded@example.com", "password": "the right password"});
    assert_eq!(http.post(format!("{}/v1/auth/signup", s.base)).json(&owner).send().await.unwrap().status(), 201);

    // Health is probed every 20 ms for as long as a flood lasts, from a thread of its own with
    // blocking HTTP/1.0, so that the time measured is the server's, not this test's scheduling.
    async fn flood(s: &Serve, http: &reqwest::Client, password: String) -> (Vec<u16>, Vec<Duration>, usize) {
        use std::io::{Read, Write};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = {
            let (addr, stop) = (s.base.trim_start_matches("http://").to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut took = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let t = Instant::now();
                    let mut c = std::net::TcpStream::connect(&addr).unwrap();
                    c.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
                    let mut answer = String::new();
                    c.read_to_string(&mut answer).unwrap();
                    took.push(t.elapsed());
                    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                took
            })
        };
        // One body, serialised once, sent 200 times at once.
        let body = axum::body::Bytes::from(json!({"email": "flooded@example.com", "password": password}).to_string());
        let sign_ins = (0..200).map(|_| {
            let (http, url, body) = (http.clone(), format!("{}/v1/auth/login", s.base), body.clone());
            tokio::spawn(async move {
                let r = http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
                (r.status().as_u16(), retry_after(&r))
            })
        });
        let answers = futures_util::future::join_all(sign_ins).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let took = probe.join().unwrap();
        let busy_without_retry_after = answers.iter().filter(|a| matches!(a.as_ref().unwrap(), (503, None))).count();
        (answers.into_iter().map(|a| a.unwrap().0).collect(), took, busy_without_retry_after)
    }

    // 60 KiB passwords: refused (413) before the body is read whole, before any hashing.
    let (statuses, took, _) = flood(&s, &http, "x".repeat(60 * 1024)).await;
    assert!(statuses.iter().all(|&c| c == 413), "{statuses:?}");
    let slowest = took.iter().max().unwrap();
    eprintln!("/healthz: slowest {slowest:?} of {} probes during the flood", took.len());
    assert!(*slowest < Duration::from_millis(100), "/healthz took {slowest:?} during the flood");

    // 1 KiB passwords (the longest allowed): the hashing queue takes what it can, the rest is
    // told to come back, and health is not delayed behind the queue.
    let (statuses, took, no_retry_after) = flood(&s, &http, "y".repeat(1024)).await;
    assert!(statuses.iter().all(|&c| c == 401 || c == 503), "{statuses:?}");
    assert!(statuses.contains(&503), "the queue never filled: {statuses:?}");
    assert!(statuses.contains(&401), "nothing was checked: {statuses:?}");
    assert_eq!(no_retry_after, 0, "every 503 carries Retry-After");
    let slowest = took.iter().max().unwrap();
    eprintln!("/healthz: slowest {slowest:?} of {} probes during the flood", took.len());
    assert!(*slowest < Duration::from_millis(100), "/healthz took {slowest:?} during the flood");

    // Memory stays bounded by the queue: two hashes' working memory (19 MiB each) and the
    // requests, not 200 of either.
    let peak = peak_rss_kib(s.child.id()) / 1024;
    assert!(peak < 200, "peak resident memory {peak} MiB");
    // The owner still gets in.
    let r = http.post(format!("{}/v1/auth/login", s.base)).json(&owner).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
