//! Accounts: users, profiles and tokens, each written only while its account exists, and the
//! deletion of an account with everything it owns, down to the bytes of the file and its log.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::messages::delete_messages;
use super::SqliteStore;
use crate::group_commit::Cached;
use crate::model::{Profile, TokenInfo, User};
use crate::store::{AccountStore, Result, StoreError, TOKENS_READ};

fn user_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User { id: r.get(0)?, email: r.get(1)?, password_hash: r.get(2)?, deleting: false })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// The user's profile, read in the caller's job.
pub(super) fn profile(c: &Connection, user_id: &str) -> rusqlite::Result<Option<Profile>> {
    c.row("SELECT display_name, keep_history, consented_at FROM profiles WHERE user_id = ?1", [user_id], |r| {
        Ok(Profile { display_name: r.get(0)?, keep_history: r.get(1)?, consented_at: r.get(2)? })
    })
    .optional()
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        let u = user.clone();
        let r = self
            .db
            .call(move |c| {
                match c.exec(
                    "INSERT INTO users (id, email, password_hash) VALUES (?1, ?2, ?3)",
                    params![u.id, u.email, u.password_hash],
                ) {
                    Ok(_) => Ok(true),
                    Err(e) if is_unique_violation(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if r {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.row("SELECT id, email, password_hash FROM users WHERE email = ?1", [email], user_row).optional()
            })
            .await?)
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let id = id.to_string();
        Ok(self
            .db
            .read(move |c| c.row("SELECT id, email, password_hash FROM users WHERE id = ?1", [id], user_row).optional())
            .await?)
    }

    async fn get_profile(&self, user_id: &str) -> Result<Option<Profile>> {
        let id = user_id.to_string();
        Ok(self.db.read(move |c| profile(c, &id)).await?)
    }

    async fn put_profile(&self, user_id: &str, p: &Profile) -> Result<()> {
        let (id, p) = (user_id.to_string(), p.clone());
        // Only while the account exists: a `PUT /v1/me` that passed its checks just before the
        // account's deletion writes nothing after it.
        let written = self
            .db
            .call(move |c| {
                c.exec(
                    "INSERT INTO profiles (user_id, display_name, keep_history, consented_at)
                     SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1)
                     ON CONFLICT(user_id) DO UPDATE SET display_name = ?2, keep_history = ?3, consented_at = ?4",
                    params![id, p.display_name, p.keep_history, p.consented_at],
                )
            })
            .await?;
        if written == 0 {
            return Err(StoreError::Gone);
        }
        Ok(())
    }

    async fn delete_user(&self, user: &User) -> Result<()> {
        // One transaction: a request in flight finds the account whole or gone, and every
        // write for it checks that it still exists.
        let id = user.id.clone();
        self.db
            .call(move |c| {
                let tx = c.savepoint()?;
                let ids: Vec<String> = tx
                    .prepare("SELECT id FROM messages WHERE user_id = ?1")?
                    .query_map([&id], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                delete_messages(&tx, &ids)?;
                tx.exec("DELETE FROM conversations WHERE user_id = ?1", [&id])?;
                tx.exec(
                    "DELETE FROM token_meta WHERE token_hash IN (SELECT token_hash FROM tokens WHERE user_id = ?1)",
                    [&id],
                )?;
                tx.exec("DELETE FROM tokens WHERE user_id = ?1", [&id])?;
                tx.exec("DELETE FROM profiles WHERE user_id = ?1", [&id])?;
                tx.exec("DELETE FROM spend WHERE user_id = ?1", [&id])?;
                tx.exec("DELETE FROM users WHERE id = ?1", [&id])?;
                tx.commit()
            })
            .await?;
        // secure_delete zeroed the rows in the pages written; the log still holds the pages as
        // they were until a checkpoint copies the new ones back and truncates it.
        self.db
            .alone(|c| {
                for _ in 0..200 {
                    let busy: i64 = c.row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                    if busy == 0 {
                        return Ok(true);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(false)
            })
            .await
            .and_then(|done| if done { Ok(()) } else { Err(anyhow::anyhow!("the log stayed busy")) })
            .map_err(|e| StoreError::Backend(e.context("checkpoint after deleting an account")))?;
        Ok(())
    }

    async fn set_password_hash(&self, user: &User, password_hash: &str) -> Result<()> {
        let (id, h) = (user.id.clone(), password_hash.to_string());
        self.db.call(move |c| c.exec("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![id, h])).await?;
        Ok(())
    }

    async fn create_token(&self, user_id: &str, token: &TokenInfo) -> Result<()> {
        let (t, u) = (token.clone(), user_id.to_string());
        self.db
            .call(move |c| {
                let tx = c.savepoint()?;
                let n = tx.exec(
                    "INSERT INTO tokens (token_hash, user_id, expires_at)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2)",
                    params![t.hash, u, t.expires_at],
                )?;
                if n == 0 {
                    return Ok(false);
                }
                tx.exec(
                    "INSERT INTO token_meta (token_hash, kind, created_at) VALUES (?1, ?2, ?3)",
                    params![t.hash, t.kind, t.created_at],
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await?
            .then_some(())
            .ok_or(StoreError::Gone)
    }

    async fn token_user(&self, token_hash: &str, now_ms: i64) -> Result<Option<String>> {
        let t = token_hash.to_string();
        Ok(self
            .db
            .read(move |c| {
                c.row(
                    "SELECT t.user_id FROM tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = ?1 AND t.expires_at > ?2",
                    params![t, now_ms],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?)
    }

    async fn list_tokens(&self, user_id: &str, now_ms: i64) -> Result<Vec<TokenInfo>> {
        let u = user_id.to_string();
        Ok(self
            .db
            .read(move |c| {
                let mut st = c.prepare(
                    "SELECT t.token_hash, COALESCE(m.kind, 'unknown'), COALESCE(m.created_at, 0), t.expires_at
                     FROM tokens t LEFT JOIN token_meta m ON m.token_hash = t.token_hash
                     WHERE t.user_id = ?1 AND t.expires_at > ?2 ORDER BY 3 DESC, 1 LIMIT ?3",
                )?;
                let rows = st.query_map(params![u, now_ms, TOKENS_READ as i64], |r| {
                    Ok(TokenInfo { hash: r.get(0)?, kind: r.get(1)?, created_at: r.get(2)?, expires_at: r.get(3)? })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?)
    }

    async fn delete_token(&self, token_hash: &str) -> Result<()> {
        let t = token_hash.to_string();
        self.db
            .call(move |c| {
                let tx = c.savepoint()?;
                tx.exec("DELETE FROM tokens WHERE token_hash = ?1", [&t])?;
                tx.exec("DELETE FROM token_meta WHERE token_hash = ?1", [&t])?;
                tx.commit()
            })
            .await?;
        Ok(())
    }
}
