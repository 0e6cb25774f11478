//! `/api/v1/collections`: create, list, show, update and delete collections.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Client, ObjectBody, PathParams};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::rules::{Access, Action, Rules, RulesPatch, object, present, refused, some_object};
use crate::store::validate_name;

/// Body of `POST /api/v1/collections`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// Rules given here replace the defaults; absent ones keep them.
    #[serde(default, deserialize_with = "object")]
    rules: RulesPatch,
}

/// Body of `PATCH /api/v1/collections/{name}`: fields present are changed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionPatch {
    /// `Some(None)` (an explicit `null`) clears the description.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    /// Rules present are replaced.
    #[serde(default, deserialize_with = "some_object")]
    rules: Option<RulesPatch>,
}

/// Only admins manage collections.
fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    crate::rules::require_admin(caller, "manage collections")
}

/// A collection's metadata and rules, and what `caller` may do with
/// `action` there: 404 if there is no such collection, 401/403 if the rule
/// refuses every record.
pub async fn collection_access(
    state: &AppState,
    caller: &Caller,
    name: &str,
    action: Action,
) -> Result<(Value, Rules, Access), ApiError> {
    validate_name(name)?;
    let Some(meta) = state.store.get_collection(name).await? else {
        // A missing collection is judged by the default rules first, so a
        // caller they refuse (anyone anonymous) gets the same answer for a
        // collection that does not exist as for one it may not use, and
        // cannot probe which names exist.
        if Rules::default().access(action, caller).is_nothing() {
            return Err(refused(caller, action, name));
        }
        return Err(ApiError::NotFound(format!("no collection named `{name}`")));
    };
    let rules = Rules::of_collection(&meta);
    let access = rules.access(action, caller);
    if access.is_nothing() {
        return Err(refused(caller, action, name));
    }
    Ok((meta, rules, access))
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
    Client { caller, .. }: Client,
    ObjectBody(body): ObjectBody<NewCollection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_admin(&caller)?;
    validate_name(&body.name)?;
    check_description(body.description.as_deref())?;
    let rules = body.rules.apply(Rules::default())?;
    let collection = state
        .store
        .create_collection(&body.name, body.description.as_deref(), &rules)
        .await?;
    Ok((StatusCode::CREATED, Json(collection)))
}

/// The collections whose records the caller may read (some of them).
pub async fn list(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
) -> Result<Json<Value>, ApiError> {
    let mut collections = state.store.list_collections().await?;
    collections.retain(|meta| {
        !Rules::of_collection(meta)
            .access(Action::Read, &caller)
            .is_nothing()
    });
    Ok(Json(json!({ "items": collections })))
}

pub async fn show(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(name): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let (meta, _, _) = collection_access(&state, &caller, &name, Action::Read).await?;
    Ok(Json(meta))
}

pub async fn update(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(name): PathParams<String>,
    ObjectBody(patch): ObjectBody<CollectionPatch>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    validate_name(&name)?;
    check_description(patch.description.as_ref().and_then(|d| d.as_deref()))?;
    let rules = match patch.rules {
        None => None,
        Some(rules_patch) => {
            let Some(current) = state.store.get_collection(&name).await? else {
                return Err(ApiError::NotFound(format!("no collection named `{name}`")));
            };
            Some(rules_patch.apply(Rules::of_collection(&current))?)
        }
    };
    state
        .store
        .update_collection(&name, patch.description, rules.as_ref())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no collection named `{name}`")))
}

pub async fn remove(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    validate_name(&name)?;
    if state.store.delete_collection(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no collection named `{name}`")))
    }
}
