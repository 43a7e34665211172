//! Every metric the runtime exports, in one registry per process (one per test).
//! Labels carry route templates, methods, statuses and error kinds only: never user content.

use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What the worker did with one delivery: the label of `aira_worker_messages_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Failed,
    BudgetSpent,
    Retried,
    DeadLettered,
    Duplicate,
    Busy,
    HandedBack,
    LeaseLost,
    Missing,
    /// The user stopped it: the part written until then is its answer.
    Stopped,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::Answered,
        Outcome::Failed,
        Outcome::BudgetSpent,
        Outcome::Retried,
        Outcome::DeadLettered,
        Outcome::Duplicate,
        Outcome::Busy,
        Outcome::HandedBack,
        Outcome::LeaseLost,
        Outcome::Missing,
        Outcome::Stopped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Failed => "failed",
            Outcome::BudgetSpent => "budget_spent",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Duplicate => "duplicate",
            Outcome::Busy => "busy",
            Outcome::HandedBack => "handed_back",
            Outcome::LeaseLost => "lease_lost",
            Outcome::Missing => "missing",
            Outcome::Stopped => "stopped",
        }
    }
}

/// The kinds of `aira_llm_tokens_total`.
pub const PROMPT_TOKENS: &str = "prompt";
pub const COMPLETION_TOKENS: &str = "completion";
pub const TOKEN_KINDS: [&str; 2] = [PROMPT_TOKENS, COMPLETION_TOKENS];

pub struct Metrics {
    registry: Registry,
    /// `aira_http_requests_total{route,method,status}`
    pub http_requests: IntCounterVec,
    /// `aira_http_request_duration_seconds{route,method}`
    pub http_duration: HistogramVec,
    /// `aira_messages_accepted_total`: messages recorded and answered 202.
    pub messages_accepted: IntCounter,
    /// `aira_messages_shed_total`: posts refused with 503 `busy` while the backlog was at its bound.
    pub messages_shed: IntCounter,
    /// `aira_rate_limited_total`
    pub rate_limited: IntCounter,
    /// `aira_queue_sent_total`
    pub queue_sent: IntCounter,
    /// `aira_queue_received_total`
    pub queue_received: IntCounter,
    /// `aira_queue_deleted_total`
    pub queue_deleted: IntCounter,
    /// `aira_queue_send_errors_total`
    pub queue_send_errors: IntCounter,
    /// `aira_outbox_backlog`: outbox rows not yet relayed (sampled by the relay).
    pub outbox_backlog: IntGauge,
    /// `aira_outbox_relayed_total`: messages sent by the relay (not the API's fast path).
    pub outbox_relayed: IntCounter,
    /// `aira_queue_backlog`: the queue's messages as last counted (`serve`, every second).
    pub queue_backlog: IntGauge,
    /// `aira_worker_in_flight`
    pub worker_in_flight: IntGauge,
    /// `aira_worker_messages_total{outcome}`: one series per [`Outcome`].
    pub worker_messages: IntCounterVec,
    /// `aira_worker_dead_lettered_total`: messages given up after max receives (to the DLQ).
    pub dead_lettered: IntCounter,
    /// `aira_llm_request_duration_seconds`
    pub llm_duration: Histogram,
    /// `aira_llm_errors_total{kind}`: one series per [`crate::llm::LlmError::KINDS`].
    pub llm_errors: IntCounterVec,
    /// `aira_llm_tokens_total{kind}`: [`TOKEN_KINDS`].
    pub llm_tokens: IntCounterVec,
    /// `aira_llm_daily_tokens_limit`: the model tokens all users together may spend per UTC day
    /// (`AIRA_DAILY_TOKENS`); 0 when there is no bound.
    pub daily_tokens_limit: IntGauge,
    /// `aira_llm_tokens_today`: the model tokens all users together were charged today (UTC), as
    /// this process last read the shared counter (the worker, at each charge).
    pub tokens_today: IntGauge,
    /// `aira_rate_limiter_entries{limiter}`: keys held by each in-process limiter (bounded).
    pub limiter_entries: IntGaugeVec,
    /// `aira_event_streams_open`: event streams open on this process.
    pub streams_open: IntGauge,
    /// `aira_message_end_to_end_seconds`: from accepted to answered.
    pub end_to_end: Histogram,
    /// `aira_remote_write_requests_total{outcome}`: pushes of these metrics (`AIRA_REMOTE_WRITE_URL`),
    /// ok (2xx) or error (no answer in time, refused, not signed).
    pub remote_write_requests: IntCounterVec,
    /// `aira_remote_write_samples_total`: samples in the pushes that were answered 2xx.
    pub remote_write_samples: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let latency = exponential_buckets(0.001, 2.0, 16).expect("buckets");
        let llm_buckets = exponential_buckets(0.05, 2.0, 12).expect("buckets");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("aira_http_request_duration_seconds", "HTTP request latency").buckets(latency),
            &["route", "method"],
        )
        .expect("metric");
        registry.register(Box::new(http_duration.clone())).expect("register");
        let llm_duration = Histogram::with_opts(
            HistogramOpts::new("aira_llm_request_duration_seconds", "LLM call latency").buckets(llm_buckets.clone()),
        )
        .expect("metric");
        registry.register(Box::new(llm_duration.clone())).expect("register");
        let end_to_end = Histogram::with_opts(
            HistogramOpts::new("aira_message_end_to_end_seconds", "accepted to answered").buckets(llm_buckets),
        )
        .expect("metric");
        registry.register(Box::new(end_to_end.clone())).expect("register");
        let remote_write_requests =
            counter_vec("aira_remote_write_requests_total", "remote-write pushes by outcome", &["outcome"]);
        // Every label value known in advance starts at 0 (Prometheus's instrumentation advice):
        // a rate or a rule over it then tells "none yet" from "not scraped", and a fresh stack's
        // panels show 0, not "No data".
        let known = |c: &IntCounterVec, values: &[&str]| values.iter().for_each(|v| drop(c.with_label_values(&[v])));
        known(&remote_write_requests, &["ok", "error"]);
        let worker_messages = counter_vec("aira_worker_messages_total", "worker outcomes", &["outcome"]);
        known(&worker_messages, &Outcome::ALL.map(Outcome::label));
        let llm_errors = counter_vec("aira_llm_errors_total", "LLM errors", &["kind"]);
        known(&llm_errors, &crate::llm::LlmError::KINDS);
        let llm_tokens = counter_vec("aira_llm_tokens_total", "LLM tokens", &["kind"]);
        known(&llm_tokens, &TOKEN_KINDS);
        let limiter_entries = IntGaugeVec::new(
            Opts::new("aira_rate_limiter_entries", "keys held by an in-process rate limiter"),
            &["limiter"],
        )
        .expect("metric");
        registry.register(Box::new(limiter_entries.clone())).expect("register");
        Metrics {
            http_requests: counter_vec("aira_http_requests_total", "HTTP requests", &["route", "method", "status"]),
            http_duration,
            messages_accepted: counter("aira_messages_accepted_total", "messages accepted (202)"),
            messages_shed: counter("aira_messages_shed_total", "posts refused (503 busy) at the backlog bound"),
            rate_limited: counter("aira_rate_limited_total", "requests refused by the rate limit"),
            queue_sent: counter("aira_queue_sent_total", "queue messages sent"),
            queue_received: counter("aira_queue_received_total", "queue messages received"),
            queue_deleted: counter("aira_queue_deleted_total", "queue messages deleted"),
            queue_send_errors: counter("aira_queue_send_errors_total", "failed queue sends (left in the outbox)"),
            outbox_backlog: gauge("aira_outbox_backlog", "outbox rows not yet relayed"),
            outbox_relayed: counter("aira_outbox_relayed_total", "messages sent by the outbox relay"),
            queue_backlog: gauge("aira_queue_backlog", "messages in the queue, counted every second (serve)"),
            worker_in_flight: gauge("aira_worker_in_flight", "messages being processed"),
            worker_messages,
            dead_lettered: counter("aira_worker_dead_lettered_total", "messages given up to the dead-letter queue"),
            llm_duration,
            llm_errors,
            llm_tokens,
            daily_tokens_limit: gauge(
                "aira_llm_daily_tokens_limit",
                "model tokens all users may spend per UTC day (0: no bound)",
            ),
            tokens_today: gauge(
                "aira_llm_tokens_today",
                "model tokens charged today (UTC) for all users, as last read",
            ),
            limiter_entries,
            streams_open: gauge("aira_event_streams_open", "event streams open on this process"),
            end_to_end,
            remote_write_requests,
            remote_write_samples: counter("aira_remote_write_samples_total", "samples pushed and accepted"),
            registry,
        }
    }

    /// Every family's current values: what `/metrics` shows and remote write pushes.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.gather(), &mut buf).expect("encode metrics");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
