//! The worker's writes to a message, each conditional on its `status` and `claim_token`, and
//! each ahead of the API's in the writer's next group (`Db::call_first`): the claim takes the
//! lease (or says why not), and only the lease holder extends it, stores the answer, marks the
//! message failed or releases it.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Params};

use super::schema::{message_row, MESSAGE_COLUMNS};
use super::SqliteStore;
use crate::group_commit::Cached;
use crate::model::{Message, Status};
use crate::store::{Claim, ClaimTerms, Lease, LeaseStore, Partial, Result};

/// Runs `sql`, an update of one message conditional on holding its lease, ahead of the API's
/// writes; true when it changed the message.
async fn update_held<P: Params + Send + 'static>(store: &SqliteStore, sql: &'static str, params: P) -> Result<bool> {
    Ok(store.db.call_first(move |c| c.exec(sql, params)).await? == 1)
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn claim(&self, lease: &Lease, terms: ClaimTerms) -> Result<Claim> {
        let (id, tok) = (lease.message_id.clone(), lease.claim_token.clone());
        let ClaimTerms { now_ms, lease_until_ms, last_delivery } = terms;
        Ok(self
            .db
            .call_first(move |c| {
                let n = c.exec(
                    "UPDATE messages SET status = 'processing', claim_token = ?2, lease_until = ?3, updated_at = ?4,
                     dead_lettered = 0, last_delivery = ?5
                     WHERE id = ?1 AND (status = 'queued' OR (status = 'failed' AND dead_lettered = 1)
                                        OR (status = 'processing' AND lease_until < ?4))",
                    params![id, tok, lease_until_ms, now_ms, last_delivery],
                )?;
                let row: Option<(Message, i64)> = c
                    .row(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"), [&id], |r| {
                        Ok((message_row(r)?, r.get(10)?))
                    })
                    .optional()?;
                Ok(match row {
                    None => Claim::Missing,
                    Some((m, _)) if n == 1 => Claim::Claimed(m),
                    Some((m, _)) if m.status == Status::Answered => Claim::Answered,
                    Some((m, _)) if m.status == Status::Failed => Claim::Failed,
                    Some((_, lease)) => Claim::Busy { lease_until_ms: lease },
                })
            })
            .await?)
    }

    async fn extend_lease(&self, lease: &Lease, lease_until_ms: i64) -> Result<bool> {
        let sql = "UPDATE messages SET lease_until = ?3 WHERE id = ?1 AND status = 'processing' AND claim_token = ?2";
        update_held(self, sql, (lease.message_id.clone(), lease.claim_token.clone(), lease_until_ms)).await
    }

    async fn write_partial(&self, lease: &Lease, text: &str) -> Result<Partial> {
        let (id, tok, text) = (lease.message_id.clone(), lease.claim_token.clone(), text.to_string());
        Ok(self
            .db
            .call_first(move |c| {
                let n = c.exec(
                    "UPDATE messages SET answer = ?3
                     WHERE id = ?1 AND status = 'processing' AND claim_token = ?2 AND stop_requested = 0",
                    params![id, tok, text],
                )?;
                if n == 1 {
                    return Ok(Partial::Written);
                }
                let held: Option<i64> = c
                    .row(
                        "SELECT stop_requested FROM messages WHERE id = ?1 AND status = 'processing' AND claim_token = ?2",
                        params![id, tok],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok(if held.is_some() { Partial::Stop } else { Partial::Lost })
            })
            .await?)
    }

    /// The partial answer is the row's `answer`: the final one replaces it.
    async fn forget_partial(&self, _message_id: &str) -> Result<()> {
        Ok(())
    }

    async fn complete(&self, lease: &Lease, answer: &str, now_ms: i64, stopped: bool) -> Result<bool> {
        let sql = "UPDATE messages SET status = 'answered', answer = ?3, error = NULL, updated_at = ?4, stopped = ?5,
                     stop_requested = 0 WHERE id = ?1 AND status = 'processing' AND claim_token = ?2";
        let (id, tok) = (lease.message_id.clone(), lease.claim_token.clone());
        update_held(self, sql, (id, tok, answer.to_string(), now_ms, stopped)).await
    }

    async fn fail(&self, lease: &Lease, reason: &str, now_ms: i64, dead_lettered: bool) -> Result<bool> {
        let sql = "UPDATE messages SET status = 'failed', error = ?3, claim_token = NULL, updated_at = ?4,
                     dead_lettered = ?5, answer = NULL, stop_requested = 0 WHERE id = ?1 AND status = 'processing' AND claim_token = ?2";
        update_held(
            self,
            sql,
            (lease.message_id.clone(), lease.claim_token.clone(), reason.to_string(), now_ms, dead_lettered),
        )
        .await
    }

    async fn release(&self, lease: &Lease, now_ms: i64) -> Result<bool> {
        let sql = "UPDATE messages SET status = 'queued', claim_token = NULL, lease_until = 0, updated_at = ?3
                     WHERE id = ?1 AND status = 'processing' AND claim_token = ?2";
        update_held(self, sql, (lease.message_id.clone(), lease.claim_token.clone(), now_ms)).await
    }
}
