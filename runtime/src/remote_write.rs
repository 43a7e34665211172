//! Pushes the process's metrics with the Prometheus remote-write protocol 1.0: every interval,
//! on a task of its own, everything the registry holds (what `/metrics` shows) as one
//! snappy-compressed protobuf `WriteRequest`, SigV4-signed for `aps` (Amazon Managed Service for
//! Prometheus) with the AWS credential chain.
//!
//! A push never slows a request: it runs on its own task, takes the registry's values (the same
//! short, I/O-free read as a scrape) before any I/O, is bounded by a timeout, and a failed push is
//! dropped: the next one carries the current cumulative values.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::proto::{MetricFamily, MetricType};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::sigv4::{error_chain, sign_headers, CachedCredentials};

/// The SigV4 signing name of Amazon Managed Service for Prometheus.
const SIGNING_NAME: &str = "aps";
/// The longest a push may take (less when the interval is shorter), so pushes never pile up.
const MAX_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// The last push on shutdown must not hold the exit back for long.
const FINAL_PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// A failing receiver is logged once per this period, not on every push.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How much of a refusal's body the log quotes.
const MAX_BODY_QUOTED: usize = 300;
/// The ECS task metadata endpoint's bound: the labels must not wait long for it.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// The remote-write 1.0 messages (prometheus/prompb `remote.proto` and `types.proto`), only
/// the fields a sender of samples fills.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Sorted by name, `__name__` included.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

use proto::{Label, Sample, TimeSeries, WriteRequest};

/// Which command pushes: the `service` label, and the `job` the scrape configuration of
/// templates/monitoring/prometheus.yml gives the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Api,
    Worker,
    Serve,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Api => "api",
            Service::Worker => "worker",
            Service::Serve => "serve",
        }
    }

    /// `serve` is scraped as the api on the local target (it serves the API).
    pub fn job(self) -> &'static str {
        match self {
            Service::Api | Service::Serve => "aira-api",
            Service::Worker => "aira-worker",
        }
    }
}

/// What `AIRA_REMOTE_WRITE_*`, `AIRA_TASK_ID` and `AIRA_STACK` resolve to.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    pub url: reqwest::Url,
    pub interval: Duration,
    pub service: Service,
    /// The `task` label when not on ECS; the host name when unset.
    pub task_id: Option<String>,
    /// The `stack` label; none when unset.
    pub stack: Option<String>,
}

impl RemoteWriteConfig {
    /// One push's bound: 10 s, or the interval when shorter.
    pub fn timeout(&self) -> Duration {
        self.interval.min(MAX_PUSH_TIMEOUT)
    }
}

/// The running pusher; [`Pushing::stop`] ends it after one last bounded push.
pub struct Pushing {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Pushing {
    /// Nothing to stop (remote write is off).
    pub fn none() -> Pushing {
        Pushing { stop: CancellationToken::new(), task: None }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}

/// Starts pushing `metrics` per `config` on a task of its own.
pub fn spawn(config: RemoteWriteConfig, metrics: Arc<Metrics>) -> anyhow::Result<Pushing> {
    let timeout = config.timeout();
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("aira-runtime/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(config, metrics, http, stop.clone()));
    Ok(Pushing { stop, task: Some(task) })
}

async fn run(config: RemoteWriteConfig, metrics: Arc<Metrics>, http: reqwest::Client, stop: CancellationToken) {
    let setup = async {
        let labels = labels(&config, &http).await;
        let auth = auth(&config.url).await;
        (labels, auth)
    };
    let (labels, auth) = tokio::select! {
        _ = stop.cancelled() => return,
        s = setup => s,
    };
    let task = labels.iter().find(|(n, _)| n == "task").map(|(_, v)| v.clone()).unwrap_or_default();
    let signed = matches!(auth, Auth::Sigv4 { .. });
    info!(url = %redacted(&config.url), interval_secs = config.interval.as_secs(), task, signed, "remote write on");
    let pusher = Pusher { url: config.url.clone(), http, labels, auth, metrics };
    let mut warnings = Warnings::default();
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        // A push under way at shutdown is dropped: the last push below carries newer values.
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = pusher.push_and_count(config.timeout(), &mut warnings) => {}
        }
    }
    pusher.push_and_count(FINAL_PUSH_TIMEOUT.min(config.timeout()), &mut warnings).await;
}

/// How pushes are authenticated, decided once at start.
enum Auth {
    /// Plain http to a loopback address, and the chain had no credentials at start.
    Unsigned,
    /// Every other case; a push fails while credentials or the region are missing.
    Sigv4 { credentials: Option<CachedCredentials>, region: Option<String> },
}

async fn auth(url: &reqwest::Url) -> Auth {
    let conf = crate::run::aws_config().await;
    let region =
        url.host_str().and_then(region_of_host).map(str::to_string).or_else(|| conf.region().map(|r| r.to_string()));
    let credentials = conf.credentials_provider().map(CachedCredentials::new);
    if is_plain_loopback(url) {
        let found = match &credentials {
            Some(c) => matches!(tokio::time::timeout(MAX_PUSH_TIMEOUT, c.get()).await, Ok(Ok(_))),
            None => false,
        };
        if !found {
            info!("remote write unsigned: plain http to a loopback address and no AWS credentials");
            return Auth::Unsigned;
        }
    }
    Auth::Sigv4 { credentials, region }
}

/// `http://` to 127.0.0.0/8, ::1 or `localhost`: a receiver on this machine (a test, a local
/// Prometheus), the one case a push may go unsigned.
fn is_plain_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    url.scheme() == "http" && (host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback()))
}

