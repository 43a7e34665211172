//! Wiring of the commands, and the one shutdown path: SIGTERM or ctrl-c cancels one
//! token; the HTTP server stops accepting and drains, the relay stops, the worker stops
//! polling and finishes or hands back its in-flight messages; the remote-write pusher makes
//! its last (bounded) push; then the process exits.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{app, ops_app, AppState};
use crate::config::{resolve_limits, resolve_llm, resolve_remote_write, resolve_worker, AwsArgs, AwsService, Common};
use crate::group_commit::Durability;
use crate::metrics::Metrics;
use crate::queue::sqlite::{move_queue_file, RedrivePolicy, SqliteQueue};
use crate::queue::sqs::SqsQueue;
use crate::queue::Queue;
use crate::relay::Relay;
use crate::remote_write::{self, Pushing, RemoteWriteConfig, Service};
use crate::store::dynamo::DynamoStore;
use crate::store::notify::Notifying;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::worker::Worker;

pub const EMBEDDED_QUEUE: &str = "aira";
pub const EMBEDDED_DLQ: &str = "aira-dlq";

/// JSON logs on stdout; filter from `AIRA_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .try_init();
}

/// A token cancelled on SIGTERM or ctrl-c.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        info!("shutdown requested");
        t.cancel();
    });
    token
}

/// The embedded backends in `data`: store, queue with dead-letter queue, and that DLQ.
pub struct Embedded {
    pub store: Arc<SqliteStore>,
    pub queue: Arc<SqliteQueue>,
    pub dead_letter: Arc<SqliteQueue>,
}

pub fn open_embedded(data: &Path, max_receives: u32, durability: Durability) -> anyhow::Result<Embedded> {
    std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
    let path = data.join("store.sqlite");
    // Data folders written before the queue moved into the store's file have its own file.
    let moved = move_queue_file(&data.join("queue.sqlite"), &path)?;
    if moved > 0 {
        info!(messages = moved, "moved the queue into store.sqlite");
    }
    let store = SqliteStore::open(&path, durability)?;
    let policy = RedrivePolicy { dead_letter_queue: EMBEDDED_DLQ.into(), max_receives };
    let queue = SqliteQueue::new(store.db(), EMBEDDED_QUEUE, Some(policy));
    let dead_letter = SqliteQueue::new(store.db(), EMBEDDED_DLQ, None);
    // One file and one writer: an accepted message is queued in its own transaction.
    let store = store.with_queue(queue.link());
    Ok(Embedded { store: Arc::new(store), queue: Arc::new(queue), dead_letter: Arc::new(dead_letter) })
}

/// The SDK's standard configuration chain; `AWS_ENDPOINT_URL` points it at moto or LocalStack.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(aira_unify::https_client()).load().await
}

pub async fn open_aws(args: &AwsArgs) -> (Arc<dyn Store>, Arc<dyn Queue>) {
    let conf = aws_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&conf), &args.table);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&conf), &args.queue_url);
    (Arc::new(store), Arc::new(queue))
}

async fn serve_http(listen: SocketAddr, state: AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
    info!(listen = %listener.local_addr()?, "api listening");
    // The peer address reaches the rate limits of the account routes (`auth::ClientAddr`).
    let app = app(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await.context("http server")
}

/// The operations listener (`/metrics`, `/readyz`, `/healthz`), bound before the caller goes on
/// so that a taken address fails the start; serves until `shutdown`. The future it returns ends
/// when the listener has stopped (at once when there is none).
async fn serve_ops(
    listen: Option<SocketAddr>,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let task = match listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("bind {listen} (metrics listen)"))?;
            info!(listen = %listener.local_addr()?, "operations listening");
            let serve = axum::serve(listener, ops_app(state)).with_graceful_shutdown(shutdown.cancelled_owned());
            Some(tokio::spawn(async move { serve.await }))
        }
        None => None,
    };
    Ok(async move {
        if let Some(t) = task {
            let _ = t.await;
        }
    })
}

/// The remote-write pusher when `AIRA_REMOTE_WRITE_URL` is set. The caller stops it after
/// everything else, so that its last push carries the final values.
fn push_metrics(config: Option<RemoteWriteConfig>, metrics: Arc<Metrics>) -> anyhow::Result<Pushing> {
    match config {
        Some(config) => remote_write::spawn(config, metrics),
        None => Ok(Pushing::none()),
    }
}

fn relay(store: Arc<dyn Store>, queue: Arc<dyn Queue>, metrics: Arc<Metrics>, c: &Common) -> Arc<Relay> {
    Arc::new(Relay::new(
        store,
        queue,
        metrics,
        Duration::from_secs(c.relay_interval_secs.max(1)),
        Duration::from_secs(c.relay_min_age_secs),
    ))
}

