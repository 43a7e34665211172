//! The worker's writes to a message, each conditional on its `status` and `claim_token`: the
//! claim takes the lease (or says why not), and only the lease holder extends it, stores the
//! answer, marks the message failed or releases it.

use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::item::{get_n, get_s, message_from, n, s, PARTIAL, PARTIAL_TTL_SECS};
use super::table::{backend, condition_failed};
use super::DynamoStore;
use crate::model::Status;
use crate::store::{Claim, ClaimTerms, Lease, LeaseStore, Partial, Result, StoreError};

/// Updates the message with `update` if `lease` holds it (`processing`, the claim token its
/// own); false when it does not. `values` are the update's; `#s` names `status`,
/// `#e` `error`.
async fn update_held(
    store: &DynamoStore,
    lease: &Lease,
    update: &str,
    mut values: Vec<(&str, AttributeValue)>,
) -> Result<bool> {
    values.extend([(":p", s("processing")), (":t", s(&lease.claim_token))]);
    let mut req = store
        .update_request(format!("MSG#{}", lease.message_id), "MSG")
        .update_expression(update)
        .condition_expression("#s = :p AND claim_token = :t")
        .expression_attribute_names("#s", "status");
    if update.contains("#e") {
        req = req.expression_attribute_names("#e", "error");
    }
    for (k, v) in values {
        req = req.expression_attribute_values(k, v);
    }
    match req.send().await {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(backend("dynamodb update item")(e)),
    }
}

#[async_trait]
impl LeaseStore for DynamoStore {
    async fn claim(&self, lease: &Lease, terms: ClaimTerms) -> Result<Claim> {
        let key = format!("MSG#{}", lease.message_id);
        let r = self
            .update_request(key.clone(), "MSG")
            .update_expression(
                "SET #s = :p, claim_token = :t, lease_until = :l, updated_at = :now, last_delivery = :last \
                 REMOVE dead_lettered",
            )
            .condition_expression(
                "attribute_exists(pk) AND (#s = :q OR (#s = :f AND attribute_exists(dead_lettered)) \
                 OR (#s = :p AND lease_until < :now))",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":p", s("processing"))
            .expression_attribute_values(":q", s("queued"))
            .expression_attribute_values(":f", s("failed"))
            .expression_attribute_values(":t", s(&lease.claim_token))
            .expression_attribute_values(":l", n(terms.lease_until_ms))
            .expression_attribute_values(":now", n(terms.now_ms))
            .expression_attribute_values(":last", AttributeValue::Bool(terms.last_delivery))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match r {
            Ok(out) => match out.attributes.as_ref().and_then(message_from) {
                Some(m) => Ok(Claim::Claimed(m)),
                None => Err(StoreError::Backend(anyhow!("dynamodb claim returned no message"))),
            },
            Err(e) if condition_failed(&e) => match self.get(key, "MSG").await? {
                None => Ok(Claim::Missing),
                Some(i) if get_s(&i, "status").as_deref() == Some(Status::Answered.as_str()) => Ok(Claim::Answered),
                Some(i) if get_s(&i, "status").as_deref() == Some(Status::Failed.as_str()) => Ok(Claim::Failed),
                Some(i) => Ok(Claim::Busy { lease_until_ms: get_n(&i, "lease_until") }),
            },
            Err(e) => Err(backend("dynamodb claim")(e)),
        }
    }

    async fn extend_lease(&self, lease: &Lease, lease_until_ms: i64) -> Result<bool> {
        update_held(self, lease, "SET lease_until = :l", vec![(":l", n(lease_until_ms))]).await
    }

    /// One conditional update of the partial answer's item (billed by the answer's size, not
    /// the prompt's): refused once a later claim wrote there (claim tokens are UUIDv7, so a
    /// later claim's sorts after) or a stop was asked for this claim. The refusal returns the
    /// item as it was (`ReturnValuesOnConditionCheckFailure`), which tells a stop from a lost
    /// lease without another read.
    async fn write_partial(&self, lease: &Lease, text: &str) -> Result<Partial> {
        let expires = crate::model::now_ms() / 1000 + PARTIAL_TTL_SECS;
        let r = self
            .update_request(format!("MSG#{}", lease.message_id), PARTIAL)
            .update_expression("SET #text = :text, claim_token = :t, expires_at = :exp")
            .condition_expression(
                "(attribute_not_exists(claim_token) OR claim_token <= :t) \
                 AND (attribute_not_exists(stop_token) OR stop_token <> :t)",
            )
            .expression_attribute_names("#text", "text")
            .expression_attribute_values(":text", s(text))
            .expression_attribute_values(":t", s(&lease.claim_token))
            .expression_attribute_values(":exp", n(expires))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let e = match r {
            Ok(_) => return Ok(Partial::Written),
            Err(e) => e,
        };
        let Some(refused) = e.as_service_error().and_then(|e| match e {
            UpdateItemError::ConditionalCheckFailedException(c) => Some(c),
            _ => None,
        }) else {
            return Err(backend("dynamodb update item (partial answer)")(e));
        };
        let stopped = refused.item().is_some_and(|i| get_s(i, "stop_token").as_deref() == Some(&lease.claim_token));
        Ok(if stopped { Partial::Stop } else { Partial::Lost })
    }

    async fn forget_partial(&self, message_id: &str) -> Result<()> {
        self.delete_keys(vec![(format!("MSG#{message_id}"), PARTIAL.to_string())]).await
    }

    async fn complete(&self, lease: &Lease, answer: &str, now_ms: i64, stopped: bool) -> Result<bool> {
        update_held(
            self,
            lease,
            "SET #s = :a, answer = :ans, updated_at = :now, stopped = :stopped REMOVE #e, stop_requested",
            vec![
                (":a", s("answered")),
                (":ans", s(answer)),
                (":now", n(now_ms)),
                (":stopped", AttributeValue::Bool(stopped)),
            ],
        )
        .await
    }

    async fn fail(&self, lease: &Lease, reason: &str, now_ms: i64, dead_lettered: bool) -> Result<bool> {
        let set = if dead_lettered {
            "SET #s = :fl, #e = :err, updated_at = :now, dead_lettered = :now REMOVE claim_token, answer, stop_requested"
        } else {
            "SET #s = :fl, #e = :err, updated_at = :now REMOVE claim_token, answer, stop_requested"
        };
        update_held(self, lease, set, vec![(":fl", s("failed")), (":err", s(reason)), (":now", n(now_ms))]).await
    }

    async fn release(&self, lease: &Lease, now_ms: i64) -> Result<bool> {
        update_held(
            self,
            lease,
            "SET #s = :q, lease_until = :zero, updated_at = :now REMOVE claim_token",
            vec![(":q", s("queued")), (":zero", n(0)), (":now", n(now_ms))],
        )
        .await
    }
}
