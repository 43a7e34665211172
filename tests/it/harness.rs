//! Shared set-up: the moto endpoint, unique stack names, running the `aira` binary.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The moto server started by `scripts/test`.
pub fn endpoint() -> String {
    std::env::var("AIRA_TEST_ENDPOINT").unwrap_or_else(|_| {
        panic!("AIRA_TEST_ENDPOINT is not set: run the tests through scripts/test, which starts the moto server")
    })
}

/// The conforming proxy (`crate::proxy`, AWS rules on) in front of moto, shared by the test
/// binary: every `aira` the tests run with `--endpoint-url` at moto is pointed at it instead.
/// It runs on a runtime of its own, since each test's runtime ends with its test.
pub fn conforming() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let upstream = endpoint();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let proxy = crate::proxy::Proxy::start(&upstream, crate::proxy::Faults::default()).await;
                tx.send(proxy.url.clone()).unwrap();
                std::future::pending::<()>().await
            })
        });
        rx.recv().unwrap()
    })
    .clone()
}

/// `args` with an `--endpoint-url` at moto pointed at the conforming proxy; other endpoints (a
/// test's own proxy) are kept.
fn through_proxy(args: &[&str]) -> Vec<String> {
    let moto = std::env::var("AIRA_TEST_ENDPOINT").ok();
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    for i in 1..out.len() {
        if out[i - 1] == "--endpoint-url" && Some(&out[i]) == moto.as_ref() {
            out[i] = conforming();
        }
    }
    out
}

/// A stack name no other test (or earlier run against the same server) uses.
pub fn unique_stack(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let salt = (std::process::id() ^ nanos).wrapping_add(N.fetch_add(1, Ordering::SeqCst) * 7919) % 0xff_ffff;
    format!("{prefix}-{salt:06x}")
}

/// A light stack (network with one gateway endpoint, the queue pair) for tests that are not
/// about the network's shape.
pub fn small_stack(name: &str) -> String {
    format!("stack: {name}\nregion: us-east-1\nnetwork:\n  endpoints: [s3]\n")
}

pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir { dir: tempfile::tempdir().unwrap() }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Runs `aira` with no terminal on stdin, in `cwd`. Async, so that servers of the test
/// (the proxy) keep running on the test's runtime meanwhile.
pub async fn aira(cwd: &Path, args: &[&str]) -> Run {
    aira_env(cwd, args, &[]).await
}

/// The runtime binary that `cargo test --workspace` built next to `aira`, so that the local
/// target does not run cargo itself in tests.
fn runtime_bin() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_BIN_EXE_aira")).with_file_name("aira-runtime");
    p.exists().then_some(p)
}

/// The DNS resolver every `aira` of the tests asks (the pre-flight's delegation check): a
/// loopback port where nothing answers, so that no test queries a resolver off this machine.
/// Tests of the check pass their own responder in `env`, which overrides it.
pub const NO_DNS: &str = "127.0.0.1:9";

pub async fn aira_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aira"));
    cmd.env("AIRA_DNS_RESOLVER", NO_DNS);
    if let Some(bin) = runtime_bin() {
        cmd.env("AIRA_RUNTIME_BIN", bin);
    }
    let out: Output = cmd
        .args(through_proxy(args))
        .current_dir(cwd)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An SQS client straight to moto, to read back what aira did.
pub async fn sqs() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "tests"))
        .http_client(aira_unify::https_client())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

pub fn sdk_config() -> aws_config::SdkConfig {
    sdk_config_in("us-east-1")
}

/// An SDK configuration for moto in another region (tests whose NAT gateways hold Elastic IPs
/// take a region of their own: moto allows 5 per region, as AWS does by default).
pub fn sdk_config_in(region: &str) -> aws_config::SdkConfig {
    let testing = aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    sdk_config_as(&endpoint(), region, testing)
}

/// An SDK configuration for `url` in `region`, signing with `credentials`.
pub fn sdk_config_as(url: &str, region: &str, credentials: aws_credential_types::Credentials) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(url)
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
        .http_client(aira_unify::https_client())
        .build()
}

/// An EC2 client straight to moto.
pub fn ec2() -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config())
}

/// Starts `aira` without waiting for it (to kill it part-way).
pub fn spawn_aira(cwd: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_aira"))
        .args(through_proxy(args))
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("AIRA_DNS_RESOLVER", NO_DNS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Everything of the stack in us-east-1, read from AWS: `(kind, aira:id)` → how many.
pub async fn inventory(stack: &str) -> crate::inventory::Inventory {
    inventory_in(stack, "us-east-1").await
}

/// [`inventory`] of a stack in another region: `crate::inventory`, every kind aira manages.
pub async fn inventory_in(stack: &str, region: &str) -> crate::inventory::Inventory {
    crate::inventory::inventory_in(stack, region).await
}

/// After `down`: nothing of the stack is left in its region, read through the SDK apart from aira.
pub async fn assert_nothing_left(stack: &str, region: &str) {
    let left = inventory_in(stack, region).await;
    assert!(left.is_empty(), "left after down (read through the SDK): {left:?}");
}

/// Runs `aira` with `input` on standard input (not a terminal).
pub async fn aira_stdin(cwd: &Path, args: &[&str], input: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aira"))
        .args(through_proxy(args))
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("AIRA_DNS_RESOLVER", NO_DNS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A Secrets Manager client straight to moto.
pub fn secrets() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&sdk_config())
}