/// The region of an Amazon Managed Service for Prometheus endpoint:
/// `aps-workspaces.<region>.amazonaws.com` or `aps-workspaces-fips.<region>.amazonaws.com`.
pub fn region_of_host(host: &str) -> Option<&str> {
    let rest = host.strip_prefix("aps-workspaces.").or_else(|| host.strip_prefix("aps-workspaces-fips."))?;
    let (region, domain) = rest.split_once('.')?;
    let aws = ["amazonaws.com", "amazonaws.com.cn"].contains(&domain);
    (aws && !region.is_empty()).then_some(region)
}

/// The task id of an ECS task ARN (`arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`): after the last `/`.
pub fn task_id_of_arn(arn: &str) -> Option<&str> {
    arn.rsplit_once('/').map(|(_, id)| id).filter(|id| !id.is_empty())
}

/// The labels added to every series: `job`, `service`, `task` and `instance` (the ECS task id,
/// else `AIRA_TASK_ID`, else the host name), `stack` when set.
async fn labels(config: &RemoteWriteConfig, http: &reqwest::Client) -> Vec<(String, String)> {
    let task = match ecs_task_id(http).await {
        Some(id) => id,
        None => config.task_id.clone().filter(|t| !t.is_empty()).unwrap_or_else(host_name),
    };
    added_labels(config.service, &task, config.stack.as_deref())
}

pub fn added_labels(service: Service, task: &str, stack: Option<&str>) -> Vec<(String, String)> {
    let mut labels = vec![
        ("job".to_string(), service.job().to_string()),
        ("service".to_string(), service.name().to_string()),
        ("task".to_string(), task.to_string()),
        ("instance".to_string(), task.to_string()),
    ];
    if let Some(stack) = stack.filter(|s| !s.is_empty()) {
        labels.push(("stack".to_string(), stack.to_string()));
    }
    labels
}

/// `TaskARN` of `${ECS_CONTAINER_METADATA_URI_V4}/task` (set by ECS in every container).
async fn ecs_task_id(http: &reqwest::Client) -> Option<String> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok().filter(|u| !u.is_empty())?;
    let url = format!("{}/task", base.trim_end_matches('/'));
    let answer = async {
        let resp = http.get(&url).timeout(METADATA_TIMEOUT).send().await?.error_for_status()?;
        resp.json::<serde_json::Value>().await
    };
    match answer.await {
        Ok(v) => {
            let id = v["TaskARN"].as_str().and_then(task_id_of_arn).map(str::to_string);
            if id.is_none() {
                warn!(url, "the ECS task metadata has no TaskARN; the task label falls back");
            }
            id
        }
        Err(e) => {
            warn!(url, error = error_chain(&e), "no ECS task metadata; the task label falls back");
            None
        }
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our own buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if ok && !name.is_empty() {
        name
    } else {
        "unknown".to_string()
    }
}

