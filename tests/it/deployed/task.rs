//! ECS's part for one task: its definition read from moto, its image pulled by digest from the
//! registry and unpacked, its container started by `scripts/deployed-task` (a network of its own,
//! a read-only root, the definition's user and exactly its environment), its secrets resolved with
//! the execution role, its task role's credentials served as ECS serves them, its health check run.
//! Each connection out of the container, and ECS's own pulls and reads for it, go where the VPC
//! carries them from the task's subnet and groups (`vpc.rs`), or nowhere.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use super::vpc::{Dest, Network, Placement, Source};

/// The environment ECS adds to every container on Fargate (besides the credentials endpoint).
const REGION: &str = "us-east-1";

/// The AWS services the runtime calls, each on a port of its own inside the task (named by
/// `AWS_ENDPOINT_URL_<SERVICE>`), so that each goes where the VPC sends its name.
const SERVICES: [(&str, &str, u16); 2] = [("SQS", "sqs", 4101), ("DYNAMODB", "dynamodb", 4102)];

/// A container definition as ECS runs it.
pub struct Definition {
    pub arn: String,
    pub family: String,
    /// The image's entrypoint followed by the definition's command (else the image's).
    pub argv: Vec<String>,
    /// `uid:gid`.
    pub user: String,
    pub read_only: bool,
    pub environment: Vec<(String, String)>,
    /// Name → `valueFrom` (a secret's ARN).
    pub secrets: Vec<(String, String)>,
    pub health: Option<Health>,
    pub stop_timeout: Duration,
    pub ports: Vec<u16>,
    pub task_role: String,
    pub execution_role: String,
    /// Whether the container's logs go to CloudWatch Logs (`awslogs`).
    pub logs: bool,
    pub rootfs: PathBuf,
}

#[derive(Clone)]
pub struct Health {
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// What every task shares: the harness's servers on loopback and the clients ECS would use.
pub struct Host {
    pub dir: PathBuf,
    /// The port the tasks reach AWS at (standing in for the VPC endpoints and the public ones).
    pub aws_port: u16,
    pub network: Arc<Network>,
    /// The model's port (the stack's `llm.base_url` names it).
    pub model_port: u16,
    /// The credentials and task metadata endpoint.
    pub agent_port: u16,
    agent: Arc<Mutex<BTreeMap<String, Value>>>,
    pub registry: String,
    pub ecs: aws_sdk_ecs::Client,
    /// Signs as `ecs-tasks.amazonaws.com`, the principal the task roles trust.
    pub sts: aws_sdk_sts::Client,
    /// The stack's cluster, once `aira up` has made it.
    pub cluster: std::sync::OnceLock<String>,
    definitions: tokio::sync::Mutex<BTreeMap<String, Arc<Definition>>>,
    http: reqwest::Client,
}

impl Host {
    pub async fn start(
        dir: PathBuf,
        aws_port: u16,
        network: Arc<Network>,
        model_port: u16,
        registry: String,
        ecs: aws_sdk_ecs::Client,
        sts: aws_sdk_sts::Client,
    ) -> Arc<Host> {
        let agent = Arc::new(Mutex::new(BTreeMap::new()));
        let agent_port = serve_agent(agent.clone()).await;
        Arc::new(Host {
            dir,
            aws_port,
            network,
            model_port,
            agent_port,
            agent,
            registry,
            ecs,
            sts,
            cluster: Default::default(),
            definitions: Default::default(),
            http: reqwest::Client::new(),
        })
    }

