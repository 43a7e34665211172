//! Answers that arrive as they are written: the OpenAI-compatible API's server-sent events
//! (`stream: true`), read into the [`Written`] text as each piece comes. Bedrock's binary event
//! stream is read in [`super::bedrock`].

use serde::Deserialize;

use super::{classify, Completion, LlmError, Written};

/// Splits a `text/event-stream` body into its events' data, however the body's chunks cut it.
#[derive(Default)]
pub struct SseData {
    /// Bytes after the last complete line.
    line: Vec<u8>,
    /// The `data:` lines of the event being read.
    data: Vec<String>,
}

impl SseData {
    /// Feeds a chunk of the body: the data of each event it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data).join("\n"));
                }
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            if let Some(v) = line.strip_prefix("data:") {
                self.data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        events
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<super::Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}
#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}
#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

/// What a stream of chunks said so far.
#[derive(Default)]
pub struct OpenAiStream {
    text: String,
    usage: Option<super::Usage>,
    finish: Option<String>,
    done: bool,
}

impl OpenAiStream {
    /// Takes one event's data; its new text is appended to `written`.
    pub fn event(&mut self, data: &str, written: &Written) -> Result<(), LlmError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|_| LlmError::BadResponse)?;
        if let Some(e) = chunk.error {
            // An error after the 200 (the provider failed mid-answer): classified as a server
            // error, or by its code (`insufficient_quota`).
            return Err(classify(500, None, &serde_json::json!({ "error": e }).to_string()));
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(t) = choice.delta.content.filter(|t| !t.is_empty()) {
                self.text.push_str(&t);
                written.send_modify(|w| w.push_str(&t));
            }
            if choice.finish_reason.is_some() {
                self.finish = choice.finish_reason;
            }
        }
        Ok(())
    }

    /// Whether `[DONE]` was read: nothing more is to come.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The completion, once the body ended. A body that ended before the model finished (no
    /// finish reason, no `[DONE]`) is a broken connection.
    pub fn finish(self) -> Result<Completion, LlmError> {
        if !self.done && self.finish.is_none() {
            return Err(LlmError::Connection);
        }
        if self.finish.as_deref() == Some("content_filter") {
            return Err(LlmError::Filtered);
        }
        if self.text.trim().is_empty() {
            return Err(LlmError::Empty);
        }
        let usage = self.usage.unwrap_or_default();
        Ok(Completion {
            text: self.text,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        })
    }
}

/// Reads an OpenAI-compatible streaming response to its end.
pub async fn read_openai(mut resp: reqwest::Response, written: &Written) -> Result<Completion, LlmError> {
    let mut sse = SseData::default();
    let mut stream = OpenAiStream::default();
    while !stream.done() {
        let Some(bytes) = resp.chunk().await.map_err(super::transport)? else { break };
        for data in sse.push(&bytes) {
            stream.event(&data, written)?;
        }
    }
    stream.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written() -> Written {
        tokio::sync::watch::channel(String::new()).0
    }

    #[test]
    fn events_are_split_however_the_chunks_cut_them() {
        let body = "data: {\"a\":1}\r\n\r\n: a comment\n\ndata: one\ndata: two\n\nevent: x\ndata: [DONE]\n\n";
        let whole = SseData::default().push(body.as_bytes());
        assert_eq!(whole, ["{\"a\":1}", "one\ntwo", "[DONE]"]);
        let mut bytewise = SseData::default();
        let cut: Vec<String> = body.as_bytes().chunks(1).flat_map(|c| bytewise.push(c)).collect();
        assert_eq!(cut, whole);
        // A multi-byte character cut between chunks is whole in the event.
        let mut sse = SseData::default();
        let bytes = "data: é\n\n".as_bytes();
        assert!(sse.push(&bytes[..7]).is_empty());
        assert_eq!(sse.push(&bytes[7..]), ["é"]);
    }

    #[test]
    fn a_stream_is_its_deltas_and_its_usage() {
        let w = written();
        let mut s = OpenAiStream::default();
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            "[DONE]",
        ] {
            s.event(data, &w).unwrap();
        }
        assert_eq!(*w.borrow(), "Hello");
        let c = s.finish().unwrap();
        assert_eq!((c.text.as_str(), c.prompt_tokens, c.completion_tokens), ("Hello", 5, 2));
    }

    #[test]
    fn a_cut_stream_an_error_and_a_filter_are_told_apart() {
        let w = written();
        let mut cut = OpenAiStream::default();
        cut.event(r#"{"choices":[{"delta":{"content":"par"}}]}"#, &w).unwrap();
        assert!(matches!(cut.finish(), Err(LlmError::Connection)));
        let mut s = OpenAiStream::default();
        let e = s.event(r#"{"error":{"message":"overloaded","type":"server_error"}}"#, &w).unwrap_err();
        assert!(matches!(e, LlmError::Server { .. }), "{e:?}");
        let e = s.event(r#"{"error":{"code":"insufficient_quota"}}"#, &w).unwrap_err();
        assert!(matches!(e, LlmError::Quota), "{e:?}");
        assert!(matches!(s.event("not json", &w), Err(LlmError::BadResponse)));
        let mut f = OpenAiStream::default();
        f.event(r#"{"choices":[{"delta":{},"finish_reason":"content_filter"}]}"#, &w).unwrap();
        assert!(matches!(f.finish(), Err(LlmError::Filtered)));
    }
}
