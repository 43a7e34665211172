//! `scripts/deployed`: what `aira up` deploys, run. moto registers task definitions and services
//! but runs no task, enforces no IAM unless asked and serves no listener; here, against a moto
//! server of its own with IAM enforced, `aira up` (as an IAM user with an administrator policy)
//! deploys the canonical stack's shape, and the harness plays ECS and the load balancer:
//! - ECS (`ecs.rs`, `task.rs`): each service's tasks from the image its task definition names by
//!   digest, pulled from the loopback registry; each container in a network of its own, read-only,
//!   as the definition's user, with exactly its environment, its secrets read with the execution
//!   role and its task role's credentials (STS `AssumeRole` as `ecs-tasks.amazonaws.com`) served
//!   at `AWS_CONTAINER_CREDENTIALS_FULL_URI`; health checks run; rolling deployments as configured.
//!   `aira up` waits for these tasks: `DescribeServices` reports them.
//! - the load balancer (`lb.rs`): the HTTP listener's redirect, the HTTPS listener with a local
//!   CA's certificate, the target group's health check and deregistration delay.
//!
//! - the VPC (`vpc.rs`): every connection a task makes or takes goes where the VPC moto holds
//!   carries it (routes, NAT and internet gateways, endpoints, security groups), or nowhere.
//!
//! Then a browser chats through it, 200 users chat while the image changes and `aira up` rolls
//! it out, and a permission taken from the worker's role shows as AccessDenied in its log. The
//! controls show that the harness can fail: a rollout at a minimum healthy percent of 0 fails
//! requests, and a worker left without NAT (aira's own reachability check bypassed) is refused
//! its model until NAT is back.
//! What this reproduces of ECS, the load balancer and IAM, and what not: `tests/it/README.md`.

mod ecs;
mod iam;
mod lb;
mod load;
mod task;
mod vpc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aira_testkit::proxy::{Faults, Proxy};
use aira_testkit::rewrite::Rewrites;
use serde_json::{json, Value};

use crate::harness::{aira_env, endpoint, unique_stack, Workdir};

const DOMAIN: &str = "chat.example.com";
const USERS: usize = 200;
/// Users chatting through the negative control's rollout.
const CONTROL_USERS: usize = 20;

/// Access keys of an IAM user.
struct Keys {
    id: String,
    secret: String,
}

impl Keys {
    fn config(&self, url: &str) -> aws_config::SdkConfig {
        let credentials = aws_credential_types::Credentials::new(&self.id, &self.secret, None, None, "deployed");
        crate::harness::sdk_config_as(url, "us-east-1", credentials)
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![("AWS_ACCESS_KEY_ID", self.id.as_str()), ("AWS_SECRET_ACCESS_KEY", self.secret.as_str())]
    }
}

