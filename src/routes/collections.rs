//! `/api/v1/collections`: create, list, show, update and delete collections.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Client, ObjectBody, PathParams};
use crate::AppState;
use crate::collection::{CollectionMeta, CollectionName};
use crate::error::ApiError;
use crate::fields::{object, present, some_object};
use crate::identity::Caller;
use crate::rules::{Access, Action, Rules, parse_rule};

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
    Ok(crate::access::require_admin(caller, "manage collections")?)
}

/// A collection's metadata, and what `caller` may do with `action` there:
/// 404 if there is no such collection, 401/403 if the rule refuses every
/// record.
pub async fn collection_access(
    state: &AppState,
    caller: &Caller,
    name: &CollectionName,
    action: Action,
) -> Result<(Arc<CollectionMeta>, Access), ApiError> {
    // From memory when the hub's book is current (see
    // `Hub::rules_for_requests`); a collection it does not know may have
    // been made a moment ago on another node.
    let known = state
        .hub
        .rules_for_requests()
        .and_then(|book| book.get(name.as_str()).cloned());
    let meta = match known {
        Some(meta) => Some(meta),
        None => state.store.get_collection(name).await?.map(Arc::new),
    };
    let rules = meta.as_ref().map(|meta| &meta.rules);
    let access = crate::access::collection_access(rules, name.as_str(), caller, action)?;
    // A missing collection was refused just above.
    let meta = meta.ok_or_else(|| ApiError::no_collection(name.as_str()))?;
    Ok((meta, access))
}

/// Body field `rules` of the collection routes: rules present are set (an
/// explicit `null` means admins only), absent ones keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesPatch {
    #[serde(default, deserialize_with = "present")]
    read: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    create: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    update: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    delete: Option<Option<String>>,
}

impl RulesPatch {
    /// `rules` with this patch applied; every rule set must parse.
    pub fn apply(self, mut rules: Rules) -> Result<Rules, ApiError> {
        let fields = [
            ("read", self.read, &mut rules.read),
            ("create", self.create, &mut rules.create),
            ("update", self.update, &mut rules.update),
            ("delete", self.delete, &mut rules.delete),
        ];
        for (name, change, slot) in fields {
            let Some(change) = change else { continue };
            if let Some(text) = &change {
                parse_rule(text).map_err(|error| {
                    ApiError::bad_request("invalid_rule", format!("rule `{name}`: {error}"))
                })?;
            }
            *slot = change;
        }
        Ok(rules)
    }
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
    let name = CollectionName::new(&body.name)?;
    check_description(body.description.as_deref())?;
    let rules = body.rules.apply(Rules::default())?;
    let created = state
        .store
        .create_collection(&name, body.description.as_deref(), &rules)
        .await;
    state.hub.note_collection_change();
    Ok((StatusCode::CREATED, Json(json!(created?))))
}

/// The collections whose records the caller may read (some of them).
pub async fn list(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
) -> Result<Json<Value>, ApiError> {
    let mut collections = state.store.list_collections().await?;
    collections.retain(|meta| !meta.rules.access(Action::Read, &caller).is_nothing());
    Ok(Json(json!({ "items": collections })))
}

pub async fn show(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(name): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let name = CollectionName::new(&name)?;
    let (meta, _) = collection_access(&state, &caller, &name, Action::Read).await?;
    Ok(Json(json!(meta)))
}

pub async fn update(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(name): PathParams<String>,
    ObjectBody(patch): ObjectBody<CollectionPatch>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let name = CollectionName::new(&name)?;
    check_description(patch.description.as_ref().and_then(|d| d.as_deref()))?;
    let rules = match patch.rules {
        None => None,
        Some(rules_patch) => {
            let Some(current) = state.store.get_collection(&name).await? else {
                return Err(ApiError::no_collection(name.as_str()));
            };
            Some(rules_patch.apply(current.rules)?)
        }
    };
    let updated = state
        .store
        .update_collection(&name, patch.description, rules.as_ref())
        .await;
    // Requests on this node read the new rules from the database until the
    // feed brings them to the hub: in force once this is answered.
    state.hub.note_collection_change();
    updated?
        .map(|meta| Json(json!(meta)))
        .ok_or_else(|| ApiError::no_collection(name.as_str()))
}

pub async fn remove(
    State(state): State<AppState>,
    Client { caller, .. }: Client,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let name = CollectionName::new(&name)?;
    let deleted = state.store.delete_collection(&name).await;
    state.hub.note_collection_change();
    if deleted? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::no_collection(name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patches_set_rules_and_refuse_bad_ones() {
        let patch: RulesPatch =
            serde_json::from_value(json!({"read": "true", "delete": "owner = $auth.sub"})).unwrap();
        let rules = patch.apply(Rules::default()).unwrap();
        assert_eq!(rules.read.as_deref(), Some("true"));
        assert_eq!(rules.create, None);
        assert_eq!(rules.delete.as_deref(), Some("owner = $auth.sub"));
        let clear: RulesPatch = serde_json::from_value(json!({"read": null})).unwrap();
        assert_eq!(clear.apply(rules).unwrap().read, None);
        let bad: RulesPatch = serde_json::from_value(json!({"update": "owner = "})).unwrap();
        let error = bad.apply(Rules::default()).unwrap_err().to_string();
        assert!(
            error.starts_with("rule `update`: expected a value"),
            "{error}"
        );
        assert!(serde_json::from_value::<RulesPatch>(json!({"write": "true"})).is_err());
    }
}
