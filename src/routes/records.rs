//! `/api/v1/collections/{name}/records`: the records of a collection.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::bodies::{new_record, record_body};
use super::collections::collection_access;
use super::{Client, JsonBody, PathParams, QueryParams, batches};
use crate::AppState;
use crate::collection::{CollectionName, RecordKey};
use crate::error::ApiError;
use crate::event::EventId;
use crate::filter::Filter;
use crate::identity::{Caller, claims_of};
use crate::rules::{Action, both};
use crate::shape::Shape;
use crate::sort::parse_sort;
use crate::store::RuleChecks;

/// The checks an update or delete runs in its transaction: the record must
/// be readable (else it is "not found") and pass the action's rule.
async fn write_checks(
    state: &AppState,
    caller: &Caller,
    collection: &CollectionName,
    action: Action,
) -> Result<RuleChecks, ApiError> {
    let (meta, write) = collection_access(state, caller, collection, action).await?;
    Ok(RuleChecks {
        read: meta.rules.access(Action::Read, caller).condition(),
        write: write.condition(),
        write_after: action == Action::Update,
    })
}

/// Largest page of `GET .../records`.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 50;

/// Query of `GET .../records`.
#[derive(Deserialize)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
    /// Opaque: the `next_cursor` of the previous page.
    cursor: Option<String>,
    /// A field to sort by, `-` first for descending. Default `-id` (newest
    /// first, for generated ids).
    sort: Option<String>,
    /// A filter expression: only matching records are listed.
    filter: Option<String>,
    /// Only these fields (and `id`) of each record, comma-separated.
    fields: Option<String>,
}

/// Query of `GET .../records/{id}`.
#[derive(Deserialize)]
pub struct ShowParams {
    /// Only these fields (and `id`), comma-separated.
    fields: Option<String>,
}

/// Query of `POST .../records`.
#[derive(Deserialize, Default)]
pub struct CreateParams {
    /// For a batch: all items or none (default: each item on its own).
    atomic: Option<bool>,
}

/// Creates one record (a JSON object), a batch (a JSON array of them), or
/// an import (`application/x-ndjson`: one record per line; see `batches`).
pub async fn create(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(collection): PathParams<String>,
    QueryParams(params): QueryParams<CreateParams>,
    request: Request,
) -> Result<Response, ApiError> {
    // The body is read first, so a malformed one is a 400 whatever the
    // collection; an import is read as it streams in, after the checks.
    let body = if batches::is_ndjson(request.headers()) {
        Err(request.into_body())
    } else {
        Ok(JsonBody::<Value>::from_request(request, &state).await?.0)
    };
    let collection = CollectionName::new(&collection)?;
    let (_, create) = collection_access(&state, &caller, &collection, Action::Create).await?;
    let items = match body {
        Err(stream) => {
            if params.atomic.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "`atomic` is for JSON batches; an import commits each batch of lines as it comes",
                ));
            }
            return batches::import(&state, &collection, &create, stream).await;
        }
        Ok(Value::Array(items)) => items,
        Ok(body) => {
            if params.atomic.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "`atomic` is for batches: send a JSON array of records",
                ));
            }
            let (id, data) = new_record(&collection, &create, body)?;
            let record = state.store.create_record(&collection, &id, data).await?;
            return Ok((StatusCode::CREATED, Json(record)).into_response());
        }
    };
    let max = state.config.max_batch;
    if items.is_empty() || items.len() > max {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "a batch holds 1 to {max} records (--max-batch); this one holds {}",
                items.len()
            ),
        ));
    }
    let atomic = params.atomic.unwrap_or(false);
    let items = batches::create_batch(&state, &collection, &create, items, atomic).await?;
    let status = if items.iter().all(batches::Outcome::created) {
        StatusCode::CREATED
    } else {
        StatusCode::MULTI_STATUS
    };
    let items: Vec<Value> = items.into_iter().map(batches::Outcome::into_json).collect();
    Ok((status, Json(json!({ "items": items }))).into_response())
}

pub async fn show(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams((collection, id)): PathParams<(String, String)>,
    QueryParams(params): QueryParams<ShowParams>,
) -> Result<Json<Value>, ApiError> {
    let collection = CollectionName::new(&collection)?;
    let id = RecordKey::new(&id)?;
    let shape = Shape::parse(params.fields.as_deref(), false)?;
    let (_, read) = collection_access(&state, &caller, &collection, Action::Read).await?;
    let record = state.store.get_record(&collection, &id).await?;
    // A record the caller may not read does not exist, as far as it knows.
    if !read.allows(&record) {
        return Err(no_record(&collection, &id));
    }
    Ok(Json(shape.project(&record).into_owned()))
}

