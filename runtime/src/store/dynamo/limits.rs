//! What a post is checked against, kept in the table so that every api task counts alike: the
//! post's context (conversation, profile, today's spend) in one read, the daily spend of a user
//! and of everyone, a user's in-flight slots, and the rate limits the api tasks share.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::ReturnValue;

use super::item::{conversation_from, get_n, get_s, key_item, n, not_gone, profile_from, update};
use super::table::{backend, condition_failed};
use super::DynamoStore;
use crate::store::{Charge, LimitStore, PostContext, Result, SpendReads};

/// A user's in-flight count untouched this long has leaked: it is reset at the next post.
const SLOT_LEAK_MS: i64 = 10 * 60 * 1000;

/// The update of a spend count: `:t` tokens more, kept until `:x` ([`spend_expiry`]).
const ADD_SPEND: &str = "ADD tokens :t SET expires_at = :x";

/// Spend counts are kept two days past their day, then DynamoDB's TTL removes them.
fn spend_expiry(day: i64) -> i64 {
    (day + 3) * 86_400
}

/// Adds `delta` to the user's count of `day`, unless the account is deleted.
async fn add_user_spend(store: &DynamoStore, user_id: &str, day: i64, delta: i64) -> Result<()> {
    let values = vec![(":t", n(delta)), (":x", n(spend_expiry(day)))];
    let key = (format!("USERID#{user_id}"), format!("SPEND#{day}"));
    let user = update(&store.table, key, ADD_SPEND, None, &[], values)?;
    // False when the account was deleted meanwhile: nothing to count for it.
    store.transact("dynamodb add user spend", vec![not_gone(&store.table, user_id)?, user]).await?;
    Ok(())
}

/// The update adding `delta` to everyone's count of `day`, for the caller to send.
fn add_all_spend(store: &DynamoStore, day: i64, delta: i64) -> UpdateItemFluentBuilder {
    store
        .update_request(format!("SPEND#{day}"), "ALL")
        .update_expression(ADD_SPEND)
        .expression_attribute_values(":t", n(delta))
        .expression_attribute_values(":x", n(spend_expiry(day)))
}

#[async_trait]
impl LimitStore for DynamoStore {
    async fn post_context(&self, user_id: &str, conversation_id: &str, spend: SpendReads) -> Result<PostContext> {
        let day = spend.day;
        let conv_key = (format!("CONV#{conversation_id}"), "CONV".to_string());
        let profile_key = (format!("USERID#{user_id}"), "PROFILE".to_string());
        let user_spend = (format!("USERID#{user_id}"), format!("SPEND#{day}"));
        let all_spend = (format!("SPEND#{day}"), "ALL".to_string());
        let wanted = [(&conv_key, true), (&profile_key, true), (&user_spend, spend.user), (&all_spend, spend.all)];
        let keys = wanted.iter().filter(|(_, w)| *w).map(|((pk, sk), _)| key_item(pk.clone(), sk.clone()));
        let items = self.batch_get(keys.collect()).await?;
        let find = |k: &(String, String)| {
            items.iter().find(|i| {
                get_s(i, "pk").as_deref() == Some(k.0.as_str()) && get_s(i, "sk").as_deref() == Some(k.1.as_str())
            })
        };
        Ok(PostContext {
            conversation: find(&conv_key).and_then(|i| conversation_from(conversation_id, i)),
            profile: find(&profile_key).map(profile_from),
            user_tokens_today: find(&user_spend).map_or(0, |i| get_n(i, "tokens").max(0) as u64),
            all_tokens_today: find(&all_spend).map_or(0, |i| get_n(i, "tokens").max(0) as u64),
        })
    }