    /// The task definition `arn`, its image pulled and unpacked (once per definition).
    pub async fn definition(&self, arn: &str) -> Arc<Definition> {
        let mut known = self.definitions.lock().await;
        if let Some(d) = known.get(arn) {
            return d.clone();
        }
        let out = self.ecs.describe_task_definition().task_definition(arn).send().await.unwrap();
        let td = out.task_definition.unwrap();
        let c = &td.container_definitions()[0];
        let image = c.image().unwrap().to_string();
        let (rootfs, config) = self.pull(&image).await;
        let mut argv: Vec<String> = match c.entry_point() {
            [] => strings(&config["config"]["Entrypoint"]),
            e => e.to_vec(),
        };
        argv.extend(match c.command() {
            [] => strings(&config["config"]["Cmd"]),
            cmd => cmd.to_vec(),
        });
        let user = c.user().map(String::from).or_else(|| config["config"]["User"].as_str().map(String::from));
        let user = with_group(&rootfs, user.as_deref().unwrap_or("0"));
        let health = c.health_check().map(|h| Health {
            // `["CMD", …]`: run as is (`CMD-SHELL` needs a shell the image does not have).
            command: h.command().iter().skip(1).cloned().collect(),
            interval: Duration::from_secs(h.interval().unwrap_or(30) as u64),
            timeout: Duration::from_secs(h.timeout().unwrap_or(5) as u64),
            retries: h.retries().unwrap_or(3) as u32,
            start_period: Duration::from_secs(h.start_period().unwrap_or(0) as u64),
        });
        let d = Arc::new(Definition {
            arn: arn.to_string(),
            family: td.family().unwrap_or_default().to_string(),

            argv,
            user,
            read_only: c.readonly_root_filesystem().unwrap_or(false),
            environment: c
                .environment()
                .iter()
                .map(|kv| (kv.name().unwrap().into(), kv.value().unwrap().into()))
                .collect(),
            secrets: c.secrets().iter().map(|s| (s.name().into(), s.value_from().into())).collect(),
            health,
            // ECS's default when the definition gives none.
            stop_timeout: Duration::from_secs(c.stop_timeout().unwrap_or(30) as u64),
            ports: c.port_mappings().iter().filter_map(|p| p.container_port()).map(|p| p as u16).collect(),
            task_role: td.task_role_arn().unwrap_or_default().to_string(),
            execution_role: td.execution_role_arn().unwrap_or_default().to_string(),
            logs: c.log_configuration().is_some_and(|l| l.log_driver().as_str() == "awslogs"),
            rootfs,
        });
        known.insert(arn.to_string(), d.clone());
        d
    }

    /// Pulls `REGISTRY/REPOSITORY@sha256:…` from the loopback registry, checks every digest, and
    /// unpacks its layers into a folder of its own; returns the folder and the image's config.
    async fn pull(&self, image: &str) -> (PathBuf, Value) {
        let (repository, digest) = image.split_once('@').expect("the task definition names its image by digest");
        let repository = repository.strip_prefix(&format!("{}/", self.registry)).unwrap_or_else(|| {
            panic!("the task definition's image {image} is not in the harness's registry {}", self.registry)
        });
        let blob = |d: &str| format!("http://{}/v2/{repository}/blobs/{d}", self.registry);
        let get = |url: String, accept: &'static str| {
            let http = self.http.clone();
            async move {
                let r = http.get(&url).header("accept", accept).send().await.unwrap();
                assert_eq!(r.status(), 200, "GET {url}");
                r.bytes().await.unwrap()
            }
        };
        let manifest = get(
            format!("http://{}/v2/{repository}/manifests/{digest}", self.registry),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await;
        assert_eq!(sha256(&manifest), digest, "the manifest's digest");
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        let config = get(blob(config_digest), "*/*").await;
        assert_eq!(sha256(&config), config_digest);
        let config: Value = serde_json::from_slice(&config).unwrap();
        let rootfs = self.dir.join(format!("rootfs-{}", &digest["sha256:".len()..][..16]));
        if !rootfs.exists() {
            std::fs::create_dir_all(&rootfs).unwrap();
            for layer in manifest["layers"].as_array().unwrap() {
                let d = layer["digest"].as_str().unwrap();
                let bytes = get(blob(d), "*/*").await;
                assert_eq!(sha256(&bytes), d);
                let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
                archive.set_preserve_permissions(true);
                archive.unpack(&rootfs).unwrap();
            }
        }
        (rootfs, config)
    }

