//! Many records in one request: a JSON array (a batch, one transaction) or
//! an `application/x-ndjson` import (one record per line, read as it
//! streams in and committed a batch at a time, in bounded memory).

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use serde_json::{Value, json};

use super::bodies::new_record;
use crate::AppState;
use crate::collection::CollectionName;
use crate::error::ApiError;
use crate::rules::Access;
use crate::store::{BatchError, StoreError};

/// How long an import waits before trying a batch again that the node
/// refused for its backlog (an import slows down rather than fail).
const OVERLOADED_PAUSE: Duration = Duration::from_millis(20);

/// Whether a request's body is newline-delimited JSON.
pub fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|kind| {
            let kind = kind.trim();
            kind.eq_ignore_ascii_case("application/x-ndjson")
                || kind.eq_ignore_ascii_case("application/jsonl")
        })
}

/// What became of one item of a batch.
pub enum Outcome {
    Created(Value),
    Failed(ApiError),
}

impl Outcome {
    pub fn created(&self) -> bool {
        matches!(self, Outcome::Created(_))
    }

    /// `{"status": 201, "record": ...}` or `{"status": ..., "error": ...}`.
    pub fn into_json(self) -> Value {
        match self {
            Outcome::Created(record) => json!({"status": 201, "record": record}),
            Outcome::Failed(error) => failed_item(&error),
        }
    }
}

/// A failed item of a batch (of records or of messages): the error as the
/// request alone would have got it, with its status.
pub fn failed_item(error: &ApiError) -> Value {
    let mut item = error.body();
    item["status"] = json!(error.status().as_u16());
    item
}

/// Creates `items` in one transaction, each judged on its own, or with
/// `atomic` all of them (else the first failure's error, naming its item,
/// and nothing written).
pub async fn create_batch(
    state: &AppState,
    collection: &CollectionName,
    create: &Access,
    items: Vec<Value>,
    atomic: bool,
) -> Result<Vec<Outcome>, ApiError> {
    let mut refused: Vec<Option<ApiError>> = Vec::with_capacity(items.len());
    let mut valid = Vec::with_capacity(items.len());
    let mut ids = HashSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let checked = new_record(collection, create, item).and_then(|(id, data)| {
            if ids.insert(id.clone()) {
                Ok((id, data))
            } else {
                Err(ApiError::Conflict(format!(
                    "record `{id}` is given twice in this batch"
                )))
            }
        });
        match checked {
            Ok(record) => {
                valid.push(record);
                refused.push(None);
            }
            Err(error) if atomic => return Err(item_error(index, error)),
            Err(error) => refused.push(Some(error)),
        }
    }
    let mut created = match state.store.create_records(collection, valid, atomic).await {
        Ok(created) => created.into_iter(),
        Err(BatchError::Item { index, error }) => return Err(item_error(index, error.into())),
        Err(BatchError::Store(error)) => return Err(error.into()),
    };
    Ok(refused
        .into_iter()
        .map(|refused| match refused {
            Some(error) => Outcome::Failed(error),
            None => match created.next() {
                Some(Ok(record)) => Outcome::Created(record),
                Some(Err(error)) => Outcome::Failed(error.into()),
                None => Outcome::Failed(
                    StoreError::Unexpected("a batch item went missing".into()).into(),
                ),
            },
        })
        .collect())
}

/// The error of a whole batch that one item failed: its message names the
/// item (counted from 0).
fn item_error(index: usize, error: ApiError) -> ApiError {
    let message = format!("item {index}: {error}; nothing was written");
    match error {
        ApiError::BadRequest { code, .. } => ApiError::bad_request(code, message),
        ApiError::Forbidden(_) => ApiError::Forbidden(message),
        ApiError::Conflict(_) => ApiError::Conflict(message),
        other => other,
    }
}

/// Lines an import commits per transaction (fewer if `--max-batch` is
/// lower). SurrealDB copies all a transaction has written so far for every
/// row it inserts (a save point per row), so a transaction's cost grows
/// with the square of its rows: measured on an embedded in-memory database,
/// 250 rows a transaction imported about 15,000 records/s, 1,000 about
/// 9,000 and 2,000 about 6,800.
const IMPORT_TRANSACTION: usize = 250;

