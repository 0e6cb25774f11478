//! `/api/v1/collections`: create, list, show, update and delete collections.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JsonBody, PathParams};
use crate::AppState;
use crate::error::ApiError;
use crate::store::validate_name;

/// Body of `POST /api/v1/collections`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

/// Body of `PATCH /api/v1/collections/{name}`: fields present are changed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionPatch {
    /// `Some(None)` (an explicit `null`) clears the description.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

const MAX_DESCRIPTION_LEN: usize = 4096;

fn check_description(description: Option<&str>) -> Result<(), ApiError> {
    match description {
        Some(text) if text.len() > MAX_DESCRIPTION_LEN => Err(ApiError::bad_request(
            "invalid_body",
            format!("`description` is longer than {MAX_DESCRIPTION_LEN} bytes"),
        )),
        _ => Ok(()),
    }
}

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewCollection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    validate_name(&body.name)?;
    check_description(body.description.as_deref())?;
    let collection = state
        .store
        .create_collection(&body.name, body.description.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(collection)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let collections = state.store.list_collections().await?;
    Ok(Json(json!({ "items": collections })))
}

pub async fn show(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    validate_name(&name)?;
    state
        .store
        .get_collection(&name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no collection named `{name}`")))
}

pub async fn update(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    JsonBody(patch): JsonBody<CollectionPatch>,
) -> Result<Json<Value>, ApiError> {
    validate_name(&name)?;
    check_description(patch.description.as_ref().and_then(|d| d.as_deref()))?;
    state
        .store
        .update_collection(&name, patch.description)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no collection named `{name}`")))
}

pub async fn remove(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    validate_name(&name)?;
    if state.store.delete_collection(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no collection named `{name}`")))
    }
}
