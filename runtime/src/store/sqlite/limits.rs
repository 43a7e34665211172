//! What a post is checked against: the post's context (conversation, profile, today's spend)
//! in one read, the daily spend of a user and of everyone (user_id '' in `spend`), and a user's
//! open messages. Shared rate limits are the API's own here: one process holds them all.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::accounts::profile;
use super::messages::conversation;
use super::SqliteStore;
use crate::group_commit::Cached;
use crate::store::{Charge, LimitStore, PostContext, Result, SpendReads};

/// The tokens `user_id` ('' for everyone) spent on `day`; `None` before the day's first charge.
fn spent(c: &Connection, day: i64, user_id: &str) -> rusqlite::Result<Option<i64>> {
    c.row("SELECT tokens FROM spend WHERE day = ?1 AND user_id = ?2", params![day, user_id], |r| r.get(0)).optional()
}

/// Adds `delta` to the user's count of `day` (while the account exists) and to everyone's.
fn add_spend_rows(c: &Connection, day: i64, user_id: &str, delta: i64) -> rusqlite::Result<()> {
    for who in [user_id, ""] {
        c.exec(
            "INSERT INTO spend (day, user_id, tokens) SELECT ?1, ?2, ?3
             WHERE ?2 = '' OR EXISTS (SELECT 1 FROM users WHERE id = ?2)
             ON CONFLICT(day, user_id) DO UPDATE SET tokens = tokens + excluded.tokens",
            params![day, who, delta],
        )?;
    }
    Ok(())
}

#[async_trait]
impl LimitStore for SqliteStore {
    async fn post_context(&self, user_id: &str, conversation_id: &str, spend: SpendReads) -> Result<PostContext> {
        let (u, conv) = (user_id.to_string(), conversation_id.to_string());
        Ok(self
            .db
            .read(move |c| {
                let conversation = conversation(c, &conv)?;
                let profile = profile(c, &u)?;
                let read = |wanted: bool, user: &str| -> rusqlite::Result<Option<i64>> {
                    if !wanted {
                        return Ok(None);
                    }
                    spent(c, spend.day, user)
                };
                let user_tokens = read(spend.user, &u)?;
                let all_tokens = read(spend.all, "")?;
                Ok(PostContext {
                    conversation,
                    profile,
                    user_tokens_today: user_tokens.unwrap_or(0).max(0) as u64,
                    all_tokens_today: all_tokens.unwrap_or(0).max(0) as u64,
                })
            })
            .await?)
    }

    async fn charge_spend(&self, user_id: &str, day: i64, tokens: u64, user_cap: u64, all_cap: u64) -> Result<Charge> {
        let u = user_id.to_string();
        Ok(self
            .db
            .call_first(move |c| {
                let (user, all) = (spent(c, day, &u)?, spent(c, day, "")?);
                let over = |count: Option<i64>, cap: u64| cap > 0 && count.unwrap_or(0).max(0) as u64 + tokens > cap;
                if over(user, user_cap) {
                    return Ok(Charge::OverUser);
                }
                if over(all, all_cap) {
                    return Ok(Charge::OverAll);
                }
                if all.is_none() {
                    // The day's first charge: the counts of days gone are dropped (a budget reads today's).
                    c.exec("DELETE FROM spend WHERE day < ?1", [day - 2])?;
                }
                add_spend_rows(c, day, &u, tokens as i64)?;
                Ok(Charge::Charged { all_today: all.unwrap_or(0).max(0) as u64 + tokens })
            })
            .await?)
    }

    async fn add_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()> {
        let u = user_id.to_string();
        self.db.call_first(move |c| add_spend_rows(c, day, &u, delta)).await?;
        Ok(())
    }

    async fn take_slot(&self, user_id: &str, cap: u32, _now_ms: i64) -> Result<bool> {
        // The user's open messages, counted (one writer: a post between the count and its own
        // write is rare, and would let one more in).
        let u = user_id.to_string();
        let open: i64 = self
            .db
            .read(move |c| {
                c.row(
                    "SELECT COUNT(*) FROM messages WHERE user_id = ?1 AND status IN ('queued', 'processing')",
                    [&u],
                    |r| r.get(0),
                )
            })
            .await?;
        Ok(open < i64::from(cap))
    }

    /// Nothing to give back: `take_slot` counts the open messages.
    async fn free_slot(&self, _user_id: &str, _now_ms: i64) -> Result<()> {
        Ok(())
    }

    async fn take_rate(&self, _key: &str, _limit: u32, _window_ms: i64, _now_ms: i64) -> Result<Option<i64>> {
        // One process: the API's in-process limits hold.
        Ok(None)
    }
}