    /// Resolves a definition's secrets as ECS does, with its execution role's credentials.
    async fn secrets(&self, d: &Definition) -> Vec<(String, String)> {
        if d.secrets.is_empty() {
            return Vec::new();
        }
        let conf = self.assumed(&d.execution_role, "ecs-execution").await;
        let sm = aws_sdk_secretsmanager::Client::new(&conf);
        let mut out = Vec::new();
        for (name, from) in &d.secrets {
            let v = sm.get_secret_value().secret_id(from).send().await.unwrap_or_else(|e| {
                panic!(
                    "the execution role could not read the secret {from}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            });
            out.push((name.clone(), v.secret_string().unwrap_or_default().to_string()));
        }
        out
    }

    /// An SDK configuration with `role`'s credentials, assumed as ECS assumes it.
    async fn assumed(&self, role: &str, session: &str) -> aws_config::SdkConfig {
        let c = self.credentials(role, session).await;
        let credentials = aws_credential_types::Credentials::new(
            c["AccessKeyId"].as_str().unwrap(),
            c["SecretAccessKey"].as_str().unwrap(),
            c["Token"].as_str().map(String::from),
            None,
            "ecs",
        );
        crate::harness::sdk_config_as(&format!("http://127.0.0.1:{}", self.aws_port), REGION, credentials)
    }

    /// `AssumeRole` as `ecs-tasks.amazonaws.com`, in the JSON the container credentials endpoint serves.
    async fn credentials(&self, role: &str, session: &str) -> Value {
        let out =
            self.sts.assume_role().role_arn(role).role_session_name(session).send().await.unwrap_or_else(|e| {
                panic!("ECS could not assume {role}: {}", aws_sdk_sts::error::DisplayErrorContext(e))
            });
        let c = out.credentials.unwrap();
        json!({
            "RoleArn": role,
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key,
            "Token": c.session_token,
            "Expiration": c.expiration.fmt(aws_sdk_sts::primitives::DateTimeFormat::DateTime).unwrap(),
        })
    }
}

/// A running (or stopped) task.
pub struct Task {
    pub id: String,
    pub definition: Arc<Definition>,
    pub placement: Placement,
    network: Arc<Network>,
    pub started: Instant,
    dir: PathBuf,
    env_file: PathBuf,
    child: tokio::sync::Mutex<tokio::process::Child>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

impl Task {
    /// Starts a task of `d` in `host`'s cluster at `placement`; refused as ECS refuses it when
    /// the VPC does not carry what starting it takes (its image, its secrets, its logs).
    pub async fn start(host: &Arc<Host>, d: Arc<Definition>, placement: Placement) -> Result<Task, String> {
        let mut needs = vec![Dest::Aws("ecr.api"), Dest::Aws("ecr.dkr"), Dest::Aws("s3")];
        needs.extend((!d.secrets.is_empty()).then_some(Dest::Aws("secretsmanager")));
        needs.extend(d.logs.then_some(Dest::Aws("logs")));
        if needs.iter().any(|need| host.network.egress(&placement, need).is_err()) {
            // The VPC as it is now, not as last read (a task may start right after the network).
            host.network.refresh().await;
        }
        for need in &needs {
            host.network
                .connect(&placement, need)
                .map_err(|why| format!("ResourceInitializationError: {need:?} cannot be reached: {why}"))?;
        }
        let id = task_id();
        let dir = host.dir.join(format!("task-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Open to the container's forwarders (root) and the harness (maybe not root).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let cluster = host.cluster.get().cloned().unwrap_or_default();
        let task_arn = format!("arn:aws:ecs:{REGION}:123456789012:task/{cluster}/{id}");
        let creds = host.credentials(&d.task_role, &id).await;
        host.agent.lock().unwrap().insert(
            id.clone(),
            json!({ "credentials": creds, "task": { "TaskARN": task_arn, "Cluster": cluster, "Family": d.family } }),
        );
        let mut env: Vec<(String, String)> = d.environment.clone();
        env.extend(host.secrets(&d).await);
        let agent = format!("http://127.0.0.1:{}", host.agent_port);
        env.extend([
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI".into(), format!("{agent}/credentials/{id}")),
            ("ECS_CONTAINER_METADATA_URI_V4".into(), format!("{agent}/metadata/{id}")),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_EXECUTION_ENV".into(), "AWS_ECS_FARGATE".into()),
        ]);
        // Not ECS's: the services' names answer here instead, each on a port of its own
        // (tests/it/README.md); any other AWS name resolves to nothing in the task's network.
        env.extend(
            SERVICES.map(|(var, _, port)| (format!("AWS_ENDPOINT_URL_{var}"), format!("http://127.0.0.1:{port}"))),
        );
        let env_file = dir.join("env");
        let mut bytes = Vec::new();
        for (k, v) in &env {
            bytes.extend_from_slice(format!("{k}={v}").as_bytes());
            bytes.push(0);
        }
        std::fs::write(&env_file, bytes).unwrap();
        // (the port inside, where it goes, the host's port)
        let mut outs =
            vec![(host.model_port, Dest::Internet, host.model_port), (host.agent_port, Dest::Agent, host.agent_port)];
        outs.extend(SERVICES.map(|(_, service, port)| (port, Dest::Aws(service), host.aws_port)));
        let mut forwarders = Vec::new();
        for (inside, to, port) in &outs {
            let path = dir.join(format!("host-{inside}.sock"));
            forwarders.push(forward(&path, *port, host.network.clone(), placement.clone(), to.clone()));
        }
        let ports: Vec<String> = d.ports.iter().map(|p| p.to_string()).collect();
        let host_ports: Vec<String> = outs.iter().map(|(p, _, _)| p.to_string()).collect();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let mut cmd = as_root();
        cmd.arg(script())
            .arg("run")
            .arg(&d.rootfs)
            .arg(&dir)
            .arg(&d.user)
            .arg(&env_file)
            .arg(host_ports.join(" "))
            .arg(ports.join(" "))
            .arg("--")
            .args(&d.argv)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        assert!(d.read_only, "the task definition {} leaves the root file system writable", d.arn);
        let child = cmd.spawn().expect("start scripts/deployed-task");
        Ok(Task {
            id,
            definition: d,
            placement,
            network: host.network.clone(),
            started: Instant::now(),
            dir,
            env_file,
            child: tokio::sync::Mutex::new(child),
            forwarders,
        })
    }

    /// A connection to the container's `port` from `source`, when the VPC admits it.
    pub async fn connect(&self, port: u16, source: &Source) -> Result<tokio::net::UnixStream, String> {
        self.network.ingress(&self.placement, port, source)?;
        tokio::net::UnixStream::connect(self.dir.join(format!("port-{port}.sock"))).await.map_err(|e| e.to_string())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Whether the container has exited.
    pub fn exited(&self) -> bool {
        self.child.try_lock().is_ok_and(|mut c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Runs the definition's health check once: `Some(passed)`, or `None` without one.
    pub async fn check(&self) -> Option<bool> {
        let h = self.definition.health.as_ref()?;
        if !self.dir.join("pid").exists() {
            return Some(false);
        }
        let mut cmd = as_root();
        cmd.arg(script())
            .arg("exec")
            .arg(&self.definition.rootfs)
            .arg(&self.dir)
            .arg(&self.definition.user)
            .arg(&self.env_file)
            .arg("--")
            .args(&h.command)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let ran = tokio::time::timeout(h.timeout, cmd.status()).await;
        Some(matches!(ran, Ok(Ok(s)) if s.success()))
    }

    /// Sends the container `signal` (`TERM`, `KILL`), as ECS's agent does.
    pub async fn signal(&self, signal: &str) {
        let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) else { return };
        let _ = as_root().args(["/bin/bash", "-c", &format!("kill -s {signal} {}", pid.trim())]).status().await;
    }

    /// SIGTERM, then SIGKILL after the definition's `stopTimeout`; the time it took to exit.
    pub async fn stop(&self) -> Duration {
        let asked = Instant::now();
        self.signal("TERM").await;
        let mut child = self.child.lock().await;
        if tokio::time::timeout(self.definition.stop_timeout, child.wait()).await.is_err() {
            self.signal("KILL").await;
            let _ = child.wait().await;
        }
        for f in &self.forwarders {
            f.abort();
        }
        asked.elapsed()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let p = root_prefix();
            let mut kill = std::process::Command::new(p[0]);
            kill.args(&p[1..]).args(["/bin/bash", "-c", &format!("kill -s KILL {}", pid.trim())]).stderr(Stdio::null());
            let _ = kill.status();
        }
    }
}

/// A task id as ECS makes them: 32 hex digits, unique in the run.
fn task_id() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:024x}{:08x}", nanos & ((1 << 96) - 1), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/deployed-task")
}

fn is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// How a command runs as root: directly when the tests are, else through password-less sudo.
fn root_prefix() -> &'static [&'static str] {
    if is_root() {
        &["/usr/bin/env"]
    } else {
        &["/usr/bin/sudo", "-n", "/usr/bin/env"]
    }
}

fn as_root() -> tokio::process::Command {
    let p = root_prefix();
    let mut c = tokio::process::Command::new(p[0]);
    c.args(&p[1..]);
    c
}

/// `uid` alone gets the group the image's `/etc/passwd` gives it, else 0 (as Docker does).
fn with_group(rootfs: &Path, user: &str) -> String {
    if user.contains(':') {
        return user.to_string();
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let gid = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == user || f[2] == user))
        .map(|f| f[3].to_string())
        .unwrap_or_else(|| "0".into());
    format!("{user}:{gid}")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// Offers the host's `127.0.0.1:port` at the Unix socket `path` (the container's side connects)
/// as `to`: each connection the VPC carries from `from`, and only those; a refused one is closed.
fn forward(path: &Path, port: u16, network: Arc<Network>, from: Placement, to: Dest) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    tokio::spawn(async move {
        while let Ok((mut inside, _)) = listener.accept().await {
            if network.connect(&from, &to).is_err() {
                continue;
            }
            let flow = tokio::spawn(async move {
                if let Ok(mut outside) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
            network.watch(&from, &to, &flow);
        }
    })
}

/// The container credentials and task metadata endpoint: `/credentials/TASK` (the task role's
/// credentials, as `AWS_CONTAINER_CREDENTIALS_FULL_URI` serves them) and `/metadata/TASK/task`.
async fn serve_agent(state: Arc<Mutex<BTreeMap<String, Value>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
                        let known = state.lock().unwrap();
                        let body = match parts.as_slice() {
                            ["credentials", task] => known.get(*task).map(|t| t["credentials"].clone()),
                            ["metadata", task, "task"] => known.get(*task).map(|t| t["task"].clone()),
                            _ => None,
                        };
                        let resp = match body {
                            Some(b) => hyper::Response::new(Full::new(Bytes::from(b.to_string()))),
                            None => hyper::Response::builder().status(404).body(Full::new(Bytes::new())).unwrap(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    port
}
