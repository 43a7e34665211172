//! The local target: the stack's runtime (api and worker in one `aira-runtime serve` process, on
//! the embedded SQLite backends) on this machine. Nothing on AWS is touched.
//!
//! State lives in `.aira/<stack>/` under the current directory: `data/` (the SQLite files, kept
//! across `down` unless `--purge`), `runtime.log`, and `state.json` (pid and URL of the process).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use aira_engine::stack::model::Role;
use aira_engine::stack::Stack;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalState {
    pub stack: String,
    pub pid: u32,
    pub url: String,
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub log: PathBuf,
    pub binary: PathBuf,
    /// Unix seconds.
    pub started_at: u64,
    pub llm: String,
    /// The operations listener (`/metrics`, `/readyz`), never the app's address. Absent in the
    /// state of a runtime started by an older aira.
    #[serde(default)]
    pub metrics_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalStatus {
    pub stack: String,
    pub running: bool,
    pub healthy: bool,
    #[serde(flatten)]
    pub state: Option<LocalState>,
    pub dir: PathBuf,
}

pub fn dir(stack: &str) -> PathBuf {
    PathBuf::from(".aira").join(stack)
}

fn state_path(stack: &str) -> PathBuf {
    dir(stack).join("state.json")
}

fn read_state(stack: &str) -> Option<LocalState> {
    serde_json::from_slice(&std::fs::read(state_path(stack)).ok()?).ok()
}

fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie (exited, not yet reaped) counts as gone.
    let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
    exists && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// `GET /healthz` over plain TCP: loopback only, so no HTTP client library is needed.
pub async fn healthy(addr: SocketAddr) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten().unwrap_or(false)
}

pub async fn status(stack: &str) -> LocalStatus {
    let state = read_state(stack);
    let running = state.as_ref().is_some_and(|s| alive(s.pid));
    let healthy = match &state {
        Some(s) if running => healthy(s.listen).await,
        _ => false,
    };
    LocalStatus { stack: stack.into(), running, healthy, state, dir: dir(stack) }
}

/// Finds the `aira-runtime` binary: `AIRA_RUNTIME_BIN`, next to this executable, or built from
/// this source tree with cargo (the first run from a fresh clone).
fn runtime_binary(note: &dyn Fn(&str)) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AIRA_RUNTIME_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locate the aira executable")?;
    let sibling = exe.with_file_name("aira-runtime");
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    if source.join("runtime/Cargo.toml").exists() {
        // Inside a source tree: build (a no-op when up to date), so the runtime is never stale.
        let release = exe.parent().is_some_and(|d| d.ends_with("release"));
        note(&format!(
            "building aira-runtime ({}) with cargo; the first build takes a few minutes",
            if release { "release" } else { "debug" }
        ));
        let args: &[&str] = if release { &["--release"] } else { &[] };
        return aira_image::build::build_runtime(source, args, None);
    }
    if sibling.exists() {
        return Ok(sibling);
    }
    Err(anyhow!("cannot find the aira-runtime binary: set AIRA_RUNTIME_BIN, or install it next to {}", exe.display()))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts the stack's runtime unless it already runs; returns its state.
