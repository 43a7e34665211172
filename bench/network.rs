//! Wall time of `aira up` of the network layer with a fixed latency injected per AWS call,
//! at the default concurrency and at concurrency 1, against its critical path: as aira reports
//! both, and as the proxy's timed log shows them (`aira_testkit::critical`: the span from the
//! first change to the last answer, and the longest chain of calls linked by the ids they pass).
//!
//! Then the canonical stack's first `up` as a base beside a preview's first `up` on it: AWS calls,
//! wall time and critical path of each.
//!
//! Needs the moto server: run through `bench/network.sh`, which starts one. Prints Markdown
//! tables for docs/performance.md.

use aira_testkit::{canonical, proxy};

use std::time::{Duration, Instant};

use proxy::{Faults, Proxy};

const LATENCY: Duration = Duration::from_millis(200);

struct Figures {
    wall: Duration,
    apply_ms: u64,
    critical_ms: u64,
    calls: usize,
    /// From the proxy's log.
    span: Duration,
    chain: aira_testkit::critical::Chain,
}

/// `aira up FILE ARGS` through a proxy that adds [`LATENCY`] to every call, timed.
async fn up_through(endpoint: &str, file: &std::path::Path, args: &[&str], concurrency: u16) -> Figures {
    let proxy = Proxy::start(endpoint, Faults { latency: LATENCY, ..Faults::default() }).await;
    let aira = env!("CARGO_BIN_EXE_aira");
    let start = Instant::now();
    let out = tokio::process::Command::new(aira)
        .args(["up", file.to_str().unwrap(), "--yes", "--output", "json", "--endpoint-url", &proxy.url])
        .args(["--concurrency", &concurrency.to_string()])
        .args(args)
        // No resolver off this machine for the domain's delegation check (its note says so).
        .env("AIRA_DNS_RESOLVER", "127.0.0.1:9")
        .output()
        .await
        .unwrap();
    let wall = start.elapsed();
    assert!(out.status.success(), "aira up failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let calls = proxy.take_calls().len();
    let sent = proxy.take_requests();
    Figures {
        wall,
        apply_ms: json["report"]["elapsed_ms"].as_u64().unwrap(),
        critical_ms: json["report"]["critical_path_ms"].as_u64().unwrap(),
        calls,
        span: aira_testkit::critical::apply_span(&sent),
        chain: aira_testkit::critical::critical_path(&sent),
    }
}

async fn down(endpoint: &str, file: &std::path::Path, args: &[&str]) {
    let down = tokio::process::Command::new(env!("CARGO_BIN_EXE_aira"))
        .args(["down", file.to_str().unwrap(), "--yes", "--endpoint-url", endpoint])
        .args(args)
        .env("AIRA_DNS_RESOLVER", "127.0.0.1:9")
        .output()
        .await
        .unwrap();
    assert!(down.status.success(), "aira down failed: {}", String::from_utf8_lossy(&down.stderr));
}

async fn run(endpoint: &str, dir: &std::path::Path, concurrency: u16, round: usize) -> Figures {
    let stack = format!("bench-c{concurrency}-{round}-{}", std::process::id() % 100_000);
    let file = dir.join(format!("{stack}.yaml"));
    std::fs::write(&file, canonical::network_and_queues(&stack)).unwrap();
    let f = up_through(endpoint, &file, &[], concurrency).await;
    down(endpoint, &file, &[]).await;
    f
}

/// A row of the previews' table.
fn row(what: &str, f: &Figures) {
    println!(
        "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        f.calls,
        f.wall.as_secs_f64(),
        f.apply_ms as f64 / 1000.0,
        f.critical_ms as f64 / 1000.0,
        f.span.as_secs_f64(),
        f.chain.duration.as_secs_f64(),
    );
}

/// The canonical stack (its echo model: no secret; one api task) as a base, and a preview's first `up` on it,
/// each through the latency proxy: how many calls, and how long, each takes.
async fn previews(endpoint: &str, dir: &std::path::Path) {
    let stack = format!("bench-pv-{}", std::process::id() % 100_000);
    let file = dir.join(format!("{stack}.yaml"));
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/stacks/aira.yaml")).unwrap();
    // One api task: moto reports one task running for any service, and `up` waits for all.
    let text = text.split("llm:").next().unwrap().replace("stack: aira\n", &format!("stack: {stack}\n"));
    let text = text.replace("count: 2,", "count: 1,");
    std::fs::write(&file, text).unwrap();
    let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "bench");
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
        .http_client(aira_unify::https_client())
        .build();
    let r53 = aws_sdk_route53::Client::new(&config);
    r53.create_hosted_zone().name("example.com").caller_reference(&stack).send().await.unwrap();
    let image = ["--image", IMAGE];
    println!("\n| first `up` ({}ms a call) | AWS calls | wall (s) | apply (s) | critical path (s) | proxy: apply (s) | proxy: critical path (s) |", LATENCY.as_millis());
    println!("|---|---|---|---|---|---|---|");
    let base = up_through(endpoint, &file, &image, 8).await;
    row("the whole stack (the base)", &base);
    let preview = up_through(endpoint, &file, &[&image[..], &["--preview", "p1"]].concat(), 8).await;
    row("a preview on it", &preview);
    println!("\nThe preview's critical path (proxy): {}", preview.chain.calls.join(" → "));
    // Through the conforming proxy: moto has no alert manager definitions of its own.
    let proxy = Proxy::start(endpoint, Faults::default()).await;
    down(&proxy.url, &file, &["--preview", "p1"]).await;
    down(&proxy.url, &file, &[]).await;
}

/// An image in the account's ECR (the tasks are not run: moto runs none).
const IMAGE: &str = "000000000000.dkr.ecr.us-east-1.amazonaws.com/aira/runtime@sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::main]
async fn main() {
    let endpoint =
        std::env::var("AIRA_TEST_ENDPOINT").expect("run through bench/network.sh, which starts the moto server");
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    println!("| concurrency | round | wall (s) | apply (s) | critical path (s) | apply / critical path | proxy: apply (s) | proxy: critical path (s) | proxy: ratio | AWS calls |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut chain = None;
    for round in 1..=rounds {
        // Interleaved, so both settings see the same machine load.
        for concurrency in [8u16, 1] {
            let f = run(&endpoint, dir.path(), concurrency, round).await;
            println!(
                "| {concurrency} | {round} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                f.wall.as_secs_f64(),
                f.apply_ms as f64 / 1000.0,
                f.critical_ms as f64 / 1000.0,
                f.apply_ms as f64 / f.critical_ms.max(1) as f64,
                f.span.as_secs_f64(),
                f.chain.duration.as_secs_f64(),
                f.span.as_secs_f64() / f.chain.duration.as_secs_f64().max(0.001),
                f.calls
            );
            chain.get_or_insert(f.chain.calls);
        }
    }
    println!(
        "\nThe proxy's critical path (first round, default concurrency): {}",
        chain.unwrap_or_default().join(" → ")
    );
    previews(&endpoint, dir.path()).await;
}