/// Imports newline-delimited JSON records as they stream in, committing
/// [`IMPORT_TRANSACTION`] lines at a time (memory stays within a batch and
/// one line). Items failing on their own are reported with their line; a line
/// that is not JSON (or too long) stops the import there: every line before
/// it is committed, none after it is read.
pub async fn import(
    state: &AppState,
    collection: &CollectionName,
    create: &Access,
    body: Body,
) -> Result<Response, ApiError> {
    let max_line = state.config.max_body_bytes;
    let mut import = Import::new(state.config.max_batch.min(IMPORT_TRANSACTION));
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    let mut ended = false;
    loop {
        while let Some(end) = memchr::memchr(b'\n', &buffer) {
            let line = buffer.split_to(end + 1);
            if let Err(error) = import.line(&line[..end]) {
                return import.stop(state, collection, create, error).await;
            }
            if import.is_full()
                && let Err(error) = import.commit(state, collection, create).await
            {
                return Err(import.interrupted(error));
            }
        }
        if buffer.len() > max_line {
            let error = ApiError::PayloadTooLarge(format!(
                "line {} is longer than {max_line} bytes (--max-body-bytes)",
                import.lines + 1
            ));
            return import.stop(state, collection, create, error).await;
        }
        if ended {
            break;
        }
        match stream.next().await {
            Some(Ok(chunk)) => buffer.extend_from_slice(chunk.chunk()),
            Some(Err(error)) => {
                let error =
                    ApiError::bad_request("invalid_body", format!("reading the body: {error}"));
                return import.stop(state, collection, create, error).await;
            }
            None => {
                // The last line may lack its newline.
                if !buffer.is_empty() {
                    buffer.extend_from_slice(b"\n");
                }
                ended = true;
            }
        }
    }
    match import.commit(state, collection, create).await {
        Ok(()) => Ok(import.report()),
        Err(error) => Err(import.interrupted(error)),
    }
}

/// An import under way.
struct Import {
    max_batch: usize,
    /// Lines read so far (the next one is `lines + 1`).
    lines: usize,
    /// Records read and not yet committed, with their lines.
    pending: Vec<(usize, Value)>,
    created: usize,
    /// Items that failed on their own, with their line.
    failed: Vec<(usize, Outcome)>,
}

impl Import {
    fn new(max_batch: usize) -> Self {
        Import {
            max_batch,
            lines: 0,
            pending: Vec::new(),
            created: 0,
            failed: Vec::new(),
        }
    }

    /// Takes one line (blank ones are skipped); an error if it is not JSON.
    fn line(&mut self, line: &[u8]) -> Result<(), ApiError> {
        self.lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let value = serde_json::from_slice(line).map_err(|error| {
            ApiError::bad_request(
                "invalid_body",
                format!("line {} is not JSON: {error}", self.lines),
            )
        })?;
        self.pending.push((self.lines, value));
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.pending.len() >= self.max_batch
    }

    /// Commits the pending records as one batch, waiting while the node is
    /// overloaded.
    async fn commit(
        &mut self,
        state: &AppState,
        collection: &CollectionName,
        create: &Access,
    ) -> Result<(), ApiError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // An import slows down with the node rather than fail (a write
        // between this look and the batch's may still tip it over).
        while state.store.is_backlogged() {
            tokio::time::sleep(OVERLOADED_PAUSE).await;
        }
        let (lines, items): (Vec<usize>, Vec<Value>) = self.pending.drain(..).unzip();
        let outcomes = create_batch(state, collection, create, items, false).await?;
        for (line, outcome) in lines.into_iter().zip(outcomes) {
            if outcome.created() {
                self.created += 1;
            } else {
                self.failed.push((line, outcome));
            }
        }
        Ok(())
    }

    /// Ends the import at a line that cannot be read: what came before it
    /// is committed, and the error says so.
    async fn stop(
        mut self,
        state: &AppState,
        collection: &CollectionName,
        create: &Access,
        error: ApiError,
    ) -> Result<Response, ApiError> {
        if let Err(error) = self.commit(state, collection, create).await {
            return Err(self.interrupted(error));
        }
        Err(self.interrupted(error))
    }

    /// `error`, saying how far the import got before it.
    fn interrupted(self, error: ApiError) -> ApiError {
        let said = |error: &ApiError| {
            format!(
                "{error}; the import stopped there: {} records from the lines before were created ({} failed), nothing after was read",
                self.created,
                self.failed.len()
            )
        };
        match error {
            ApiError::BadRequest { code, .. } => ApiError::bad_request(code, said(&error)),
            ApiError::PayloadTooLarge(_) => ApiError::PayloadTooLarge(said(&error)),
            ApiError::Overloaded(_) => ApiError::Overloaded(said(&error)),
            ApiError::Forbidden(_) => ApiError::Forbidden(said(&error)),
            ApiError::Conflict(_) => ApiError::Conflict(said(&error)),
            // Opaque ones stay opaque.
            other => other,
        }
    }

    /// 201 when every record was created, else 207 with the failed ones.
    fn report(self) -> Response {
        let status = if self.failed.is_empty() {
            StatusCode::CREATED
        } else {
            StatusCode::MULTI_STATUS
        };
        let failed: Vec<Value> = self
            .failed
            .into_iter()
            .map(|(line, outcome)| {
                let mut item = outcome.into_json();
                item["line"] = json!(line);
                item
            })
            .collect();
        let body = json!({"created": self.created, "failed": failed});
        (status, Json(body)).into_response()
    }
}
