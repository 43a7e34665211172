//! The Application Load Balancer's part, built from the listeners, rules and target groups read
//! from moto: the HTTP listener's redirect, the HTTPS listener (TLS ends here, with a certificate
//! from a local CA) choosing a target group by its host-header rules (a preview's), else its
//! default action's, and forwarding to the targets that pass that group's health check, round robin,
//! with `X-Forwarded-For`/`-Proto`/`-Port` appended; deregistered targets drain (no new requests)
//! until ECS stops them. As ALB does, when no target is healthy it sends to all of them (fails open).
//! Every connection to a target, health checks included, comes from the load balancer's security
//! groups and subnets, and the VPC must admit it (`vpc.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::task::Task;
use super::vpc::Source;

type Body = BoxBody<Bytes, hyper::Error>;

/// A target group's health check, as `DescribeTargetGroups` gives it.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
    pub matcher: u16,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum State {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
}

struct Target {
    id: String,
    task: Arc<Task>,
    port: u16,
    state: State,
}

pub struct TargetGroup {
    pub check: HealthCheck,
    /// The load balancer's groups and subnets, where its connections to the targets come from.
    pub source: Source,
    pub deregistration_delay: Duration,
    targets: Mutex<Vec<Target>>,
    next: AtomicUsize,
    /// Requests the listener sent it.
    pub served: AtomicUsize,
}

/// The HTTPS listener's rules: host-header rules in priority order (as `DescribeRules` gives
/// them), then its default action.
pub struct Routes {
    default: Arc<TargetGroup>,
    hosts: Mutex<Vec<(String, Arc<TargetGroup>)>>,
}

impl Routes {
    pub fn new(default: Arc<TargetGroup>) -> Arc<Routes> {
        Arc::new(Routes { default, hosts: Mutex::new(Vec::new()) })
    }

    /// The rules, lowest priority first.
    pub fn set(&self, hosts: Vec<(String, Arc<TargetGroup>)>) {
        *self.hosts.lock().unwrap() = hosts;
    }

    /// The group of the first rule whose host matches the request's (ALB compares host names
    /// without case, and without the port), else the default action's.
    fn group_for(&self, host: &str) -> Arc<TargetGroup> {
        let host = host.split(':').next().unwrap_or(host);
        let hosts = self.hosts.lock().unwrap();
        hosts.iter().find(|(h, _)| h.eq_ignore_ascii_case(host)).map_or(self.default.clone(), |(_, g)| g.clone())
    }
}

impl TargetGroup {
    pub fn new(check: HealthCheck, deregistration_delay: Duration, source: Source) -> Arc<TargetGroup> {
        Arc::new(TargetGroup {
            check,
            source,
            deregistration_delay,
            targets: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
        })
    }

    /// Registers a task's port and starts checking it.
    pub fn register(self: &Arc<Self>, task: Arc<Task>, port: u16) {
        let id = task.id.clone();
        self.targets.lock().unwrap().push(Target { id: id.clone(), task: task.clone(), port, state: State::Initial });
        let group = self.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            loop {
                tokio::time::sleep(group.check.interval).await;
                let passed = probe(&task, port, &group).await;
                let mut targets = group.targets.lock().unwrap();
                let Some(t) = targets.iter_mut().find(|t| t.id == id) else { return };
                if t.state == State::Draining {
                    return;
                }
                (ok, failed) = if passed { (ok + 1, 0) } else { (0, failed + 1) };
                if ok >= group.check.healthy {
                    t.state = State::Healthy;
                } else if failed >= group.check.unhealthy {
                    t.state = State::Unhealthy;
                }
            }
        });
    }

    /// Stops sending new requests to the target; requests in flight finish.
    pub fn deregister(&self, id: &str) {
        if let Some(t) = self.targets.lock().unwrap().iter_mut().find(|t| t.id == id) {
            t.state = State::Draining;
        }
    }

    /// Forgets the target (ECS stopped it after the deregistration delay).
    pub fn remove(&self, id: &str) {
        self.targets.lock().unwrap().retain(|t| t.id != id);
    }

    pub fn state(&self, id: &str) -> Option<State> {
        self.targets.lock().unwrap().iter().find(|t| t.id == id).map(|t| t.state)
    }

    /// The next target for a request: a healthy one, else (failing open) any registered one.
    fn pick(&self) -> Option<(Arc<Task>, u16)> {
        let targets = self.targets.lock().unwrap();
        let healthy: Vec<&Target> = targets.iter().filter(|t| t.state == State::Healthy).collect();
        let pool =
            if healthy.is_empty() { targets.iter().filter(|t| t.state != State::Draining).collect() } else { healthy };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (!pool.is_empty()).then(|| (pool[n % pool.len()].task.clone(), pool[n % pool.len()].port))
    }
}

