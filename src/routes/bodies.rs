//! What a request's JSON must be to become a record: an object whose
//! numbers survive storage, with an id given or generated, that passes the
//! collection's `create` rule. Shared by single writes and batches.

use serde_json::{Map, Value};

use crate::collection::{CollectionName, RecordKey};
use crate::error::ApiError;
use crate::rules::Access;

/// A record to create from a request's JSON: its id (given or generated)
/// and fields, checked against the `create` rule.
pub fn new_record(
    collection: &CollectionName,
    create: &Access,
    body: Value,
) -> Result<(RecordKey, Map<String, Value>), ApiError> {
    let mut data = record_body(body)?;
    let id = match data.remove("id") {
        None | Some(Value::Null) => RecordKey::generate(),
        Some(Value::String(id)) => RecordKey::new(&id)?,
        Some(_) => return Err(ApiError::bad_request("invalid_id", "`id` must be a string")),
    };
    if let Access::Matching(rule) = create {
        let mut candidate = data.clone();
        candidate.insert("id".into(), Value::String(id.to_string()));
        if !rule.matches(&Value::Object(candidate)) {
            return Err(ApiError::Forbidden(format!(
                "the record does not pass the `create` rule of `{collection}`"
            )));
        }
    }
    Ok((id, data))
}

/// Checks that a record body is an object whose numbers survive storage.
pub fn record_body(body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(data) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "a record must be a JSON object",
        ));
    };
    for value in data.values() {
        check_numbers(value)?;
    }
    Ok(data)
}

/// SurrealDB stores integers as 64-bit signed: a larger one would come back
/// changed, so it is refused rather than silently altered.
fn check_numbers(value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Number(number) if number.is_u64() && number.as_i64().is_none() => {
            Err(ApiError::bad_request(
                "invalid_body",
                format!(
                    "the integer {number} is out of range: integers must fit in 64-bit signed (send larger ones as strings)"
                ),
            ))
        }
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(fields) => fields.values().try_for_each(check_numbers),
        _ => Ok(()),
    }
}
