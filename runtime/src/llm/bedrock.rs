//! Amazon Bedrock's Converse API (`POST /model/{modelId}/converse`, or `…/converse-stream`
//! for the answer as it is written, in AWS's binary event stream), signed with SigV4 for the
//! service `bedrock` with the credentials of the default AWS chain (on ECS the task role, which
//! needs `bedrock:InvokeModel`, and `bedrock:InvokeModelWithResponseStream` for the stream).
//! A worker in private subnets reaches it through a `bedrock-runtime` interface endpoint.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::debug;

use super::{classify_status, parse_retry_after, transport, Completion, Llm, LlmError, Turn, Written};
use crate::sigv4::{sign_headers, CachedCredentials};

/// The SigV4 signing name of Bedrock's runtime API (its host is `bedrock-runtime.…`).
const SIGNING_NAME: &str = "bedrock";

/// The longest provider error message kept for the logs.
const MAX_MESSAGE_CHARS: usize = 500;

pub struct Bedrock {
    http: reqwest::Client,
    /// `{endpoint}/model/{percent-encoded model id}`: `/converse` or `/converse-stream` follows.
    model_url: String,
    model: String,
    region: String,
    credentials: CachedCredentials,
    /// `inferenceConfig.maxTokens`; the model's own default when unset.
    max_tokens: Option<u32>,
    /// ConverseStream (the default) rather than Converse.
    stream: bool,
}

/// The public endpoint of the region; a `bedrock-runtime` interface endpoint with private DNS
/// answers for this same name inside the VPC.
pub fn default_endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

impl Bedrock {
    /// `timeout` bounds the whole call; `endpoint` is like [`default_endpoint`].
    pub fn new(
        endpoint: &str,
        model: &str,
        region: &str,
        credentials: SharedCredentialsProvider,
        max_tokens: Option<u32>,
        timeout: Duration,
    ) -> anyhow::Result<Bedrock> {
        anyhow::ensure!(!model.is_empty(), "the bedrock provider needs a model id (AIRA_LLM_MODEL)");
        anyhow::ensure!(!region.is_empty(), "the bedrock provider needs an AWS region (AWS_REGION)");
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Bedrock {
            http,
            model_url: format!("{}/model/{}", endpoint.trim_end_matches('/'), encode_path_segment(model)),
            model: model.to_string(),
            region: region.to_string(),
            credentials: CachedCredentials::new(credentials),
            max_tokens,
            stream: true,
        })
    }

    /// Whether to call ConverseStream (the default) or Converse.
    pub fn streaming(mut self, stream: bool) -> Bedrock {
        self.stream = stream;
        self
    }

    /// The Converse request: system turns go to `system`, the others to `messages` in order.
    fn body(&self, turns: &[Turn]) -> Value {
        let system: Vec<Value> =
            turns.iter().filter(|t| t.role == "system").map(|t| json!({ "text": t.content })).collect();
        let messages: Vec<Value> = turns
            .iter()
            .filter(|t| t.role != "system")
            .map(|t| json!({ "role": t.role, "content": [{ "text": t.content }] }))
            .collect();
        let mut body = json!({ "messages": messages });
        if !system.is_empty() {
            body["system"] = Value::Array(system);
        }
        if let Some(n) = self.max_tokens {
            body["inferenceConfig"] = json!({ "maxTokens": n });
        }
        body
    }
}

/// Percent-encodes everything but the unreserved characters (a model id holds `:`, an
/// inference profile ARN `/` too). The signer encodes the path once more for the canonical
/// request, as AWS expects of every service but S3.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[derive(Deserialize)]
struct ConverseResponse {
    output: ConverseOutput,
    #[serde(rename = "stopReason", default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<ConverseUsage>,
}
#[derive(Deserialize)]
struct ConverseOutput {
    message: OutputMessage,
}
#[derive(Deserialize)]
struct OutputMessage {
    content: Vec<ContentBlock>,
}
#[derive(Deserialize)]
struct ContentBlock {
    #[serde(default)]
    text: Option<String>,
}
#[derive(Deserialize, Default)]
struct ConverseUsage {
    #[serde(rename = "inputTokens", default)]
    input_tokens: u64,
    #[serde(rename = "outputTokens", default)]
    output_tokens: u64,
}