pub async fn up(stack: &Stack, listen: Option<SocketAddr>, note: &dyn Fn(&str)) -> Result<LocalState> {
    let name = &stack.stack.0;
    let current = status(name).await;
    if let (true, Some(state)) = (current.running, current.state.clone()) {
        if current.healthy {
            note(&format!("already running (pid {}); nothing to do", state.pid));
            return Ok(state);
        }
        bail!("the local runtime of `{name}` runs (pid {}) but {} does not answer /healthz; see {} or run `aira down --local`", state.pid, state.url, state.log.display());
    }
    let dir = dir(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
    let binary = runtime_binary(note)?;

    // The api service's port when it is free, else any free port.
    let port = stack.services.values().find(|s| s.role == Role::Api).and_then(|s| s.port).unwrap_or(8080);
    let listen = match listen {
        Some(l) => l,
        None if TcpListener::bind(("127.0.0.1", port)).is_ok() => SocketAddr::from(([127, 0, 0, 1], port)),
        None => {
            let other = free_port()?;
            note(&format!("port {port} is taken; using {other}"));
            SocketAddr::from(([127, 0, 0, 1], other))
        }
    };

    // The operations listener: the next port when it is free, else any free port.
    let next = SocketAddr::new(listen.ip(), listen.port().wrapping_add(1));
    let ops = match TcpListener::bind(next) {
        Ok(_) if listen.port() != 0 => next,
        _ => SocketAddr::new(listen.ip(), free_port()?),
    };

    let mut cmd = tokio::process::Command::new(&binary);
    cmd.args(["serve", "--listen", &listen.to_string(), "--metrics-listen", &ops.to_string(), "--data"]).arg(&data);
    // The stack's queue semantics, so the local target behaves like the deployed one.
    if let Some(dl) = &stack.queue.dead_letter {
        cmd.env("AIRA_MAX_RECEIVES", dl.max_receives.to_string());
    }
    cmd.env("AIRA_VISIBILITY_TIMEOUT_SECS", stack.queue.visibility_timeout.secs().to_string());
    // The stack's bounds on model spend, as on AWS (whichever model answers: echo counts too).
    cmd.envs(aira_engine::expand::spend_env(stack));
    // The model: the stack's, when a key is at hand; the offline echo model otherwise.
    let key = std::env::var("AIRA_LLM_API_KEY").ok().filter(|k| !k.is_empty());
    // A model on Bedrock is AWS, which the local target never touches.
    let url = stack.llm.as_ref().and_then(|l| l.base_url.as_ref());
    let llm = match (&stack.llm, url, key) {
        (Some(llm), Some(url), Some(_)) => {
            cmd.env("AIRA_LLM_BASE_URL", &url.0).env("AIRA_LLM_MODEL", &llm.model);
            format!("{} at {url}", llm.model)
        }
        (Some(llm), Some(url), None) if llm.api_key.is_none() => {
            cmd.env("AIRA_LLM_BASE_URL", &url.0).env("AIRA_LLM_MODEL", &llm.model).env_remove("AIRA_LLM_API_KEY");
            format!("{} at {url}", llm.model)
        }
        (Some(_), None, _) => {
            cmd.env_remove("AIRA_LLM_BASE_URL").env_remove("AIRA_LLM_API_KEY").env_remove("AIRA_LLM_PROVIDER");
            note("the stack's model is on Amazon Bedrock, which the local target does not call; using the offline echo model");
            "echo (offline)".into()
        }
        (Some(_), Some(_), None) => {
            cmd.env_remove("AIRA_LLM_BASE_URL").env_remove("AIRA_LLM_API_KEY");
            note("the stack's model needs an API key: set AIRA_LLM_API_KEY to use it locally; using the offline echo model");
            "echo (offline)".into()
        }
        (None, _, _) => {
            cmd.env_remove("AIRA_LLM_BASE_URL");
            "echo (offline)".into()
        }
    };
    let log = dir.join("runtime.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    // Its own process group, so that it outlives this command and `down` can stop all of it.
    cmd.process_group(0).stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
    let child = cmd.spawn().with_context(|| format!("start {}", binary.display()))?;
    let pid = child.id().ok_or_else(|| anyhow!("the runtime exited at once; see {}", log.display()))?;
    drop(child); // not killed on drop: tokio's default

    let state = LocalState {
        stack: name.clone(),
        pid,
        url: format!("http://{listen}/"),
        listen,
        data: data.clone(),
        log: log.clone(),
        binary,
        started_at: crate::time::now_secs(),
        llm,
        metrics_url: Some(format!("http://{ops}/metrics")),
    };
    std::fs::write(state_path(name), serde_json::to_vec_pretty(&state)?)?;

    let start = Instant::now();
    while !healthy(listen).await {
        if !alive(pid) {
            bail!("the runtime exited during start-up; its log: {}", log.display());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the runtime (pid {pid}) did not answer {}healthz within 60s; its log: {}", state.url, log.display());
        }
        note(&format!("waiting for {}healthz ({})", state.url, crate::time::seconds(start.elapsed())));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(state)
}

/// Stops the stack's runtime (SIGTERM to its process group: it finishes or hands back
/// in-flight work; SIGKILL after `grace`). `purge` also removes the data.
pub async fn down(stack: &str, purge: bool, grace: Duration, note: &dyn Fn(&str)) -> Result<Option<u32>> {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let state = read_state(stack);
    let mut stopped = None;
    if let Some(s) = state.filter(|s| alive(s.pid)) {
        let group = Pid::from_raw(s.pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let start = Instant::now();
        while alive(s.pid) {
            if start.elapsed() > grace {
                note(&format!("pid {} did not stop within {}s; killing it", s.pid, grace.as_secs()));
                let _ = killpg(group, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stopped = Some(s.pid);
    }
    let _ = std::fs::remove_file(state_path(stack));
    if purge {
        let d = dir(stack);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("remove {}", d.display()))?;
        }
    }
    Ok(stopped)
}