/// `serve`: api, relay and worker in one process on the embedded backends.
pub async fn serve(
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    data: &Path,
    c: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let remote = resolve_remote_write(c, Service::Serve)?;
    let e = open_embedded(data, c.max_receives, c.sqlite_synchronous)?;
    let metrics = Arc::new(Metrics::new());
    let notifying = Notifying::new(e.store);
    let updates = notifying.updates();
    let store: Arc<dyn Store> = Arc::new(notifying);
    let queue: Arc<dyn Queue> = e.queue;
    let worker =
        Arc::new(Worker::new(queue.clone(), store.clone(), resolve_llm(c).await?, metrics.clone(), resolve_worker(c)));
    let mut state = AppState::new(store.clone(), queue.clone(), metrics.clone(), resolve_limits(c));
    state.updates = Some(updates);
    state.trust_forwarded = c.behind_load_balancer;
    state.shutdown = shutdown.clone();
    let queue_for_count = queue.clone();
    let relay = relay(store, queue, metrics.clone(), c);
    state.relay_wake = relay.wake.clone();
    let ops = serve_ops(metrics_listen, state.clone(), shutdown.clone()).await?;
    let push = push_metrics(remote, metrics)?;
    let w = on_own_thread("aira-worker", worker.run(shutdown.clone()))?;
    let r = tokio::spawn(relay.run(shutdown.clone()));
    let b = tokio::spawn(count_backlog(queue_for_count, state.clone(), Duration::from_secs(1), shutdown.clone()));
    let http = serve_http(listen, state, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::join!(w, r, ops, b);
    push.stop().await;
    http
}

/// Counts the queue every `every` into `backlog` (`Limits::max_backlog`); the API adds each
/// post it accepts in between. Every API process counts: without a count the bound would see
/// only the posts it accepted, which never go down. A count is valid for three periods, so a
/// few failed counts in a row make the bound refuse nothing rather than hold a stale figure.
/// In `serve` the count is one local read every second; on SQS one `GetQueueAttributes` every
/// 10 s (its figures are approximate and lag by up to a minute: the bound is a soft one).
pub async fn count_backlog(queue: Arc<dyn Queue>, state: AppState, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue.approximate_len().await {
            Ok(n) => {
                state.backlog.counted(n, crate::model::now_ms(), every * 3);
                state.metrics.queue_backlog.set(n as i64);
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "counting the queue failed"),
        }
        state.report_limiters();
    }
}

/// Runs `task` on a runtime of its own, on one thread of its own; resolves when it ends. The
/// worker in `serve`: on the shared runtime, under a flood of requests, each of its awaits
/// waited for a turn behind thousands of connection tasks, and it answered about 100 messages
/// a second; on its own thread the OS gives it its share of the cores (docs/performance.md).
fn on_own_thread(
    name: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        rt.block_on(task);
        let _ = done.send(());
    })?;
    Ok(ended)
}

/// `api`: the API and the outbox relay on SQS + DynamoDB.
pub async fn api(listen: SocketAddr, service: &AwsService, shutdown: CancellationToken) -> anyhow::Result<()> {
    let c = &service.common;
    let remote = resolve_remote_write(c, Service::Api)?;
    let (store, queue) = open_aws(&service.aws).await;
    let metrics = Arc::new(Metrics::new());
    let mut state = AppState::new(store.clone(), queue.clone(), metrics.clone(), resolve_limits(c));
    state.trust_forwarded = c.behind_load_balancer;
    state.shutdown = shutdown.clone();
    let relay = relay(store, queue.clone(), metrics.clone(), c);
    state.relay_wake = relay.wake.clone();
    let count = Duration::from_secs(c.backlog_count_secs.max(1));
    let b = tokio::spawn(count_backlog(queue, state.clone(), count, shutdown.clone()));
    let ops = serve_ops(service.metrics_listen, state.clone(), shutdown.clone()).await?;
    let push = push_metrics(remote, metrics)?;
    let r = tokio::spawn(relay.run(shutdown.clone()));
    let http = serve_http(listen, state, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::join!(r, ops, b);
    push.stop().await;
    http
}

/// `worker`: the worker on SQS + DynamoDB, with the operations listener if `metrics_listen` is set.
pub async fn worker(service: &AwsService, shutdown: CancellationToken) -> anyhow::Result<()> {
    let c = &service.common;
    let remote = resolve_remote_write(c, Service::Worker)?;
    let (store, queue) = open_aws(&service.aws).await;
    let metrics = Arc::new(Metrics::new());
    let worker =
        Arc::new(Worker::new(queue.clone(), store.clone(), resolve_llm(c).await?, metrics.clone(), resolve_worker(c)));
    let state = AppState::new(store, queue, metrics.clone(), resolve_limits(c));
    let ops = serve_ops(service.metrics_listen, state, shutdown.clone()).await?;
    let push = push_metrics(remote, metrics)?;
    worker.run(shutdown.clone()).await;
    shutdown.cancel();
    ops.await;
    push.stop().await;
    Ok(())
}

/// `aira-runtime health URL`: `GET URL`, success only on HTTP 200.
pub async fn health(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(timeout).build().context("create the HTTP client")?;
    let resp = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    match resp.status().as_u16() {
        200 => Ok(()),
        status => anyhow::bail!("GET {url}: HTTP {status}"),
    }
}