/// The URL without its query and credentials, for logs.
fn redacted(url: &reqwest::Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or_default(), url.path())
}

/// The series of every family, as the text exposition names them, with `added` labels (which
/// win over a metric's own of the same name); labels sorted by name; one sample at `timestamp_ms`.
pub fn series(families: &[MetricFamily], added: &[(String, String)], timestamp_ms: i64) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for family in families {
        let name = family.name();
        for m in family.get_metric() {
            let own: Vec<(&str, &str)> = m.get_label().iter().map(|l| (l.name(), l.value())).collect();
            let mut one = |suffix: &str, extra: Option<(&str, &str)>, value: f64| {
                let mut labels: Vec<Label> = own
                    .iter()
                    .copied()
                    .chain(extra)
                    .filter(|(n, _)| !added.iter().any(|(a, _)| a == n))
                    .map(|(n, v)| Label { name: n.to_string(), value: v.to_string() })
                    .collect();
                labels.extend(added.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }));
                labels.push(Label { name: "__name__".to_string(), value: format!("{name}{suffix}") });
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                out.push(TimeSeries { labels, samples: vec![Sample { value, timestamp: timestamp_ms }] });
            };
            match family.get_field_type() {
                MetricType::COUNTER => one("", None, m.get_counter().get_value()),
                MetricType::GAUGE => one("", None, m.get_gauge().get_value()),
                // The crate makes none (its own text encoder refuses them).
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut inf_seen = false;
                    for b in h.get_bucket() {
                        let bound = b.upper_bound();
                        let inf = bound.is_infinite() && bound.is_sign_positive();
                        inf_seen |= inf;
                        let le = if inf { "+Inf".to_string() } else { bound.to_string() };
                        one("_bucket", Some(("le", &le)), b.cumulative_count() as f64);
                    }
                    if !inf_seen {
                        one("_bucket", Some(("le", "+Inf")), h.get_sample_count() as f64);
                    }
                    one("_sum", None, h.get_sample_sum());
                    one("_count", None, h.get_sample_count() as f64);
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        one("", Some(("quantile", &q.quantile().to_string())), q.value());
                    }
                    one("_sum", None, s.sample_sum());
                    one("_count", None, s.sample_count() as f64);
                }
            }
        }
    }
    out
}

/// The request body: the protobuf `WriteRequest`, snappy-compressed (block format).
pub fn encode(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    let bytes = prost::Message::encode_to_vec(&WriteRequest { timeseries });
    snap::raw::Encoder::new().compress_vec(&bytes).expect("snappy takes any input under 4 GiB")
}

struct Pusher {
    url: reqwest::Url,
    http: reqwest::Client,
    labels: Vec<(String, String)>,
    auth: Auth,
    metrics: Arc<Metrics>,
}