/// An error response: the status classified as for every provider, with the error type and
/// message Bedrock gave. The type comes from the `x-amzn-ErrorType` header or the body's
/// `__type`/`code` (restJson1), and may carry a namespace (`…#Type`) or a suffix (`Type:…`).
pub fn error_of(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> LlmError {
    let error = classify_status(status, parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)));
    let json = serde_json::from_str::<Value>(body).ok();
    let field = |names: &[&str]| {
        json.as_ref().and_then(|v| names.iter().find_map(|n| v.get(*n).and_then(Value::as_str).map(str::to_string)))
    };
    let code = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| field(&["__type", "code"]))
        .map(|c| {
            let c = c.split(':').next().unwrap_or_default();
            c.rsplit('#').next().unwrap_or_default().to_string()
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let mut message = field(&["message", "Message"]).unwrap_or_else(|| body.to_string());
    if let Some((i, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(i);
        message.push('…');
    }
    LlmError::Provider { error: Box::new(error), code, message }
}

/// What ConverseStream's events said so far (`messageStart`, `contentBlockDelta`,
/// `contentBlockStop`, `messageStop`, `metadata`; an `exception` message is an error).
#[derive(Default)]
pub struct ConverseStream {
    text: String,
    stop_reason: Option<String>,
    usage: ConverseUsage,
}

#[derive(Deserialize)]
struct DeltaEvent {
    delta: TextDelta,
}
#[derive(Deserialize)]
struct TextDelta {
    #[serde(default)]
    text: Option<String>,
}
#[derive(Deserialize)]
struct StopEvent {
    #[serde(rename = "stopReason", default)]
    stop_reason: Option<String>,
}
#[derive(Deserialize)]
struct MetadataEvent {
    #[serde(default)]
    usage: Option<ConverseUsage>,
}

/// A header's string value.
fn header<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers().iter().find(|h| h.name().as_str() == name).and_then(|h| h.value().as_string().ok()).map(|v| v.as_str())
}

/// The status ConverseStream's exceptions carry in the API reference (the event names their
/// type with a lower-case first letter): they are classified as the same errors of Converse.
fn exception_status(kind: &str) -> u16 {
    match kind {
        "throttlingException" => 429,
        "serviceUnavailableException" => 503,
        "validationException" => 400,
        "modelStreamErrorException" => 424,
        _ => 500, // internalServerException, and any the reference adds
    }
}

impl ConverseStream {
    /// Takes one message of the event stream; a delta's text is appended to `written`.
    pub fn message(&mut self, m: &Message, written: &Written) -> Result<(), LlmError> {
        let payload = m.payload();
        match header(m, ":message-type") {
            Some("event") => {}
            Some("exception") => {
                let kind = header(m, ":exception-type")
                    .filter(|k| k.is_ascii() && !k.is_empty())
                    .unwrap_or("internalServerException");
                let status = exception_status(kind);
                let body = String::from_utf8_lossy(payload);
                let mut code = kind.to_string();
                code[..1].make_ascii_uppercase();
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                // A model's stream error is worth another call (the reference: "Retry your
                // request"), unlike Converse's 424 ModelErrorException.
                let error = if kind == "modelStreamErrorException" {
                    LlmError::Server { status }
                } else {
                    classify_status(status, None)
                };
                return Err(LlmError::Provider { error: Box::new(error), code, message });
            }
            _ => {
                let code = header(m, ":error-code").unwrap_or("error").to_string();
                let message = header(m, ":error-message").unwrap_or_default().to_string();
                return Err(LlmError::Provider { error: Box::new(LlmError::Server { status: 500 }), code, message });
            }
        }
        let parse_err = |_| LlmError::BadResponse;
        match header(m, ":event-type") {
            Some("contentBlockDelta") => {
                let e: DeltaEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                if let Some(t) = e.delta.text.filter(|t| !t.is_empty()) {
                    self.text.push_str(&t);
                    written.send_modify(|w| w.push_str(&t));
                }
            }
            Some("messageStop") => {
                let e: StopEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                self.stop_reason = Some(e.stop_reason.unwrap_or_default());
            }
            Some("metadata") => {
                let e: MetadataEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                self.usage = e.usage.unwrap_or_default();
            }
            _ => {} // messageStart, contentBlockStart/Stop: nothing to keep
        }
        Ok(())
    }

    /// The completion once the body ended: a body cut before `messageStop` is a broken
    /// connection.
    pub fn finish(self) -> Result<Completion, LlmError> {
        let Some(reason) = self.stop_reason else { return Err(LlmError::Connection) };
        if matches!(reason.as_str(), "content_filtered" | "guardrail_intervened") {
            return Err(LlmError::Filtered);
        }
        if self.text.trim().is_empty() {
            return Err(LlmError::Empty);
        }
        if reason != "end_turn" {
            debug!(stop_reason = reason, "bedrock answer ended early");
        }
        Ok(Completion {
            text: self.text,
            prompt_tokens: self.usage.input_tokens,
            completion_tokens: self.usage.output_tokens,
        })
    }
}

/// Reads a ConverseStream response (`application/vnd.amazon.eventstream`: frames with a
/// prelude, headers, a JSON payload and CRCs, checked by the decoder) to its end.
async fn read_stream(mut resp: reqwest::Response, written: &Written) -> Result<Completion, LlmError> {
    let mut buf = bytes::BytesMut::new();
    let mut decoder = MessageFrameDecoder::new();
    let mut stream = ConverseStream::default();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        buf.extend_from_slice(&chunk);
        loop {
            match decoder.decode_frame(&mut buf) {
                Ok(DecodedFrame::Complete(m)) => stream.message(&m, written)?,
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => {
                    debug!(error = %e, "unreadable event stream frame");
                    return Err(LlmError::BadResponse);
                }
            }
        }
    }
    stream.finish()
}

