//! Idempotency keys: the first answer to a write sent with a key, kept so
//! that a retry with the same key gets it again instead of writing twice.
//! In the database, so keys hold across restarts and nodes.

use serde_json::Value as Json;
use surrealdb::types::Value;

use super::records::record_json;
use super::schema::IDEMPOTENCY_TABLE;
use super::{Store, StoreError};

/// What a key held when a request claimed it.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The key was free: the request is the first, and runs.
    First,
    /// A request with the key is still running.
    Running { request: String },
    /// A request with the key was answered.
    Answered {
        request: String,
        status: u16,
        content_type: String,
        body: String,
    },
}

impl Store {
    /// Claims the key `id` (a digest of `owner`, the caller and its key)
    /// for a request with fingerprint `request`, until `expires` (Unix
    /// seconds): [`Claim::First`] if it was free (or had expired), else what
    /// it holds. A key whose row names another owner (a digest collision)
    /// is held by another request.
    pub async fn claim_key(
        &self,
        id: &str,
        owner: &str,
        request: &str,
        expires: u64,
    ) -> Result<Claim, StoreError> {
        let now = crate::clock::unix_now();
        let sql = format!(
            "DELETE type::record('{IDEMPOTENCY_TABLE}', $id) WHERE expires < $now;
             CREATE type::record('{IDEMPOTENCY_TABLE}', $id) CONTENT {{ owner: $owner, request: $request, expires: $expires }} RETURN NONE;"
        );
        let mut response = self
            .db
            .query(sql)
            .bind(("id", id.to_owned()))
            .bind(("owner", owner.to_owned()))
            .bind(("request", request.to_owned()))
            .bind(("expires", expires as i64))
            .bind(("now", now as i64))
            .await?;
        let mut errors = response.take_errors();
        match (errors.remove(&1), errors.into_values().next()) {
            (None, None) => return Ok(Claim::First),
            (None, Some(error)) => return Err(error.into()),
            (Some(error), _) if error.is_already_exists() => {}
            (Some(error), _) => return Err(error.into()),
        }
        let sql = format!("SELECT * FROM type::record('{IDEMPOTENCY_TABLE}', $id)");
        let rows: Vec<Value> = self
            .db
            .query(sql)
            .bind(("id", id.to_owned()))
            .await?
            .check()?
            .take(0)?;
        let Some(row) = rows.into_iter().next() else {
            // Answered and expired in between: rare enough to be retried.
            return Err(StoreError::Conflict);
        };
        let (_, _, row) = record_json(row);
        let text = |field: &str| row.get(field).and_then(Json::as_str).map(str::to_owned);
        let request = match text("owner") {
            Some(found) if found == owner => text("request").unwrap_or_default(),
            _ => String::new(),
        };
        Ok(match row.get("status").and_then(Json::as_u64) {
            None => Claim::Running { request },
            Some(status) => Claim::Answered {
                request,
                status: u16::try_from(status).unwrap_or(500),
                content_type: text("content_type").unwrap_or_default(),
                body: text("body").unwrap_or_default(),
            },
        })
    }

    /// Keeps the answer to the request that claimed key `id`.
    pub async fn keep_answer(
        &self,
        id: &str,
        status: u16,
        content_type: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE type::record('{IDEMPOTENCY_TABLE}', $id) MERGE {{ status: $status, content_type: $content_type, body: $body }} RETURN NONE"
        );
        self.db
            .query(sql)
            .bind(("id", id.to_owned()))
            .bind(("status", i64::from(status)))
            .bind(("content_type", content_type.to_owned()))
            .bind(("body", body.to_owned()))
            .await?
            .check()?;
        Ok(())
    }

    /// Frees key `id` (its request failed in a way a retry may not).
    pub async fn release_key(&self, id: &str) -> Result<(), StoreError> {
        let sql = format!("DELETE type::record('{IDEMPOTENCY_TABLE}', $id)");
        self.db
            .query(sql)
            .bind(("id", id.to_owned()))
            .await?
            .check()?;
        Ok(())
    }
}
