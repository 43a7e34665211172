//! The LLM: an OpenAI-compatible `/chat/completions` client, Amazon Bedrock's Converse API
//! ([`bedrock`]), or the offline echo model; both remote ones stream the answer as it is
//! written ([`stream`], [`Written`]) unless told not to. [`classify_status`] maps every provider's HTTP
//! status onto [`LlmError`], and [`LlmError::disposition`] is the one place that decides retry
//! or give up.

pub mod bedrock;
pub mod stream;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Turn {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("rate limited (429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("server error ({status})")]
    Server { status: u16 },
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Connection,
    #[error("quota exhausted")]
    Quota,
    #[error("rejected ({status})")]
    Rejected { status: u16 },
    #[error("unreadable response")]
    BadResponse,
    /// The model answered nothing (no text): this message's failure, retried once.
    #[error("empty answer")]
    Empty,
    /// The provider's content filter withheld the answer: this message's failure.
    #[error("answer withheld by the content filter")]
    Filtered,
    /// The AWS credential chain gave no credentials (e.g. the task role's endpoint failed).
    #[error("no AWS credentials: {0}")]
    Credentials(String),
    /// An error the provider named: `error` is its classification by status, `code` and
    /// `message` what the provider said (e.g. Bedrock's `ThrottlingException`), for the logs.
    #[error("{error}: {code}: {message}")]
    Provider { error: Box<LlmError>, code: String, message: String },
}

/// What to do after an error. Errors of the service (it is down, overloaded, unreachable)
/// are waited out; errors of one message (its call timed out, it got no answer, it was
/// refused) cost that message at most one more call and never slow anyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The service is failing: try again later; `after` when the server said when.
    Retry { after: Option<Duration> },
    /// This message's call went wrong: one more call, then give up.
    Once,
    /// Give up now: retrying cannot help.
    Fail,
}

impl LlmError {
    pub fn disposition(&self) -> Disposition {
        match self {
            LlmError::RateLimited { retry_after } => Disposition::Retry { after: *retry_after },
            LlmError::Server { .. } | LlmError::Connection | LlmError::BadResponse | LlmError::Credentials(_) => {
                Disposition::Retry { after: None }
            }
            // A call that outlasts the timeout is most often a long prompt or answer; when
            // several users' calls time out, the worker takes it for an outage instead.
            LlmError::Timeout | LlmError::Empty => Disposition::Once,
            LlmError::Quota | LlmError::Rejected { .. } | LlmError::Filtered => Disposition::Fail,
            LlmError::Provider { error, .. } => error.disposition(),
        }
    }

    /// The classification under a provider's named error.
    pub fn root(&self) -> &LlmError {
        match self {
            LlmError::Provider { error, .. } => error.root(),
            e => e,
        }
    }

    /// Every value [`LlmError::kind`] gives: the series `aira_llm_errors_total` starts with.
    pub const KINDS: [&'static str; 10] = [
        "rate_limited",
        "server",
        "timeout",
        "connection",
        "quota",
        "rejected",
        "bad_response",
        "empty",
        "filtered",
        "credentials",
    ];

    /// Short label for metrics: one of [`LlmError::KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Server { .. } => "server",
            LlmError::Timeout => "timeout",
            LlmError::Connection => "connection",
            LlmError::Quota => "quota",
            LlmError::Rejected { .. } => "rejected",
            LlmError::BadResponse => "bad_response",
            LlmError::Empty => "empty",
            LlmError::Filtered => "filtered",
            LlmError::Credentials(_) => "credentials",
            LlmError::Provider { error, .. } => error.kind(),
        }
    }

    /// What the user is told when the message fails for this reason.
    pub fn user_reason(&self) -> &'static str {
        match self {
            LlmError::RateLimited { .. } => "the language model is rate limiting us; try again later",
            LlmError::Timeout => "the language model took too long to answer; try a shorter question",
            LlmError::Empty => "the language model gave no answer; try again or rephrase",
            LlmError::Filtered => "the language model's content filter withheld the answer",
            LlmError::Server { .. } | LlmError::Connection | LlmError::BadResponse | LlmError::Credentials(_) => {
                "the language model is unavailable; try again later"
            }
            LlmError::Quota => "the language model quota is exhausted",
            LlmError::Rejected { .. } => "the language model refused the request",
            LlmError::Provider { error, .. } => error.user_reason(),
        }
    }

    /// What the failed message records: the user's reason, with the provider's error code
    /// when it named one. The provider's message stays in the logs: it can name the account
    /// and the role (AccessDeniedException), which the user must not see.
    pub fn recorded_reason(&self) -> String {
        match self {
            LlmError::Provider { error, code, .. } => format!("{} ({code})", error.user_reason()),
            e => e.user_reason().to_string(),
        }
    }
}

/// The answer as the model writes it: a streaming call appends each piece as it arrives (the
/// worker publishes it to the event streams); a whole-answer call leaves it empty.
pub type Written = tokio::sync::watch::Sender<String>;

#[async_trait]
pub trait Llm: Send + Sync {
    async fn complete(&self, turns: &[Turn], written: &Written) -> Result<Completion, LlmError>;
    fn name(&self) -> &str;
}

/// A failure to send or to read the response: the call's bound passed, or the connection broke.
pub(crate) fn transport(e: reqwest::Error) -> LlmError {
    if e.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Connection
    }
}

/// Offline model: answers with the last user turn.
pub struct Echo;

#[async_trait]
impl Llm for Echo {
    async fn complete(&self, turns: &[Turn], _written: &Written) -> Result<Completion, LlmError> {
        let prompt = turns.iter().rev().find(|t| t.role == "user").map(|t| t.content.as_str()).unwrap_or("");
        Ok(Completion {
            text: format!("echo: {prompt}"),
            prompt_tokens: prompt.split_whitespace().count() as u64,
            completion_tokens: prompt.split_whitespace().count() as u64 + 1,
        })
    }
    fn name(&self) -> &str {
        "echo"
    }
}