#[async_trait]
impl Llm for Bedrock {
    async fn complete(&self, turns: &[Turn], written: &Written) -> Result<Completion, LlmError> {
        let body = serde_json::to_vec(&self.body(turns)).map_err(|_| LlmError::BadResponse)?;
        let credentials = self.credentials.get().await.map_err(LlmError::Credentials)?;
        let url = format!("{}/{}", self.model_url, if self.stream { "converse-stream" } else { "converse" });
        let mut req = self.http.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json");
        let headers = [("content-type", "application/json")];
        let signature = sign_headers(credentials, &self.region, SIGNING_NAME, "POST", &url, &headers, &body)
            .map_err(LlmError::Credentials)?;
        for (k, v) in signature {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            return Err(error_of(status, &headers, &text));
        }
        if self.stream {
            return read_stream(resp, written).await;
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        let parsed: ConverseResponse = serde_json::from_slice(&bytes).map_err(|_| LlmError::BadResponse)?;
        let text: String = parsed.output.message.content.into_iter().filter_map(|b| b.text).collect();
        let filtered = matches!(parsed.stop_reason.as_deref(), Some("content_filtered" | "guardrail_intervened"));
        if filtered {
            return Err(LlmError::Filtered);
        }
        if text.trim().is_empty() {
            return Err(LlmError::Empty);
        }
        if let Some(reason) = parsed.stop_reason.filter(|r| r != "end_turn") {
            debug!(stop_reason = reason, "bedrock answer ended early");
        }
        let usage = parsed.usage.unwrap_or_default();
        Ok(Completion { text, prompt_tokens: usage.input_tokens, completion_tokens: usage.output_tokens })
    }
    fn name(&self) -> &str {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Disposition;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn classified(status: u16, header: Option<&'static str>, body: &str) -> LlmError {
        let mut h = HeaderMap::new();
        if let Some(t) = header {
            h.insert("x-amzn-errortype", HeaderValue::from_static(t));
        }
        error_of(status, &h, body)
    }

    /// The Converse API reference's errors: which are retried, and the type that is logged.
    #[test]
    fn converse_errors() {
        let retry = Disposition::Retry { after: None };
        for (status, code, disposition) in [
            (429, "ThrottlingException", retry),
            (429, "ModelNotReadyException", retry),
            (503, "ServiceUnavailableException", retry),
            (408, "ModelTimeoutException", Disposition::Once),
            (500, "InternalServerException", retry),
            (400, "ValidationException", Disposition::Fail),
            (403, "AccessDeniedException", Disposition::Fail),
            (404, "ResourceNotFoundException", Disposition::Fail),
            (424, "ModelErrorException", Disposition::Fail),
        ] {
            let e = classified(status, None, &format!(r#"{{"__type":"{code}","message":"said {code}"}}"#));
            assert_eq!(e.disposition(), disposition, "{code}");
            assert_eq!(e.to_string().split(": ").skip(1).collect::<Vec<_>>(), [code, &format!("said {code}")]);
        }
        let e = classified(403, Some("AccessDeniedException:http://internal.amazon.com/coral/"), r#"{"Message":"no"}"#);
        assert!(e.to_string().ends_with(": AccessDeniedException: no"), "{e}");
        assert_eq!(e.recorded_reason(), "the language model refused the request (AccessDeniedException)");
        let e = classified(400, None, r#"{"__type":"com.amazon.bedrock#ValidationException","message":"x"}"#);
        assert!(e.to_string().ends_with(": ValidationException: x"), "{e}");
        assert!(classified(502, None, "<html>").to_string().ends_with(": HTTP 502: <html>"));
    }

    /// AWS's event stream frames, encoded by the SDK's encoder, decoded as they arrive in
    /// pieces: the text, the usage, a cut stream, and exceptions classified as Converse's errors.
    #[test]
    fn converse_stream_frames() {
        use aws_smithy_types::event_stream::{Header, HeaderValue};
        let frame = |kind: &str, name: &str, payload: &str| {
            let kind_header = if kind == "event" { ":event-type" } else { ":exception-type" };
            let m = Message::new(payload.as_bytes().to_vec())
                .add_header(Header::new(":message-type", HeaderValue::String(kind.to_string().into())))
                .add_header(Header::new(kind_header, HeaderValue::String(name.to_string().into())));
            let mut out = Vec::new();
            aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
            out
        };
        let run = |frames: Vec<Vec<u8>>| {
            let written = tokio::sync::watch::channel(String::new()).0;
            let bytes: Vec<u8> = frames.concat();
            let mut buf = bytes::BytesMut::new();
            let mut decoder = MessageFrameDecoder::new();
            let mut stream = ConverseStream::default();
            for piece in bytes.chunks(7) {
                buf.extend_from_slice(piece);
                while let DecodedFrame::Complete(m) = decoder.decode_frame(&mut buf).unwrap() {
                    stream.message(&m, &written)?;
                }
            }
            let text = written.borrow().clone();
            stream.finish().map(|c| (c, text))
        };
        let delta = |t: &str| {
            frame("event", "contentBlockDelta", &format!(r#"{{"contentBlockIndex":0,"delta":{{"text":"{t}"}}}}"#))
        };
        let whole = vec![
            frame("event", "messageStart", r#"{"role":"assistant"}"#),
            delta("Hel"),
            delta("lo"),
            frame("event", "messageStop", r#"{"stopReason":"end_turn"}"#),
            frame("event", "metadata", r#"{"usage":{"inputTokens":5,"outputTokens":2,"totalTokens":7}}"#),
        ];
        let (c, written) = run(whole.clone()).unwrap();
        assert_eq!((c.text.as_str(), written.as_str(), c.prompt_tokens, c.completion_tokens), ("Hello", "Hello", 5, 2));
        assert!(matches!(run(whole[..3].to_vec()), Err(LlmError::Connection)), "cut before messageStop");
        for (name, disposition) in [
            ("throttlingException", Disposition::Retry { after: None }),
            ("modelStreamErrorException", Disposition::Retry { after: None }),
            ("validationException", Disposition::Fail),
        ] {
            let e = run(vec![delta("x"), frame("exception", name, r#"{"message":"said so"}"#)]).unwrap_err();
            assert_eq!(e.disposition(), disposition, "{name}");
            assert!(e.to_string().ends_with(": said so"), "{e}");
        }
        let filtered = vec![delta("x"), frame("event", "messageStop", r#"{"stopReason":"guardrail_intervened"}"#)];
        assert!(matches!(run(filtered), Err(LlmError::Filtered)));
    }

    #[test]
    fn model_id_is_one_path_segment() {
        assert_eq!(
            encode_path_segment("anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1%3A0"
        );
        assert_eq!(
            encode_path_segment("arn:aws:bedrock:us-east-1:1:inference-profile/us.x"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x"
        );
    }
}
