//! Command line and environment. `Cli` only says what the user typed (every flag also
//! reads an `AIRA_*` variable); the `resolve_*` functions build the configuration the
//! rest of the crate takes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::Limits;
use crate::llm::bedrock::{self, Bedrock};
use crate::llm::{Echo, Llm, OpenAi};
use crate::remote_write::{RemoteWriteConfig, Service};
use crate::worker::WorkerConfig;

#[derive(Debug, Parser)]
#[command(name = "aira-runtime", version, about = "The aira chat runtime: durable API and idempotent worker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// API, relay and worker in one process on the embedded SQLite backends.
    Serve {
        #[arg(long, env = "AIRA_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Folder of the SQLite files (created if missing).
        #[arg(long, env = "AIRA_DATA", default_value = ".aira/data")]
        data: PathBuf,
        /// The operations listener: `/metrics`, `/readyz`, `/healthz`; none when unset.
        #[arg(long, env = "AIRA_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        common: Common,
    },
    /// The API (and outbox relay) on SQS + DynamoDB.
    Api {
        #[arg(long, env = "AIRA_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        service: AwsService,
    },
    /// The worker on SQS + DynamoDB.
    Worker {
        #[command(flatten)]
        service: AwsService,
    },
    /// Move dead-letter messages back to the source queue (embedded with --data, else SQS).
    Redrive {
        #[arg(long, env = "AIRA_DATA")]
        data: Option<PathBuf>,
        #[arg(long, env = "AIRA_QUEUE_URL")]
        queue_url: Option<String>,
        #[arg(long, env = "AIRA_DLQ_URL")]
        dlq_url: Option<String>,
        /// Move at most this many.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// GET the URL and exit 0 on HTTP 200, 1 otherwise: the container health check (the image
    /// has no shell and no curl).
    Health {
        /// e.g. http://127.0.0.1:8080/healthz
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

// The flags `api` and `worker` share (no doc comment: clap would take it for theirs).
#[derive(Debug, Args, Clone)]
pub struct AwsService {
    /// The operations listener: `/metrics`, `/readyz`, `/healthz`; none when unset.
    #[arg(long, env = "AIRA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args, Clone)]
pub struct AwsArgs {
    /// URL of the SQS queue.
    #[arg(long, env = "AIRA_QUEUE_URL")]
    pub queue_url: String,
    /// Name of the DynamoDB table.
    #[arg(long, env = "AIRA_TABLE")]
    pub table: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmProvider {
    /// An OpenAI-compatible `/chat/completions` API (or the echo model without a base URL).
    Openai,
    /// Amazon Bedrock's Converse API, signed with the AWS credential chain.
    Bedrock,
}

#[derive(Debug, Args, Clone)]
pub struct Common {
    /// The API the model speaks: an OpenAI-compatible one, or Amazon Bedrock's Converse API.
    #[arg(long, env = "AIRA_LLM_PROVIDER", value_enum, default_value = "openai")]
    pub llm_provider: LlmProvider,
    /// openai: the base URL (e.g. https://api.openai.com/v1), the echo model without it.
    /// bedrock: replaces https://bedrock-runtime.{region}.amazonaws.com.
    #[arg(long, env = "AIRA_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// openai: the model name (default gpt-4o-mini). bedrock: the model id, required (e.g.
    /// anthropic.claude-3-haiku-20240307-v1:0).
    #[arg(long, env = "AIRA_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// API key of the OpenAI-compatible API (ECS injects it from Secrets Manager). Bedrock
    /// takes none: it signs with the AWS credentials (the task role).
    #[arg(long, env = "AIRA_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Most tokens of one answer (bedrock: inferenceConfig.maxTokens; openai: max_tokens); also
    /// what a message is charged before its answer is known.
    #[arg(long, env = "AIRA_LLM_MAX_TOKENS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub llm_max_tokens: u32,
    /// Longest answer stored, in bytes (UTF-8); a longer one is cut there and marked: a
    /// DynamoDB item holds 400 KB, prompt included.
    #[arg(long, env = "AIRA_MAX_ANSWER_BYTES", default_value_t = 65_536)]
    pub max_answer_bytes: usize,
    /// Most characters of earlier turns sent with a prompt (the newest that fit): a long
    /// conversation does not outgrow the model's context.
    #[arg(long, env = "AIRA_HISTORY_CHARS", default_value_t = 24_000)]
    pub history_chars: usize,
    #[arg(long, env = "AIRA_LLM_TIMEOUT_SECS", default_value_t = 60)]
    pub llm_timeout_secs: u64,
    /// How long one delivery waits out a failing model in hand (visibility and lease extended)
    /// before the failure counts as a receive; 0 counts every failure.
    #[arg(long, env = "AIRA_LLM_OUTAGE_SECS", default_value_t = 900)]
    pub llm_outage_secs: u64,
    /// Ask the model for its answer as it is written (OpenAI `stream: true`, Bedrock
    /// ConverseStream) and publish it as it grows; `false`: whole answers only.
    #[arg(long, env = "AIRA_LLM_STREAM", default_value_t = true, action = clap::ArgAction::Set)]
    pub llm_stream: bool,
    /// A streamed answer's partial text is written to the store at most this often (ms).
    #[arg(long, env = "AIRA_STREAM_FLUSH_MS", default_value_t = 400,
          value_parser = clap::value_parser!(u64).range(50..))]
    pub stream_flush_ms: u64,
    /// Must equal the queue's redrive policy maxReceiveCount.
    #[arg(long, env = "AIRA_MAX_RECEIVES", default_value_t = 5)]
    pub max_receives: u32,
    #[arg(long, env = "AIRA_VISIBILITY_TIMEOUT_SECS", default_value_t = 60)]
    pub visibility_timeout_secs: u64,
    #[arg(long, env = "AIRA_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    #[arg(long, env = "AIRA_RECEIVE_BATCH", default_value_t = 10)]
    pub receive_batch: usize,
    #[arg(long, env = "AIRA_RECEIVE_WAIT_SECS", default_value_t = 20)]
    pub receive_wait_secs: u64,
    #[arg(long, env = "AIRA_RETRY_BASE_SECS", default_value_t = 2)]
    pub retry_base_secs: u64,
    #[arg(long, env = "AIRA_RETRY_MAX_SECS", default_value_t = 300)]
    pub retry_max_secs: u64,
    #[arg(long, env = "AIRA_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    #[arg(long, env = "AIRA_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
    #[arg(long, env = "AIRA_MAX_PROMPT_CHARS", default_value_t = 8000)]
    pub max_prompt_chars: usize,
    #[arg(long, env = "AIRA_RATE_PER_MINUTE", default_value_t = 60)]
    pub rate_per_minute: u32,
    #[arg(long, env = "AIRA_RATE_BURST", default_value_t = 20)]
    pub rate_burst: u32,
    /// Sign-ups, sign-ins, token creations and account deletions per account, per minute.
    #[arg(long, env = "AIRA_AUTH_RATE_PER_MINUTE", default_value_t = 6)]
    pub auth_rate_per_minute: u32,
    #[arg(long, env = "AIRA_AUTH_RATE_BURST", default_value_t = 10)]
    pub auth_rate_burst: u32,
    /// The same attempts per client address, per minute.
    #[arg(long, env = "AIRA_AUTH_ADDRESS_RATE_PER_MINUTE", default_value_t = 30)]
    pub auth_address_rate_per_minute: u32,
    #[arg(long, env = "AIRA_AUTH_ADDRESS_RATE_BURST", default_value_t = 60)]
    pub auth_address_rate_burst: u32,
    /// Model tokens (prompt and answer) one user may spend per UTC day; 0: no limit.
    #[arg(long, env = "AIRA_USER_DAILY_TOKENS", default_value_t = 200_000)]
    pub user_daily_tokens: u64,
    /// Model tokens all users together may spend per UTC day; 0: no limit.
    #[arg(long, env = "AIRA_DAILY_TOKENS", default_value_t = 2_000_000)]
    pub daily_tokens: u64,
    /// A user's messages waiting or being answered at once; 0: no limit.
    #[arg(long, env = "AIRA_USER_IN_FLIGHT", default_value_t = 4)]
    pub user_in_flight: u32,
    /// Event streams one user may hold open on one API process.
    #[arg(long, env = "AIRA_STREAMS_PER_USER", default_value_t = 10)]
    pub streams_per_user: usize,
    /// Event streams open on one API process, all users together.
    #[arg(long, env = "AIRA_MAX_STREAMS", default_value_t = 2000)]
    pub max_streams: usize,
    /// Exports (`GET /v1/me/export`) running at once on one API process.
    #[arg(long, env = "AIRA_MAX_EXPORTS", default_value_t = 4)]
    pub max_exports: usize,
    /// For users who keep no history: how long a message whose answer is never fetched stays
    /// stored (one fetched is deleted at once).
    #[arg(long, env = "AIRA_UNKEPT_RETENTION_SECS", default_value_t = 86_400)]
    pub unkept_retention_secs: u64,
    /// `serve`: messages waiting to be answered above which a post is refused with 503 `busy`
    /// and `Retry-After` (the queue is counted every second); 0: no bound. Under a flood the
    /// backlog stays near this many instead of growing at the rate the API accepts.
    #[arg(long, env = "AIRA_MAX_BACKLOG", default_value_t = 10_000)]
    pub max_backlog: u64,
    /// `api`: seconds between two counts of the queue for the backlog bound (`serve` counts
    /// every second).
    #[arg(long, env = "AIRA_BACKLOG_COUNT_SECS", default_value_t = 10)]
    pub backlog_count_secs: u64,
    /// The API runs behind a load balancer that appends the client's address to
    /// `X-Forwarded-For` (the rate limits key on that entry); otherwise on the peer address.
    #[arg(long, env = "AIRA_BEHIND_LOAD_BALANCER", default_value_t = false)]
    pub behind_load_balancer: bool,
    /// Outbox rows older than this are relayed (younger ones are the API's own fast path).
    #[arg(long, env = "AIRA_RELAY_MIN_AGE_SECS", default_value_t = 5)]
    pub relay_min_age_secs: u64,
    #[arg(long, env = "AIRA_RELAY_INTERVAL_SECS", default_value_t = 2)]
    pub relay_interval_secs: u64,
    /// Embedded backends: `full` syncs every (group) commit to disk; `normal` only at checkpoints.
    #[arg(long, env = "AIRA_SQLITE_SYNCHRONOUS", value_enum, default_value = "full")]
    pub sqlite_synchronous: crate::group_commit::Durability,
    #[command(flatten)]
    pub remote_write: RemoteWriteArgs,
}

/// Pushing the metrics with the Prometheus remote-write protocol (`remote_write`).
#[derive(Debug, Args, Clone)]
pub struct RemoteWriteArgs {
    /// Push the metrics to this remote-write URL (e.g. an Amazon Managed Service for Prometheus
    /// workspace's `.../api/v1/remote_write`, signed with the AWS credentials); off when unset.
    #[arg(long, env = "AIRA_REMOTE_WRITE_URL")]
    pub remote_write_url: Option<String>,
    /// Seconds between two pushes (at least 1).
    #[arg(long, env = "AIRA_REMOTE_WRITE_INTERVAL_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub remote_write_interval_secs: u64,
    /// The `task` and `instance` labels of pushed series off ECS (on ECS: the task id); the host
    /// name when unset.
    #[arg(long, env = "AIRA_TASK_ID")]
    pub task_id: Option<String>,
    /// The `stack` label of pushed series; none when unset.
    #[arg(long, env = "AIRA_STACK")]
    pub stack: Option<String>,
}

pub fn resolve_worker(c: &Common) -> WorkerConfig {
    WorkerConfig {
        batch_size: c.receive_batch.clamp(1, 10),
        max_in_flight: c.max_in_flight.max(1),
        wait: Duration::from_secs(c.receive_wait_secs.min(20)),
        visibility: Duration::from_secs(c.visibility_timeout_secs.max(1)),
        max_receives: c.max_receives.max(1),
        retry_base: Duration::from_secs(c.retry_base_secs),
        retry_max: Duration::from_secs(c.retry_max_secs.min(43_200)),
        llm_timeout: Duration::from_secs(c.llm_timeout_secs.max(1)),
        history_turns: 20,
        history_chars: c.history_chars,
        max_answer_bytes: c.max_answer_bytes.max(1024),
        max_tokens: c.llm_max_tokens,
        user_in_flight: c.user_in_flight,
        user_daily_tokens: c.user_daily_tokens,
        all_daily_tokens: c.daily_tokens,
        shutdown_grace: Duration::from_secs(c.shutdown_grace_secs),
        outage_budget: Duration::from_secs(c.llm_outage_secs),
        stream_flush: Duration::from_millis(c.stream_flush_ms),
    }
}

/// The remote-write settings, or `None` when `AIRA_REMOTE_WRITE_URL` is unset or empty.
pub fn resolve_remote_write(c: &Common, service: Service) -> anyhow::Result<Option<RemoteWriteConfig>> {
    let r = &c.remote_write;
    let Some(url) = r.remote_write_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let url = reqwest::Url::parse(url).map_err(|e| anyhow!("AIRA_REMOTE_WRITE_URL {url:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("AIRA_REMOTE_WRITE_URL must be an http or https URL with a host, e.g. https://aps-workspaces.REGION.amazonaws.com/workspaces/ID/api/v1/remote_write");
    }
    Ok(Some(RemoteWriteConfig {
        url,
        interval: Duration::from_secs(r.remote_write_interval_secs.max(1)),
        service,
        task_id: r.task_id.clone().filter(|t| !t.is_empty()),
        stack: r.stack.clone().filter(|s| !s.is_empty()),
    }))
}

pub fn resolve_limits(c: &Common) -> Limits {
    Limits {
        max_body_bytes: c.max_body_bytes,
        max_prompt_chars: c.max_prompt_chars,
        messages_per_minute: c.rate_per_minute,
        burst: c.rate_burst,
        auth_per_minute: c.auth_rate_per_minute,
        auth_burst: c.auth_rate_burst,
        auth_address_per_minute: c.auth_address_rate_per_minute,
        auth_address_burst: c.auth_address_rate_burst,
        user_daily_tokens: c.user_daily_tokens,
        all_daily_tokens: c.daily_tokens,
        streams_per_user: c.streams_per_user.max(1),
        unkept_retention: Duration::from_secs(c.unkept_retention_secs.max(60)),
        max_backlog: c.max_backlog,
        user_in_flight: c.user_in_flight,
        max_streams: c.max_streams.max(1),
        max_exports: c.max_exports.max(1),
    }
}

/// The model the worker calls. Bedrock takes the region and credentials of the default AWS
/// chain (on ECS: `AWS_REGION` and the task role, refreshed as they expire).
pub async fn resolve_llm(c: &Common) -> anyhow::Result<Arc<dyn Llm>> {
    let base_url = c.llm_base_url.as_deref().filter(|u| !u.is_empty());
    let model = c.llm_model.as_deref().filter(|m| !m.is_empty());
    let api_key = c.llm_api_key.clone().filter(|k| !k.is_empty());
    let timeout = Duration::from_secs(c.llm_timeout_secs.max(1));
    Ok(match c.llm_provider {
        LlmProvider::Openai => match base_url {
            Some(url) => {
                let llm = OpenAi::new(url, model.unwrap_or("gpt-4o-mini"), api_key, Some(c.llm_max_tokens), timeout)?;
                Arc::new(llm.streaming(c.llm_stream))
            }
            None => Arc::new(Echo),
        },
        LlmProvider::Bedrock => {
            if api_key.is_some() {
                bail!(
                    "AIRA_LLM_API_KEY is set, but the bedrock provider takes no API key: it signs with the AWS \
                     credentials (the task role); unset AIRA_LLM_API_KEY (--llm-api-key)"
                );
            }
            let model = model.ok_or_else(|| {
                anyhow!("the bedrock provider needs a model id: set AIRA_LLM_MODEL (--llm-model), e.g. anthropic.claude-3-haiku-20240307-v1:0")
            })?;
            let conf = crate::run::aws_config().await;
            let region = conf
                .region()
                .map(|r| r.to_string())
                .ok_or_else(|| anyhow!("the bedrock provider needs an AWS region: set AWS_REGION"))?;
            let credentials = conf
                .credentials_provider()
                .ok_or_else(|| anyhow!("the bedrock provider found no AWS credential provider"))?;
            let endpoint = base_url.map(str::to_string).unwrap_or_else(|| bedrock::default_endpoint(&region));
            let llm = Bedrock::new(&endpoint, model, &region, credentials, Some(c.llm_max_tokens), timeout)?;
            Arc::new(llm.streaming(c.llm_stream))
        }
    })
}