    async fn charge_spend(&self, user_id: &str, day: i64, tokens: u64, user_cap: u64, all_cap: u64) -> Result<Charge> {
        if user_cap > 0 && tokens > user_cap {
            return Ok(Charge::OverUser);
        }
        if all_cap > 0 && tokens > all_cap {
            return Ok(Charge::OverAll);
        }
        // The user's count in a transaction with the account's tombstone check (nothing is
        // counted for a deleted account); conditional on the room left under the cap.
        let t = tokens as i64;
        let room = "attribute_not_exists(tokens) OR tokens <= :room";
        let mut values = vec![(":t", n(t)), (":x", n(spend_expiry(day)))];
        if user_cap > 0 {
            values.push((":room", n(user_cap as i64 - t)));
        }
        let key = (format!("USERID#{user_id}"), format!("SPEND#{day}"));
        let user = update(&self.table, key, ADD_SPEND, (user_cap > 0).then_some(room), &[], values)?;
        let items = vec![not_gone(&self.table, user_id)?, user];
        match self.transact_which("dynamodb charge user spend", items).await? {
            None => {}
            Some(1) => return Ok(Charge::OverUser),
            // The account is deleted: its message goes with it; nothing to spend on it.
            Some(_) => return Ok(Charge::OverUser),
        }
        // Everyone's count apart, not in the transaction: one item every charge writes, where
        // transactions would conflict with each other; a plain update waits its turn instead.
        let mut all = add_all_spend(self, day, t).return_values(ReturnValue::UpdatedNew);
        if all_cap > 0 {
            all = all.condition_expression(room).expression_attribute_values(":room", n(all_cap as i64 - t));
        }
        match all.send().await {
            Ok(out) => {
                let today = out.attributes.as_ref().map_or(0, |a| get_n(a, "tokens").max(0) as u64);
                Ok(Charge::Charged { all_today: today })
            }
            Err(e) => {
                let over = condition_failed(&e);
                // Undo the user's part: the message is not sent (or not now).
                add_user_spend(self, user_id, day, -t).await?;
                if over {
                    Ok(Charge::OverAll)
                } else {
                    Err(backend("dynamodb charge spend")(e))
                }
            }
        }
    }

    async fn add_spend(&self, user_id: &str, day: i64, delta: i64) -> Result<()> {
        add_user_spend(self, user_id, day, delta).await?;
        add_all_spend(self, day, delta).send().await.map_err(backend("dynamodb add spend"))?;
        Ok(())
    }

    async fn take_slot(&self, user_id: &str, cap: u32, now_ms: i64) -> Result<bool> {
        let take = || {
            self.update_request(format!("USERID#{user_id}"), "INFLIGHT")
                .update_expression("ADD n :one SET touched = :now")
                .condition_expression("attribute_not_exists(n) OR n < :cap")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":cap", n(i64::from(cap)))
                .send()
        };
        match take().await {
            Ok(_) => return Ok(true),
            Err(e) if condition_failed(&e) => {}
            Err(e) => return Err(backend("dynamodb take in-flight slot")(e)),
        }
        // All taken. Untouched for 10 minutes, the count has leaked (no answer or failure gave a
        // slot back in that time): it starts again at this message.
        let Some(item) = self.get(format!("USERID#{user_id}"), "INFLIGHT").await? else { return Ok(false) };
        let touched = get_n(&item, "touched");
        if now_ms - touched < SLOT_LEAK_MS {
            return Ok(false);
        }
        let reset = self
            .update_request(format!("USERID#{user_id}"), "INFLIGHT")
            .update_expression("SET n = :one, touched = :now")
            .condition_expression("touched = :then")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":then", n(touched))
            .send()
            .await;
        match reset {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(backend("dynamodb reset in-flight slots")(e)),
        }
    }

    async fn free_slot(&self, user_id: &str, now_ms: i64) -> Result<()> {
        let r = self
            .update_request(format!("USERID#{user_id}"), "INFLIGHT")
            .update_expression("ADD n :minus SET touched = :now")
            .condition_expression("n > :zero")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match r {
            // Already at 0 (a reset, or a redriven message given back twice): nothing to give.
            Err(e) if condition_failed(&e) => Ok(()),
            r => r.map(|_| ()).map_err(backend("dynamodb free in-flight slot")),
        }
    }

    async fn take_rate(&self, key: &str, limit: u32, window_ms: i64, now_ms: i64) -> Result<Option<i64>> {
        let window = now_ms.div_euclid(window_ms);
        let ends = (window + 1) * window_ms;
        let r = self
            .update_request(format!("RATE#{key}"), window.to_string())
            .update_expression("ADD uses :one SET expires_at = :x")
            .condition_expression("attribute_not_exists(uses) OR uses < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(i64::from(limit)))
            // Gone with DynamoDB's TTL a day after the window.
            .expression_attribute_values(":x", n(ends / 1000 + 86_400))
            .send()
            .await;
        match r {
            Ok(_) => Ok(None),
            Err(e) if condition_failed(&e) => Ok(Some((ends - now_ms).max(1))),
            Err(e) => Err(backend("dynamodb take rate")(e)),
        }
    }
}