/// The runtime binary with bytes appended, so that its image (and task definitions) differ:
/// revision `n` of the deployed image.
fn another_image(runtime: &Path, dir: &Path, n: u8) -> PathBuf {
    let changed = dir.join(format!("aira-runtime-v{n}"));
    let mut bytes = std::fs::read(runtime).unwrap();
    bytes.extend_from_slice(format!("\0aira deployed harness: image {n}\0").as_bytes());
    std::fs::write(&changed, bytes).unwrap();
    std::fs::set_permissions(&changed, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    changed
}

/// An IAM user with one inline statement and an access key, made before IAM is enforced.
async fn identity(iam: &aws_sdk_iam::Client, name: &str, statement: Value) -> Keys {
    iam.create_user().user_name(name).send().await.unwrap();
    let policy = json!({"Version": "2012-10-17", "Statement": [statement]});
    iam.put_user_policy()
        .user_name(name)
        .policy_name("harness")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
    let key = iam.create_access_key().user_name(name).send().await.unwrap().access_key.unwrap();
    Keys { id: key.access_key_id, secret: key.secret_access_key }
}

/// llm-katan with its echo model (the same as the runtime's tests start).
struct Katan {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Katan {
    async fn start(dir: &Path) -> Katan {
        let exe = std::env::var_os("AIRA_LLM_KATAN").map(PathBuf::from).expect("AIRA_LLM_KATAN (scripts/llm-katan.sh)");
        let port = crate::image::free_port();
        let log_path = dir.join("llm-katan.log");
        let log = std::fs::File::create(&log_path).unwrap();
        // A streamed answer written over a second or so (4 characters each 40 ms), so that the
        // rolling deploy replaces tasks while answers are being written.
        let child = Command::new(exe)
            .args(["--backend", "echo", "--providers", "openai", "-m", "katan-echo", "--host", "127.0.0.1"])
            .args(["--itl-ms", "40"])
            .args(["--port", &port.to_string(), "--stats-file", dir.join("katan-stats.json").to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err() {
            assert!(Instant::now() < deadline, "llm-katan did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Katan { child, port, log: log_path }
    }

    /// The model calls it answered to their end, from its own log (its `/stats` leaves streamed
    /// answers out): one line `openai | CLIENT | 200 | …` each, streamed or whole.
    fn calls(&self) -> u64 {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains("openai | ") && l.contains(" | 200 | ")).count() as u64
    }
}

impl Drop for Katan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local CA and a certificate for `name` signed by it (openssl): `(ca.pem, cert.pem, key.pem)`.
pub(crate) fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=aira deployed harness CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "site.key",
        "-out",
        "site.csr",
        "-subj",
        &format!("/CN={name}"),
    ]);
    // As ACM's for a stack with a domain: its name and the previews' (`*.` it).
    let ext = format!("subjectAltName=DNS:{name},DNS:*.{name}\nextendedKeyUsage=serverAuth\n");
    std::fs::write(dir.join("site.ext"), ext).unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "site.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "site.pem",
        "-days",
        "2",
        "-extfile",
        "site.ext",
    ]);
    (dir.join("ca.pem"), dir.join("site.pem"), dir.join("site.key"))
}

/// A TLS server configuration (rustls on ring) presenting `cert` with its `key` (PEM files).
pub(crate) fn tls_server(cert: &Path, key: &Path) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> =
        rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}

