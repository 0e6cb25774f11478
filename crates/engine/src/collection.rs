//! What names a collection and its records, and what a collection is.
//!
//! [`CollectionName`] and [`RecordKey`] are checked when they are made (or
//! deserialized), so a value of either type can be spliced into SurrealQL,
//! escaped, wherever the store needs it: safe splicing is a property of the
//! type, not of a check each caller must remember. [`CollectionMeta`] is a
//! collection's metadata as the store decodes it, once.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as Json;
use time::OffsetDateTime;

use crate::clock::{Stamp, parse_time, unix_ms};
use crate::rules::Rules;

/// Longest collection name.
pub(crate) const MAX_NAME_LEN: usize = 64;
/// Longest record key.
pub(crate) const MAX_KEY_LEN: usize = 128;

/// Why a text is not a collection name or a record key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error(
        "`{0}` is not a valid collection name: use a letter followed by up to {max} letters, digits or underscores",
        max = MAX_NAME_LEN - 1
    )]
    Collection(String),
    #[error("`{0}` is not a valid record id: use 1 to {MAX_KEY_LEN} letters, digits, `_` or `-`")]
    Record(String),
}

/// What an error message shows of a text that was refused.
fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A collection's name: a letter, then letters, digits or `_`, at most
/// [`MAX_NAME_LEN`] in all. No name can start with `_`, so none collides
/// with livehub's own tables. Cloning is shallow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CollectionName(Arc<str>);

impl CollectionName {
    pub fn new(name: &str) -> Result<CollectionName, InvalidName> {
        let mut chars = name.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !starts_with_letter
            || name.len() > MAX_NAME_LEN
            || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(InvalidName::Collection(shown(name)));
        }
        Ok(CollectionName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the hub keys its topics.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CollectionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CollectionName::new(&text).map_err(serde::de::Error::custom)
    }
}

/// The key of a record written through livehub: 1 to [`MAX_KEY_LEN`]
/// letters, digits, `_` or `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RecordKey(String);

impl RecordKey {
    pub fn new(key: &str) -> Result<RecordKey, InvalidName> {
        if key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(InvalidName::Record(shown(key)));
        }
        Ok(RecordKey(key.to_owned()))
    }

    /// A new key: a lower-case ULID, so generated keys sort by creation
    /// time, strictly increasing within this process (even within a
    /// millisecond).
    pub fn generate() -> RecordKey {
        // A std mutex: generating an id is a few arithmetic steps, never awaited.
        static GENERATOR: std::sync::Mutex<ulid::Generator> =
            std::sync::Mutex::new(ulid::Generator::new());
        let generated = GENERATOR
            .lock()
            .map(|mut generator| generator.generate())
            .unwrap_or_else(|poisoned| poisoned.into_inner().generate());
        // The generator only fails after 2^80 ids in one millisecond.
        RecordKey(
            generated
                .unwrap_or_else(|_| ulid::Ulid::new())
                .to_string()
                .to_ascii_lowercase(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RecordKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RecordKey::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A collection's metadata, as stored in `_lh_collections` and shown to
/// clients. Fields are in alphabetical order, as the JSON of a stored row
/// lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// When it was created (RFC 3339), if known.
    #[serde(default)]
    pub(crate) created: Option<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    pub(crate) name: String,
    /// Absent (a collection made before rules existed): the defaults.
    /// Present but unreadable (written by another client): admins only,
    /// never open.
    #[serde(default, deserialize_with = "rules_or_admins_only")]
    pub rules: Rules,
    #[serde(default)]
    pub(crate) updated: Option<String>,
}

fn rules_or_admins_only<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Rules, D::Error> {
    let value = Json::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or(Rules::ADMINS_ONLY))
}

impl CollectionMeta {
    /// Decodes a stored row or a collection event's data; `name` is the
    /// row's key, for rows that lack the field. `None` if it is not an
    /// object.
    pub(crate) fn decode(row: &Json, name: &str) -> Option<CollectionMeta> {
        let mut row = row.as_object()?.clone();
        row.remove("id");
        row.entry("name")
            .or_insert_with(|| Json::String(name.to_owned()));
        if !row.get("name").is_some_and(Json::is_string) {
            row.insert("name".into(), Json::String(name.to_owned()));
        }
        for field in ["created", "description", "updated"] {
            if row.get(field).is_some_and(|value| !value.is_string()) {
                row.insert(field.into(), Json::Null);
            }
        }
        serde_json::from_value(Json::Object(row)).ok()
    }

    /// When this collection was created, if known.
    pub(crate) fn created_at(&self) -> Option<OffsetDateTime> {
        self.created.as_deref().and_then(parse_time)
    }

    /// Whether a change committed at `stamp` to a collection of this name
    /// is older than this collection (it belonged to a deleted one).
    pub(crate) fn predates(&self, stamp: Stamp) -> bool {
        self.created_at()
            .is_some_and(|created| (stamp.millis() as i64) < unix_ms(created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collection_names_are_checked() {
        for good in ["posts", "a", "Posts_2024", &"a".repeat(MAX_NAME_LEN)] {
            assert!(CollectionName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "_lh_collections",
            "1posts",
            "po-sts",
            "po sts",
            "pösts",
            "a`b",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(CollectionName::new(bad).is_err(), "{bad}");
            assert!(
                serde_json::from_value::<CollectionName>(json!(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn record_keys_are_checked() {
        let generated = RecordKey::generate();
        for good in ["abc123", "a-b_c", "1", generated.as_str()] {
            assert!(RecordKey::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a:b", "⟨x⟩", "a`", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(RecordKey::new(bad).is_err(), "{bad}");
            assert!(
                serde_json::from_value::<RecordKey>(json!(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn generated_keys_sort_by_creation() {
        let keys: Vec<RecordKey> = (0..1000).map(|_| RecordKey::generate()).collect();
        assert!(keys.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(keys.iter().all(|key| key.as_str().len() == 26));
    }

    #[test]
    fn collections_without_rules_get_the_defaults() {
        let decode = |row: Json| CollectionMeta::decode(&row, "x").unwrap();
        assert_eq!(decode(json!({"name": "x"})).rules, Rules::default());
        let meta =
            json!({"rules": {"read": null, "create": "true", "update": null, "delete": null}});
        assert_eq!(decode(meta).rules.read, None);
        let garbled = json!({"rules": {"read": 7}});
        assert_eq!(decode(garbled).rules, Rules::ADMINS_ONLY);
        assert_eq!(decode(json!({"id": "x"})).name, "x");
        assert!(CollectionMeta::decode(&json!([1]), "x").is_none());
    }

    #[test]
    fn a_collection_predates_nothing_older_than_itself() {
        let meta =
            CollectionMeta::decode(&json!({"created": "2023-11-14T22:13:20.123Z"}), "x").unwrap();
        assert!(meta.predates(Stamp::of_millis(1_700_000_000_122)));
        assert!(!meta.predates(Stamp::of_millis(1_700_000_000_123)));
        let undated = CollectionMeta::decode(&json!({}), "x").unwrap();
        assert!(!undated.predates(Stamp(0)));
    }
}