impl Pusher {
    /// One push within `timeout`, counted; failures logged as [`Warnings`] allows.
    async fn push_and_count(&self, timeout: Duration, warnings: &mut Warnings) {
        let result = match tokio::time::timeout(timeout, self.push()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let m = &self.metrics;
        match result {
            Ok(samples) => {
                m.remote_write_requests.with_label_values(&["ok"]).inc();
                m.remote_write_samples.inc_by(samples as u64);
                if let Some(failed) = warnings.succeeded() {
                    info!(url = %redacted(&self.url), failed, "remote write succeeds again");
                }
            }
            Err(error) => {
                m.remote_write_requests.with_label_values(&["error"]).inc();
                if let Some(suppressed) = warnings.failed(Instant::now()) {
                    warn!(url = %redacted(&self.url), error, suppressed, "remote write failed; the push is dropped");
                }
            }
        }
    }

    /// Sends the registry's current values; the number of samples on success.
    async fn push(&self) -> Result<usize, String> {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let series = series(&self.metrics.gather(), &self.labels, now.as_millis() as i64);
        let samples = series.len();
        let body = encode(series);
        let headers = [
            ("content-encoding", "snappy"),
            ("content-type", "application/x-protobuf"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ];
        let mut req = self.http.post(self.url.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Auth::Sigv4 { credentials, region } = &self.auth {
            let credentials = credentials.as_ref().ok_or("no AWS credential provider")?.get().await?;
            let region = region.as_deref().ok_or("no AWS region (set AWS_REGION) for the signature")?;
            let signature =
                sign_headers(credentials, region, SIGNING_NAME, "POST", self.url.as_str(), &headers, &body)?;
            for (k, v) in signature {
                req = req.header(k, v);
            }
        }
        let mut resp = req.body(body).send().await.map_err(|e| error_chain(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(samples);
        }
        // Only the start of the answer: enough to say why, and a receiver cannot make us read much.
        let mut start = Vec::new();
        while start.len() < MAX_BODY_QUOTED {
            match resp.chunk().await {
                Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&start);
        let quoted: String = text.chars().take(MAX_BODY_QUOTED).collect();
        Err(format!("HTTP {status}: {}", quoted.trim()))
    }
}

/// Failures are logged at most once per [`WARN_EVERY`], with the count left unlogged since.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    suppressed: u64,
    /// Failures since the last success, once one was logged.
    failing: Option<u64>,
}

impl Warnings {
    /// `Some(failures not logged since the last warning)` when this failure is to be logged.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.failing = self.failing.map(|n| n + 1);
        if self.last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        self.failing.get_or_insert(1);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// `Some(failures in a row)` when a warning about them was logged: worth saying it is over.
    fn succeeded(&mut self) -> Option<u64> {
        self.failing.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

    fn names(s: &TimeSeries) -> Vec<&str> {
        s.labels.iter().map(|l| l.name.as_str()).collect()
    }

    fn label<'a>(s: &'a TimeSeries, name: &str) -> Option<&'a str> {
        s.labels.iter().find(|l| l.name == name).map(|l| l.value.as_str())
    }

    #[test]
    fn families_become_series_as_the_text_exposition_names_them() {
        let registry = Registry::new();
        let requests = IntCounterVec::new(Opts::new("t_requests_total", "h"), &["route", "method"]).unwrap();
        let gauge = IntGauge::new("t_in_flight", "h").unwrap();
        let histogram = Histogram::with_opts(HistogramOpts::new("t_seconds", "h").buckets(vec![0.5, 1.0])).unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        registry.register(Box::new(gauge.clone())).unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        requests.with_label_values(&["/v1/x", "GET"]).inc_by(3);
        gauge.set(-2);
        for v in [0.1, 0.7, 3.0] {
            histogram.observe(v);
        }
        let added = added_labels(Service::Worker, "t-1", Some("prod"));
        let series = series(&registry.gather(), &added, 1234);

        let by_name: Vec<(String, Option<&str>, f64)> = series
            .iter()
            .map(|s| (label(s, "__name__").unwrap().to_string(), label(s, "le"), s.samples[0].value))
            .collect();
        let expected = [
            ("t_in_flight", None, -2.0),
            ("t_requests_total", None, 3.0),
            ("t_seconds_bucket", Some("0.5"), 1.0),
            ("t_seconds_bucket", Some("1"), 2.0),
            ("t_seconds_bucket", Some("+Inf"), 3.0),
            ("t_seconds_sum", None, 3.8),
            ("t_seconds_count", None, 3.0),
        ];
        let expected: Vec<(String, Option<&str>, f64)> =
            expected.iter().map(|(n, le, v)| (n.to_string(), *le, *v)).collect();
        assert_eq!(by_name, expected);
        for s in &series {
            let n = names(s);
            let mut sorted = n.clone();
            sorted.sort();
            assert_eq!(n, sorted, "labels sorted by name");
            assert_eq!(s.samples, [Sample { value: s.samples[0].value, timestamp: 1234 }]);
            for (k, v) in [("job", "aira-worker"), ("service", "worker"), ("task", "t-1"), ("instance", "t-1")] {
                assert_eq!(label(s, k), Some(v), "{k} on {n:?}");
            }
            assert_eq!(label(s, "stack"), Some("prod"));
        }
        assert_eq!(
            names(&series[1]),
            ["__name__", "instance", "job", "method", "route", "service", "stack", "task"],
            "the metric's own labels are kept"
        );
        assert_eq!(label(&series[1], "route"), Some("/v1/x"));
    }

    #[test]
    fn added_labels_win_over_a_metrics_own_and_stack_is_optional() {
        let registry = Registry::new();
        let c = IntCounterVec::new(Opts::new("t_total", "h"), &["job"]).unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.with_label_values(&["theirs"]).inc();
        let series = series(&registry.gather(), &added_labels(Service::Serve, "h", None), 0);
        assert_eq!(names(&series[0]), ["__name__", "instance", "job", "service", "task"]);
        assert_eq!(label(&series[0], "job"), Some("aira-api"));
        assert!(!added_labels(Service::Api, "x", Some("")).iter().any(|(n, _)| n == "stack"), "an empty stack is none");
    }

    #[test]
    fn the_body_is_snappy_block_format_of_the_write_request() {
        let series = vec![TimeSeries {
            labels: vec![Label { name: "__name__".into(), value: "x".into() }],
            samples: vec![Sample { value: 1.5, timestamp: 7 }],
        }];
        let body = encode(series.clone());
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let decoded: WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        assert_eq!(decoded.timeseries, series);
    }

    #[test]
    fn region_comes_from_an_aps_workspaces_host() {
        assert_eq!(region_of_host("aps-workspaces.eu-west-3.amazonaws.com"), Some("eu-west-3"));
        assert_eq!(region_of_host("aps-workspaces-fips.us-gov-west-1.amazonaws.com"), Some("us-gov-west-1"));
        assert_eq!(region_of_host("aps-workspaces.cn-north-1.amazonaws.com.cn"), Some("cn-north-1"));
        assert_eq!(region_of_host("127.0.0.1"), None);
        assert_eq!(region_of_host("aps-workspaces.eu-west-3.example.com"), None);
        assert_eq!(region_of_host("prometheus.example.com"), None);
    }

    #[test]
    fn only_plain_http_to_loopback_may_go_unsigned() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(is_plain_loopback(&url("http://127.0.0.1:9090/api/v1/write")));
        assert!(is_plain_loopback(&url("http://127.1.2.3/api/v1/write")));
        assert!(is_plain_loopback(&url("http://[::1]:9090/api/v1/write")));
        assert!(is_plain_loopback(&url("http://localhost:9090/api/v1/write")));
        assert!(!is_plain_loopback(&url("https://127.0.0.1:9090/api/v1/write")));
        assert!(!is_plain_loopback(&url("http://10.0.0.1/api/v1/write")));
        assert!(!is_plain_loopback(&url(
            "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"
        )));
    }

    #[test]
    fn task_id_is_the_end_of_the_task_arn() {
        assert_eq!(task_id_of_arn("arn:aws:ecs:us-east-1:123456789012:task/aira/0123abcd"), Some("0123abcd"));
        assert_eq!(task_id_of_arn("arn:aws:ecs:us-east-1:123456789012:task/0123abcd"), Some("0123abcd"));
        assert_eq!(task_id_of_arn("no-slash"), None);
        assert_eq!(task_id_of_arn("arn:aws:ecs:r:1:task/"), None);
    }

    #[test]
    fn the_timeout_is_ten_seconds_or_the_interval() {
        let config = |secs| RemoteWriteConfig {
            url: reqwest::Url::parse("http://127.0.0.1/").unwrap(),
            interval: Duration::from_secs(secs),
            service: Service::Api,
            task_id: None,
            stack: None,
        };
        assert_eq!(config(30).timeout(), Duration::from_secs(10));
        assert_eq!(config(1).timeout(), Duration::from_secs(1));
    }

    #[test]
    fn failures_are_logged_once_a_minute() {
        let mut w = Warnings::default();
        let t0 = Instant::now();
        assert_eq!(w.failed(t0), Some(0));
        for s in 1..=59 {
            assert_eq!(w.failed(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(w.failed(t0 + Duration::from_secs(60)), Some(59));
        assert_eq!(w.succeeded(), Some(61), "the recovery after a logged failure is said once");
        assert_eq!(w.succeeded(), None);
        // A failure soon after a logged one is not logged, and its recovery neither.
        assert_eq!(w.failed(t0 + Duration::from_secs(61)), None);
        assert_eq!(w.succeeded(), None);
    }
}