/// One health check request.
async fn probe(task: &Task, port: u16, group: &TargetGroup) -> bool {
    let check = &group.check;
    let req =
        Request::get(&check.path).header("host", "target").body(Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
    let answered = tokio::time::timeout(check.timeout, send(task, port, &group.source, req.unwrap())).await;
    matches!(answered, Ok(Ok(r)) if r.status().as_u16() == check.matcher)
}

/// Sends one request to a target over a connection of its own, from `source`.
async fn send(task: &Task, port: u16, source: &Source, req: Request<Body>) -> Result<Response<Incoming>, String> {
    let stream = task.connect(port, source).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// The listeners: the HTTPS one forwarding by its `Routes`, the HTTP one answering its redirect.
pub struct Listeners {
    pub https: SocketAddr,
    pub http: SocketAddr,
}

/// The HTTP listener's redirect action: `(protocol, port, status code)`.
pub struct Redirect {
    pub protocol: String,
    pub port: String,
    pub status: u16,
}

impl Listeners {
    pub async fn start(
        routes: Arc<Routes>,
        redirect: Redirect,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Listeners {
        let mut tls = super::tls_server(cert, key);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_addr = https.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = https.accept().await {
                let (acceptor, routes) = (acceptor.clone(), routes.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service =
                        hyper::service::service_fn(move |req| forward(routes.clone(), peer, https_addr.port(), req));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });

        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let redirect = Arc::new(redirect);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = http.accept().await {
                let redirect = redirect.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = redirect.clone();
                        async move {
                            // ALB's defaults: #{host} and #{path}?#{query} kept, protocol and port replaced.
                            let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
                            let host = host.split(':').next().unwrap_or(host);
                            let location = format!(
                                "{}://{host}:{}{}",
                                r.protocol.to_lowercase(),
                                r.port,
                                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/")
                            );
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(r.status)
                                    .header("location", location)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        Listeners { https: https_addr, http: http_addr }
    }
}

/// A request on the HTTPS listener, to a target; 503 with no target, 502 when it cannot be reached.
async fn forward(
    routes: Arc<Routes>,
    peer: SocketAddr,
    port: u16,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let status = |code: u16| {
        Ok(Response::builder().status(code).body(Full::new(Bytes::new()).map_err(|n| match n {}).boxed()).unwrap())
    };
    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
    let group = routes.group_for(host);
    let Some((task, target)) = group.pick() else { return status(503) };
    group.served.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    let forwarded = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    parts.headers.insert("x-forwarded-for", forwarded.parse().unwrap());
    parts.headers.insert("x-forwarded-proto", "https".parse().unwrap());
    parts.headers.insert("x-forwarded-port", port.to_string().parse().unwrap());
    match send(&task, target, &group.source, Request::from_parts(parts, body.boxed())).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        // ALB's body names no cause; the harness's does, for the report's failures.
        Err(e) => Ok(Response::builder()
            .status(502)
            .body(Full::new(Bytes::from(format!("target {}:{target}: {e}", task.id))).map_err(|n| match n {}).boxed())
            .unwrap()),
    }
}