/// The base64 SHA-256 of the certificate's public key, which Chromium is told to trust.
fn spki(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The stack: the canonical one's shape, its model llm-katan on loopback.
fn stack_file(name: &str, model_port: u16) -> String {
    format!(
        "stack: {name}
region: us-east-1
network:
  cidr: 10.40.0.0/16
  zones: 2
  endpoints: [sqs, ecr.api, ecr.dkr, logs, secretsmanager, s3, dynamodb]
  nat: true
domain:
  zone: example.com
  name: {DOMAIN}
queue:
  visibility_timeout: 120s
  retention: 4d
  dead_letter: {{ max_receives: 5, retention: 14d }}
services:
  api: {{ role: api, cpu: 256, memory: 512, count: 2, port: 8080, health: /healthz, public: true }}
  worker: {{ role: worker, cpu: 256, memory: 512, count: 2 }}
llm:
  base_url: http://127.0.0.1:{model_port}/v1
  model: katan-echo
  api_key: {{ secret: {name}/model }}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run by scripts/deployed: a moto server of its own with IAM enforced, root or sudo, socat, Chromium"]
async fn deployed_stack_chats_under_iam_and_rolls_out_without_downtime() {
    let moto = endpoint();
    let work = Workdir::new();
    let dir = work.dir.path();
    let name = unique_stack("deployed");

    // Identities, then IAM enforced: from here on, a call is allowed only by a policy.
    let iam = aws_sdk_iam::Client::new(&crate::harness::sdk_config());
    let admin = identity(&iam, "aira-admin", json!({"Effect": "Allow", "Action": "*", "Resource": "*"})).await;
    let ecs_principal = identity(
        &iam,
        "ecs-tasks.amazonaws.com",
        json!({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}),
    )
    .await;
    let route53 = aws_sdk_route53::Client::new(&crate::harness::sdk_config());
    route53.create_hosted_zone().name("example.com").caller_reference(&name).send().await.unwrap();
    let enforced = reqwest::Client::new()
        .post(format!("{moto}/moto-api/reset-auth"))
        .header("content-type", "text/plain")
        .body("0")
        .send()
        .await
        .unwrap();
    assert_eq!(enforced.status(), 200);
    // The default test keys are unknown to IAM now: EC2's code for that (a query protocol, whose
    // XML errors the SDK reads from moto as from AWS).
    let unknown = aws_sdk_ec2::Client::new(&crate::harness::sdk_config()).describe_vpcs().send().await;
    let code = unknown.as_ref().err().and_then(aws_sdk_ec2::error::ProvideErrorMetadata::code);
    assert_eq!(code, Some("AuthFailure"), "moto enforces IAM: the default test keys are refused now");
    let admin_conf = admin.config(&moto);

    let katan = Katan::start(dir).await;
    let registry = crate::image::Registry::start(false);
    aws_sdk_secretsmanager::Client::new(&admin_conf)
        .create_secret()
        .name(format!("{name}/model"))
        .secret_string("sk-katan")
        .send()
        .await
        .unwrap();
    // aira's calls and the tasks' go through the conforming proxy, which reports the harness's
    // tasks in `DescribeServices` and keeps DynamoDB's item writes atomic.
    let rewrites = Rewrites::default();
    let proxy = Proxy::start(&moto, Faults { rewrite: rewrites.clone(), ..Default::default() }).await;
    let proxy_port: u16 = proxy.url.rsplit(':').next().unwrap().parse().unwrap();
    // The harness's ECS reads the services through the proxy, which keeps what aira sent.
    let network = vpc::Network::start(aws_sdk_ec2::Client::new(&admin_conf), "us-east-1").await;
    let host = task::Host::start(
        dir.join("ecs"),
        proxy_port,
        network.clone(),
        katan.port,
        registry.addr.clone(),
        aws_sdk_ecs::Client::new(&admin.config(&proxy.url)),
        aws_sdk_sts::Client::new(&ecs_principal.config(&moto)),
    )
    .await;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&admin_conf);
    let agent = ecs::Agent::start(host.clone(), rewrites.clone(), elb.clone());

    let file = dir.join("aira.yaml");
    std::fs::write(&file, stack_file(&name, katan.port)).unwrap();
    let file = file.to_str().unwrap();
    let runtime = crate::image::static_runtime();
    let repository = format!("{}/aira/runtime", registry.addr);
    // `unchecked`: aira's own reachability check bypassed (its test-only switch).
    let up = |binary: PathBuf, unchecked: bool| {
        let (proxy, repository, mut admin) = (proxy.url.clone(), repository.clone(), admin.env());
        if unchecked {
            admin.push(("AIRA_TEST_SKIP_REACHABILITY", "1"));
        }
        async move {
            let args = [
                "up",
                file,
                "--yes",
                "--timeout",
                "10m",
                "--endpoint-url",
                &proxy,
                "--registry",
                &repository,
                "--insecure-registry",
                "--runtime-binary",
                binary.to_str().unwrap(),
            ];
            let started = Instant::now();
            let run = aira_env(dir, &args, &admin).await;
            (run, started.elapsed())
        }
    };
    let (first, took) = up(runtime.clone(), false).await;
    first.assert_code(0);
    eprintln!("first aira up: {:.1} s", took.as_secs_f64());
    // `up` waited for the harness's tasks: all four run the definitions moto holds, healthy.
    let running = agent.running();
    assert_eq!(running.iter().filter(|(s, _)| s == "api").count(), 2, "{:?}", agent.events());
    assert_eq!(running.iter().filter(|(s, _)| s == "worker").count(), 2, "{:?}", agent.events());

    // The load balancer, from moto's listeners.
    let lbs = elb.describe_load_balancers().send().await.unwrap();
    let lb_arn = lbs.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    let listeners = elb.describe_listeners().load_balancer_arn(&lb_arn).send().await.unwrap();
    let by_port = |p: i32| {
        listeners.listeners().iter().find(|l| l.port() == Some(p)).unwrap_or_else(|| panic!("no listener on {p}"))
    };
    let redirect = by_port(80).default_actions()[0].redirect_config().expect("the HTTP listener redirects");
    let redirect = lb::Redirect {
        protocol: redirect.protocol().unwrap_or("#{protocol}").to_string(),
        port: redirect.port().unwrap_or("#{port}").to_string(),
        status: if redirect.status_code().map(|s| s.as_str()) == Some("HTTP_301") { 301 } else { 302 },
    };
    let https = by_port(443);
    assert_eq!(https.ssl_policy().map(|p| p.starts_with("ELBSecurityPolicy")), Some(true));
    let tg_arn = https.default_actions()[0].target_group_arn().expect("the HTTPS listener forwards").to_string();
    let group = agent.group(&tg_arn).await;
    let from_lb = group.source.clone();
    let (ca, cert, key) = certificate(dir, DOMAIN);
    let routes = lb::Routes::new(group.clone());
    let listeners = lb::Listeners::start(routes.clone(), redirect, &cert, &key).await;
    let ca_pem = std::fs::read(&ca).unwrap();
    let base = format!("https://{DOMAIN}:{}", listeners.https.port());

    // The network the tasks run in, as the harness reads it from moto (not as aira planned it):
    // the AWS services through their endpoints, the model through NAT, and an api task's port
    // open to the load balancer's groups only.
    let (api, worker) = (agent.task_of("api"), agent.task_of("worker"));
    let path = |to: vpc::Dest| network.egress(&worker.placement, &to).unwrap_or_else(|why| panic!("{to:?}: {why}"));
    let paths = [path(vpc::Dest::Aws("sqs")), path(vpc::Dest::Aws("dynamodb")), path(vpc::Dest::Internet)];
    eprintln!("the worker's paths: sqs {}; dynamodb {}; the model {}", paths[0], paths[1], paths[2]);
    assert!(paths[0].starts_with("interface endpoint vpce-"), "{paths:?}");
    assert!(paths[1].starts_with("gateway endpoint vpce-"), "{paths:?}");
    assert!(paths[2].starts_with("NAT gateway nat-"), "{paths:?}");
    let port = api.definition.ports[0];
    api.connect(port, &from_lb).await.expect("the load balancer reaches an api task");
    let refused = api.connect(port, &vpc::Source::from(&worker.placement)).await.err();
    eprintln!("a worker connecting to an api task's port {port}: {refused:?}");
    assert!(
        refused.is_some_and(|why| why.contains("admit no TCP")),
        "an api task's port is open beyond the load balancer"
    );

    // HTTP answers with the listener's redirect to HTTPS.
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain.get(format!("http://{}/chat?x=1", listeners.http)).header("host", DOMAIN).send().await.unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], format!("https://{DOMAIN}:443/chat?x=1").as_str());

    // A browser signs up, consents, chats and sees the answer, through the HTTPS listener.
    let browser = Command::new("node")
        .arg("deployed.mjs")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/web-tests"))
        .env("AIRA_DEPLOYED_URL", &base)
        .env("AIRA_DEPLOYED_RESOLVE", format!("MAP {DOMAIN} 127.0.0.1"))
        .env("AIRA_DEPLOYED_SPKI", spki(&cert))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&browser.stdout).into_owned() + &String::from_utf8_lossy(&browser.stderr);
    assert!(browser.status.success(), "the browser's chat through the load balancer:\n{said}");
    assert!(said.contains("answered: "), "{said}");
    eprintln!("{said}");

    // A preview on the stack answers its own host through the same load balancer, from its own
    // tasks and table: a user signed up there is unknown to the base, and its message is answered.
    let preview = aira_env(
        dir,
        &[
            "up",
            file,
            "--preview",
            "p1",
            "--yes",
            "--endpoint-url",
            &proxy.url,
            "--registry",
            &repository,
            "--insecure-registry",
            "--runtime-binary",
            runtime.to_str().unwrap(),
        ],
        &admin.env(),
    )
    .await;
    preview.assert_code(0);
    let https_arn = https.listener_arn().unwrap();
    let rules = elb.describe_rules().listener_arn(https_arn).send().await.unwrap();
    let mut host_rules = Vec::new();
    for r in rules.rules().iter().filter(|r| r.is_default() != Some(true)) {
        let host = r.conditions()[0].host_header_config().map(|h| h.values()[0].clone()).unwrap_or_default();
        let priority: u32 = r.priority().unwrap_or_default().parse().unwrap_or(u32::MAX);
        host_rules.push((priority, host, r.actions()[0].target_group_arn().unwrap_or_default().to_string()));
    }
    host_rules.sort();
    let preview_host = format!("p1.{DOMAIN}");
    assert_eq!(host_rules.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), vec![preview_host.clone()]);
    let mut preview_routes = Vec::new();
    for (_, host, tg) in &host_rules {
        preview_routes.push((host.clone(), agent.group(tg).await));
    }
    let preview_group = preview_routes[0].1.clone();
    routes.set(preview_routes);
    let preview_base = base.replace(DOMAIN, &preview_host);
    let answered = load::one_chat(&preview_host, listeners.https, &ca_pem, &preview_base).await;
    assert!(answered.starts_with("answered: ") && answered.contains("hello preview"), "{answered}");
    eprintln!("the preview p1 answered at {preview_host}: {answered}");
    let served = preview_group.served.load(std::sync::atomic::Ordering::Relaxed);
    assert!(served > 0, "the preview's target group served nothing");
    // The same user on the base is a new sign-up: the two hosts are two deployments.
    let base_client = load::client(DOMAIN, listeners.https, &ca_pem, None);
    let signup = base_client
        .post(format!("{base}/v1/auth/signup"))
        .json(&json!({"email": "preview@example.com", "password": "correct horse battery", "keep_history": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201, "the base knew the preview's user");
    assert_eq!(
        preview_group.served.load(std::sync::atomic::Ordering::Relaxed),
        served,
        "the base's host reached the preview"
    );
    let down_args = ["down", file, "--preview", "p1", "--yes", "--endpoint-url", &proxy.url];
    aira_env(dir, &down_args, &admin.env()).await.assert_code(0);
    routes.set(Vec::new());

    let clients: Vec<reqwest::Client> =
        load::sources(20).into_iter().map(|ip| load::client(DOMAIN, listeners.https, &ca_pem, Some(ip))).collect();

    // The network's control: without NAT (aira's own check, which refuses the file, bypassed)
    // the worker's model is out of reach: its connections are refused, the message waits in the
    // queue, and with NAT back it is answered once.
    let no_nat = stack_file(&name, katan.port).replace("nat: true", "nat: false");
    std::fs::write(file, &no_nat).unwrap();
    let checked = aira_env(dir, &["plan", file, "--endpoint-url", &proxy.url], &admin.env()).await;
    assert_ne!(checked.code, 0, "aira's reachability check let a worker without NAT through:\n{}", checked.stderr);
    assert!(checked.stderr.contains("cannot reach its model"), "{}", checked.stderr);
    let (unchecked, _) = up(runtime.clone(), true).await;
    unchecked.assert_code(0);
    eprintln!("aira up with nat: false, unchecked:\n{}", unchecked.stderr);
    network.refresh().await;
    let refused_before = network.refused(&vpc::Dest::Internet).len();
    let probe = load::Load::start(
        base.clone(),
        clients[..1].to_vec(),
        USERS + CONTROL_USERS + 1,
        1,
        Duration::ZERO,
        Duration::from_secs(600),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while network.refused(&vpc::Dest::Internet).len() <= refused_before || probe.seen().accepted.is_empty() {
        if Instant::now() > deadline {
            let failures = probe.seen().failures.clone();
            let paths = [vpc::Dest::Internet, vpc::Dest::Aws("sqs"), vpc::Dest::Aws("dynamodb")]
                .map(|to| (network.egress(&worker.placement, &to), network.refused(&to)));
            panic!("no connection to the model refused without NAT; the worker's paths and refusals (model, sqs, dynamodb): {paths:?}; the probe's failures: {failures:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more seconds: the worker keeps trying (its outage budget) and keeps being refused.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refused = network.refused(&vpc::Dest::Internet);
    let control_refused = refused.len() - refused_before;
    eprintln!("control (no NAT): {control_refused} connections to the model refused, e.g. {:?}", refused.last());
    assert_eq!(probe.seen().answered(), 0, "a message was answered without a way to the model");
    std::fs::write(file, stack_file(&name, katan.port)).unwrap();
    let (restored, _) = up(runtime.clone(), false).await;
    restored.assert_code(0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while {
        let seen = probe.seen(); // one lock: a second in the same expression would wait on the first
        seen.answered() < seen.accepted.len()
    } {
        assert!(Instant::now() < deadline, "the message held without NAT was not answered with NAT back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let probed = probe.stop().await;
    assert_eq!((probed.lost(), probed.answered_twice(), probed.mismatched_answers), (0, 0, 0), "{:?}", probed.answers);

    // 200 users chat; the image changes and `up` rolls it out under them.
    let calls_before = katan.calls();
    // Sign-ups spread over 90 s; a message every minute or so (reading, typing): the rate a
    // 2-core machine running moto, the model and four tasks answers in well under a second.
    let users =
        load::Load::start(base.clone(), clients.clone(), 0, USERS, Duration::from_secs(90), Duration::from_secs(60));
    let started = Instant::now();
    while users.seen().chatting < USERS {
        let (chatting, accepted, p50, p99) = {
            let seen = users.seen();
            (seen.chatting, seen.accepted.len(), seen.latency_ms(0.5), seen.latency_ms(0.99))
        };
        eprintln!(
            "load {:3.0} s: {chatting} users chatting, {accepted} messages, p50 {p50} ms, p99 {p99} ms",
            started.elapsed().as_secs_f64()
        );
        assert!(started.elapsed() < Duration::from_secs(300), "not every user chats: {:?}", users.seen().failures);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let steady = users.seen().latency_ms(0.99);
    let changed = another_image(&runtime, dir, 2);
    let before: Vec<String> = agent.running().iter().map(|(_, t)| t.definition.arn.clone()).collect();
    let (second, rollout) = up(changed, false).await;
    second.assert_code(0);
    eprintln!("second aira up ({:.1} s):\n{}", rollout.as_secs_f64(), second.stderr);
    let after = agent.running();
    assert_eq!(after.len(), 4, "{:?}", agent.events());
    assert!(
        after.iter().all(|(_, t)| !before.contains(&t.definition.arn)),
        "every task runs the new definitions: {:#?}",
        agent.events()
    );
    // The rollout ran with what aira sent, read from the proxy's log (not ECS's defaults).
    let sent = proxy.take_requests();
    for service in ["api", "worker"] {
        let last = sent
            .iter()
            .rev()
            .filter(|r| r.status == 200 && (r.call == "ecs:CreateService" || r.call == "ecs:UpdateService"))
            .map(|r| r.json())
            .filter(|b| b["service"] == service || b["serviceName"] == service)
            .find(|b| b.get("deploymentConfiguration").is_some())
            .unwrap_or_else(|| panic!("aira sent {service} no deployment configuration"));
        let (d, used) = (&last["deploymentConfiguration"], agent.settings(service));
        assert!(d["minimumHealthyPercent"].is_u64() && d["maximumPercent"].is_u64(), "{service}: {last}");
        for key in ["minimumHealthyPercent", "maximumPercent"] {
            assert_eq!(used[key], d[key], "{service} rolled with the {key} aira sent");
        }
        if let Some(grace) = last.get("healthCheckGracePeriodSeconds") {
            assert_eq!(&used["healthCheckGracePeriodSeconds"], grace, "{service} waited the grace aira sent");
        }
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let seen = users.stop().await;
    let calls = katan.calls() - calls_before;
    let double = seen.answered_twice() as u64 + calls.saturating_sub(seen.accepted.len() as u64);
    let mut report = json!({
        "failed_requests": seen.failed_requests,
        "lost_messages": seen.lost(),
        "double_answers": double,
        "unfinished_streams": seen.unfinished_streams,
        "mismatched_answers": seen.mismatched_answers,
        "stream_mismatches": seen.stream_mismatches,
        "deltas": seen.deltas,
        "rollout_s": (rollout.as_secs_f64() * 10.0).round() / 10.0,
        "users": USERS,
        "requests": seen.requests,
        "messages": seen.accepted.len(),
        "answered": seen.answered(),
        "model_calls": calls,
        "resumed_streams": seen.resumed_streams,
        "p50_ms": seen.latency_ms(0.5),
        "p99_ms": seen.latency_ms(0.99),
        "p99_before_rollout_ms": steady,
    });
    eprintln!("report: {report}\nfailures seen: {:?}", seen.failures);
    eprintln!("ECS: {:#?}", agent.events());
    assert!(seen.accepted.len() > USERS, "every user chatted: {report}");

    // The negative control: the same rollout with a minimum healthy percent of 0 (a broken
    // setting, as if changed behind aira's back) stops both api tasks before their successors
    // serve, and the users see it.
    rewrites.deployment_override("api", Some(json!({"minimumHealthyPercent": 0, "maximumPercent": 100})));
    let control = load::Load::start(
        base.clone(),
        clients.clone(),
        USERS + 1,
        CONTROL_USERS,
        Duration::ZERO,
        Duration::from_secs(1),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.seen().chatting < CONTROL_USERS {
        if Instant::now() > deadline {
            let failures = control.seen().failures.clone(); // not while panicking with the lock
            panic!("the control's users do not chat: {failures:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (controlled, _) = up(another_image(&runtime, dir, 3), false).await;
    controlled.assert_code(0);
    assert_eq!(agent.settings("api")["minimumHealthyPercent"], 0, "the control rolled with its broken setting");
    let control = control.stop().await;
    rewrites.deployment_override("api", None);
    report["control_failed_requests"] = json!(control.failed_requests);
    report["control_refused_connections"] = json!(control_refused);
    eprintln!("control (minimumHealthyPercent 0): {} failed requests of {}", control.failed_requests, control.requests);
    assert!(
        control.failed_requests > 0,
        "a rollout with a minimum healthy percent of 0 showed no failed request: the harness cannot fail ({:?})",
        agent.events()
    );

    // One action taken from the worker's role: the worker's calls are refused, and it says so.
    let iam = aws_sdk_iam::Client::new(&admin_conf);
    let role = format!("{name}-worker");
    let policy_name = iam.list_role_policies().role_name(&role).send().await.unwrap().policy_names()[0].clone();
    let original =
        iam.get_role_policy().role_name(&role).policy_name(&policy_name).send().await.unwrap().policy_document;
    let original = percent_encoding::percent_decode_str(&original).decode_utf8().unwrap().to_string();
    let mut document: Value = serde_json::from_str(&original).unwrap();
    for s in document["Statement"].as_array_mut().unwrap() {
        if let Some(actions) = s["Action"].as_array_mut() {
            actions.retain(|a| a != "sqs:DeleteMessage");
        }
    }
    iam.put_role_policy()
        .role_name(&role)
        .policy_name(&policy_name)
        .policy_document(document.to_string())
        .send()
        .await
        .unwrap();
    let probe =
        load::Load::start(base.clone(), clients[..1].to_vec(), USERS, 1, Duration::ZERO, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    let denied = loop {
        let workers: Vec<String> =
            agent.running().iter().filter(|(s, _)| s == "worker").map(|(_, t)| t.log()).collect();
        // A message still in flight from the users before can meet the refusal first: the probe's
        // own must have been sent too.
        let sent = !probe.seen().accepted.is_empty();
        if let Some(line) = workers.iter().flat_map(|l| l.lines()).find(|l| l.contains("AccessDenied")).filter(|_| sent)
        {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no AccessDenied in the workers' logs:\n{}", workers.join("\n---\n"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(denied.contains("DeleteMessage") || denied.contains("delete"), "{denied}");
    eprintln!("the worker without sqs:DeleteMessage logged: {denied}");
    iam.put_role_policy().role_name(&role).policy_name(&policy_name).policy_document(original).send().await.unwrap();
    // The message taken while the worker could not delete it is answered once, after all.
    let probed = probe.stop().await;
    assert!(!probed.accepted.is_empty(), "the probe sent a message: {:?}", probed.failures);
    assert_eq!(
        (probed.lost(), probed.answered_twice(), probed.mismatched_answers),
        (0, 0, 0),
        "the probe's messages: {:?}",
        probed.answers
    );

    // IAM in the refusing direction, each with its code.
    let refusals = iam::refusals(&moto, &proxy.url, &admin_conf, &ecs_principal.config(&moto), &name).await;
    eprintln!("IAM refusals: {refusals}");
    assert_eq!(refusals, iam::expected(), "each refused with AWS's code");
    report["iam_refusals"] = refusals;

    // `down` removes the services; ECS stops their tasks.
    aira_env(dir, &["down", file, "--yes", "--endpoint-url", &proxy.url], &admin.env()).await.assert_code(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !agent.running().is_empty() {
        assert!(Instant::now() < deadline, "tasks still running after down: {:?}", agent.events());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    agent.stop_all().await;

    // The last line scripts/deployed prints.
    println!("{report}");
    for key in [
        "failed_requests",
        "lost_messages",
        "double_answers",
        "unfinished_streams",
        "mismatched_answers",
        "stream_mismatches",
    ] {
        assert_eq!(report[key], 0, "{key}: {report}");
    }
    // Streaming was on: answers arrived in pieces (a count that is 0 when the worker asks for
    // whole answers, or the event stream sends none).
    assert!(report["deltas"].as_u64() > Some(0), "no answer streamed: {report}");
}
