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

/// A stack name no other test (or earlier run against the same server) uses.
pub fn unique_stack(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let salt = (std::process::id() ^ nanos).wrapping_add(N.fetch_add(1, Ordering::SeqCst) * 7919) % 0xff_ffff;
    format!("{prefix}-{salt:06x}")
}

pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
        }
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
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `aira` with no terminal on stdin, in `cwd`. Async, so that servers of the test
/// (the proxy) keep running on the test's runtime meanwhile.
pub async fn aira(cwd: &Path, args: &[&str]) -> Run {
    aira_env(cwd, args, &[]).await
}

pub async fn aira_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aira"))
        .args(args)
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
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}