pub async fn list(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(collection): PathParams<String>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let collection = CollectionName::new(&collection)?;
    let limit = match params.limit {
        None => DEFAULT_PAGE,
        Some(limit @ 1..=MAX_PAGE) => limit,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`limit` must be between 1 and {MAX_PAGE}"),
            ));
        }
    };
    let offset = match params.cursor.as_deref() {
        None | Some("") => 0,
        Some(cursor) => parse_cursor(cursor)?,
    };
    let sort = parse_sort(params.sort.as_deref().unwrap_or("-id"))?;
    let shape = Shape::parse(params.fields.as_deref(), false)?;
    let filter = match params.filter.as_deref() {
        Some(text) if !text.trim().is_empty() => {
            Some(Filter::parse(text)?.expr().bind(claims_of(&caller)))
        }
        _ => None,
    };
    let (_, read) = collection_access(&state, &caller, &collection, Action::Read).await?;
    let condition = both(filter, read.condition());
    // Taken before the read: every change below the hub's cursor is
    // visible to it, so resuming a stream from here misses nothing the
    // page does not show.
    let position = EventId::before_stamp(state.hub.cursor());
    let items = state
        .store
        .list_records(&collection, condition.as_ref(), &sort, limit + 1, offset)
        .await?;
    let mut items = items;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        Some(format!("o{}", offset + u64::from(limit)))
    } else {
        None
    };
    let items: Vec<Value> = match shape.fields {
        None => items,
        Some(_) => items
            .iter()
            .map(|item| shape.project(item).into_owned())
            .collect(),
    };
    Ok(Json(json!({
        "items": items,
        "next_cursor": next_cursor,
        "position": position.to_string(),
    })))
}

pub async fn merge(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams((collection, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let (collection, id, data) = update_body(&collection, &id, body)?;
    let checks = write_checks(&state, &caller, &collection, Action::Update).await?;
    state
        .store
        .merge_record(&collection, &id, data, &checks)
        .await?
        .map(Json)
        .ok_or_else(|| no_record(&collection, &id))
}

pub async fn replace(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams((collection, id)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let (collection, id, data) = update_body(&collection, &id, body)?;
    let checks = write_checks(&state, &caller, &collection, Action::Update).await?;
    state
        .store
        .replace_record(&collection, &id, data, &checks)
        .await?
        .map(Json)
        .ok_or_else(|| no_record(&collection, &id))
}

pub async fn remove(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams((collection, id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let collection = CollectionName::new(&collection)?;
    let id = RecordKey::new(&id)?;
    let checks = write_checks(&state, &caller, &collection, Action::Delete).await?;
    match state.store.delete_record(&collection, &id, &checks).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(no_record(&collection, &id)),
    }
}

fn no_record(collection: &CollectionName, id: &RecordKey) -> ApiError {
    ApiError::no_record(collection.as_str(), id.as_str())
}

/// The parts of a PATCH or PUT: its collection and record, and a body that
/// is an object whose `id`, if any, is the path's.
fn update_body(
    collection: &str,
    id: &str,
    body: Value,
) -> Result<(CollectionName, RecordKey, Map<String, Value>), ApiError> {
    let collection = CollectionName::new(collection)?;
    let id = RecordKey::new(id)?;
    let mut data = record_body(body)?;
    match data.remove("id") {
        None | Some(Value::Null) => Ok((collection, id, data)),
        Some(Value::String(body_id)) if body_id == id.as_str() => Ok((collection, id, data)),
        Some(_) => Err(ApiError::bad_request(
            "invalid_id",
            "the body's `id` differs from the id in the path; records cannot be renamed",
        )),
    }
}

fn parse_cursor(cursor: &str) -> Result<u64, ApiError> {
    cursor
        .strip_prefix('o')
        .and_then(|offset| offset.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "`cursor` is not a cursor this server returned",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_integers_are_refused() {
        assert!(record_body(json!({"n": 9_223_372_036_854_775_807i64})).is_ok());
        assert!(record_body(json!({"n": {"deep": [18_446_744_073_709_551_615u64]}})).is_err());
        assert!(record_body(json!([1])).is_err());
    }
}
