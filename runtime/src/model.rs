//! Plain data shared by the API, the store and the worker.

use serde::{Deserialize, Serialize};

/// Where a message is in its life. `failed` is final for the queue: only an explicit redrive
/// (of a message the worker set aside for the dead-letter queue) or the user's retry answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Processing,
    Answered,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::Answered => "answered",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "processing" => Status::Processing,
            "answered" => Status::Answered,
            "failed" => Status::Failed,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Answered | Status::Failed)
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    /// A deletion of the account began and has not finished (DynamoDB; SQLite deletes in one
    /// transaction): sign-ins are refused and finish the deletion instead.
    pub deleting: bool,
}

/// A session or API token of a user, as listed: never its secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// `session` (a sign-in's cookie) or `api` (a bearer token); `unknown` for tokens created
    /// before the kind was kept.
    pub kind: String,
    /// Milliseconds since the epoch; 0 when not kept.
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a user chose on the consent screen, and optional profile fields. `consented_at`
/// is unset until the user has seen and answered the consent screen (shown once).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Optional name shown in the page header.
    pub display_name: Option<String>,
    /// Consent to keep conversation history.
    pub keep_history: bool,
    /// When the consent screen was answered (ms since the epoch).
    pub consented_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: String,
    #[serde(skip)]
    pub user_id: String,
    pub created_at: i64,
    /// Its first message's opening words, or what the user renamed it to; `null` until then
    /// (and always for a user who keeps no history: a title is its message's words).
    pub title: Option<String>,
}

/// Most characters of a conversation's title.
pub const TITLE_CHARS: usize = 100;
/// Characters of a first message a conversation's title takes.
const AUTO_TITLE_CHARS: usize = 60;

/// The title a conversation takes from its first message: its first line, cut at a word near
/// [`AUTO_TITLE_CHARS`] characters (with `…`); `None` for a message with no words.
pub fn title_from(content: &str) -> Option<String> {
    let line = content.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if line.chars().count() <= AUTO_TITLE_CHARS {
        return Some(line);
    }
    let cut: String = line.chars().take(AUTO_TITLE_CHARS).collect();
    let at_word =
        cut.rfind(char::is_whitespace).filter(|&i| i >= AUTO_TITLE_CHARS / 2).map_or(cut.as_str(), |i| &cut[..i]);
    Some(format!("{}…", at_word.trim_end()))
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    #[serde(skip)]
    pub user_id: String,
    pub content: String,
    pub status: Status,
    /// The answer; while `processing`, the part the model has written so far (streaming).
    pub answer: Option<String>,
    /// Answered because the user stopped it: `answer` is what was written until then.
    pub stopped: bool,
    /// The user asked to stop it while it was being answered; the worker stops at its next look.
    #[serde(skip)]
    pub stop_requested: bool,
    /// Why the message failed, in words fit for the user (never the LLM's raw body).
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set when the user keeps no history: the message goes to the model alone, is deleted once
    /// its answer (or failure) was delivered, and at the latest at this time (ms).
    #[serde(skip)]
    pub purge_at: Option<i64>,
    /// The scope of the idempotency key it was posted with (DynamoDB keeps it on the message,
    /// so deleting the message deletes the key too).
    #[serde(skip)]
    pub idem_scope: Option<String>,
}

impl Message {
    /// Kept only until delivered (the user keeps no history).
    pub fn ephemeral(&self) -> bool {
        self.purge_at.is_some()
    }
}

/// What a message left on its last delivery, its lease expired, shows: the queue sends it to
/// the dead-letter queue at its next receive, so it is failed (and a redrive may claim it).
pub const SET_ASIDE: &str = "not answered after repeated attempts; set aside for the operator to retry";

/// The status a stored message shows: `processing` on its last delivery with an expired lease
/// (the worker died) is already `failed`, for the queue will not deliver it again.
pub fn shown_status(stored: Status, last_delivery: bool, lease_until_ms: i64, now_ms: i64) -> Status {
    if stored == Status::Processing && last_delivery && lease_until_ms < now_ms {
        Status::Failed
    } else {
        stored
    }
}

/// The day (UTC, days since the epoch) that spend budgets count in.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// Seconds until the next UTC midnight, when daily budgets start again.
pub fn secs_to_next_day(ms: i64) -> u64 {
    ((day_of(ms) + 1) * 86_400_000 - ms).div_euclid(1000).max(1) as u64
}

/// The queue body: ids only, never the prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueBody {
    pub message_id: String,
}

impl QueueBody {
    pub fn encode(message_id: &str) -> String {
        serde_json::to_string(&QueueBody { message_id: message_id.to_string() }).expect("plain struct")
    }

    pub fn decode(body: &str) -> Option<QueueBody> {
        serde_json::from_str(body).ok()
    }
}

/// A fresh time-ordered id (UUIDv7), so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Hex SHA-256, used for tokens at rest, CSRF tokens and idempotency keys.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::title_from;

    #[test]
    fn a_title_is_the_first_line_with_words_cut_at_a_word() {
        assert_eq!(title_from(" \n\n  Hello there \nmore"), Some("Hello there".into()));
        assert_eq!(title_from("   \n\t"), None);
        assert_eq!(title_from("tab\there"), Some("tab here".into()), "no control characters");
        let words = "word ".repeat(20);
        assert_eq!(title_from(&words), Some(format!("{}…", "word ".repeat(12).trim_end())));
        // No space to cut at: 60 characters, whatever their bytes.
        let han = "字".repeat(80);
        assert_eq!(title_from(&han), Some(format!("{}…", "字".repeat(60))));
    }
}