/// Any OpenAI-compatible endpoint.
pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    max_tokens: Option<u32>,
    /// `stream: true`: the answer arrives in pieces as it is written.
    stream: bool,
}

impl OpenAi {
    /// `timeout` bounds the whole call; `base_url` is like `https://api.openai.com/v1`.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        max_tokens: Option<u32>,
        timeout: Duration,
    ) -> anyhow::Result<OpenAi> {
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(5)).build()?;
        Ok(OpenAi {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
            max_tokens,
            stream: true,
        })
    }

    /// Whether to ask for the answer as it is written (`stream: true`, the default) or whole.
    pub fn streaming(mut self, stream: bool) -> OpenAi {
        self.stream = stream;
        self
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}
#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}
#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}
#[derive(Deserialize, Default)]
pub(crate) struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs; treated as absent).
pub fn parse_retry_after(v: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let s = v?.to_str().ok()?.trim();
    s.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).map(Duration::from_secs_f64)
}

/// Classifies an HTTP error status and body (OpenAI error shape `{"error": {"code": ..}}`).
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> LlmError {
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.get("code")
                .and_then(|c| c.as_str())
                .or_else(|| e.get("type").and_then(|c| c.as_str()))
                .map(str::to_string)
        })
        .unwrap_or_default();
    if code == "insufficient_quota" {
        return LlmError::Quota;
    }
    classify_status(status, retry_after)
}

/// The classification every provider shares: 429 (rate limited; Bedrock's ThrottlingException
/// and ModelNotReadyException) and 408 (Bedrock's ModelTimeoutException) and 5xx are retried;
/// any other status (400 ValidationException, 403 AccessDeniedException, 404
/// ResourceNotFoundException, 424 ModelErrorException) is not.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> LlmError {
    match status {
        429 => LlmError::RateLimited { retry_after },
        408 => LlmError::Timeout,
        s if s >= 500 => LlmError::Server { status: s },
        s => LlmError::Rejected { status: s },
    }
}

#[async_trait]
impl Llm for OpenAi {
    async fn complete(&self, turns: &[Turn], written: &Written) -> Result<Completion, LlmError> {
        let mut body = serde_json::json!({"model": self.model, "messages": turns});
        if let Some(n) = self.max_tokens {
            body["max_tokens"] = n.into();
        }
        if self.stream {
            // The usage comes in a last chunk of its own when asked for (OpenAI's
            // `stream_options.include_usage`); without it the spend is estimated.
            body["stream"] = true.into();
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let ra = parse_retry_after(resp.headers().get(reqwest::header::RETRY_AFTER));
            let text = resp.text().await.unwrap_or_default();
            return Err(classify(status, ra, &text));
        }
        if self.stream {
            return stream::read_openai(resp, written).await;
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        let parsed: ChatResponse = serde_json::from_slice(&bytes).map_err(|_| LlmError::BadResponse)?;
        let choice = parsed.choices.into_iter().next().ok_or(LlmError::Empty)?;
        if choice.finish_reason.as_deref() == Some("content_filter") {
            return Err(LlmError::Filtered);
        }
        let text = choice.message.content.filter(|t| !t.trim().is_empty()).ok_or(LlmError::Empty)?;
        let usage = parsed.usage.unwrap_or_default();
        Ok(Completion { text, prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens })
    }
    fn name(&self) -> &str {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let ra = Some(Duration::from_secs(3));
        assert_eq!(classify(429, ra, "{}").disposition(), Disposition::Retry { after: ra });
        assert_eq!(classify(429, None, r#"{"error":{"code":"insufficient_quota"}}"#).disposition(), Disposition::Fail);
        assert_eq!(classify(500, None, "oops").disposition(), Disposition::Retry { after: None });
        assert_eq!(classify(503, None, "").disposition(), Disposition::Retry { after: None });
        assert_eq!(classify(400, None, "{}").disposition(), Disposition::Fail);
        assert_eq!(classify(401, None, "{}").disposition(), Disposition::Fail);
        assert_eq!(LlmError::Timeout.disposition(), Disposition::Once);
        assert_eq!(LlmError::Empty.disposition(), Disposition::Once);
        assert_eq!(LlmError::Filtered.disposition(), Disposition::Fail);
        assert_eq!(
            classify(400, None, r#"{"error":{"code":"context_length_exceeded"}}"#).disposition(),
            Disposition::Fail
        );
        assert_eq!(LlmError::Connection.disposition(), Disposition::Retry { after: None });
    }

    /// KINDS is what the metric starts with: every variant's kind is in it, and each is used.
    #[test]
    fn kinds_lists_every_kind() {
        let every = [
            LlmError::RateLimited { retry_after: None },
            LlmError::Server { status: 500 },
            LlmError::Timeout,
            LlmError::Connection,
            LlmError::Quota,
            LlmError::Rejected { status: 400 },
            LlmError::BadResponse,
            LlmError::Empty,
            LlmError::Filtered,
            LlmError::Credentials(String::new()),
        ];
        let kinds: Vec<&str> = every.iter().map(LlmError::kind).collect();
        assert_eq!(kinds, LlmError::KINDS);
        let named = LlmError::Provider { error: Box::new(LlmError::Quota), code: "x".into(), message: "y".into() };
        assert_eq!(named.kind(), "quota");
    }

    #[test]
    fn retry_after_seconds() {
        let v = reqwest::header::HeaderValue::from_static("7");
        assert_eq!(parse_retry_after(Some(&v)), Some(Duration::from_secs(7)));
        let v = reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(Some(&v)), None);
    }
}
