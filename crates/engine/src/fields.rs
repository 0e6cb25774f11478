//! serde helpers for request bodies and settings: absent versus `null`,
//! and objects that must really be objects.

use serde::Deserialize;
use serde_json::Value as Json;

/// Reads `T` from a JSON object only. serde reads a struct from an array
/// too, filling its fields in order (`[null, null]` would reset two rules),
/// which no client means.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let fields = serde_json::Map::<String, Json>::deserialize(deserializer)?;
    T::deserialize(Json::Object(fields)).map_err(serde::de::Error::custom)
}

/// [`object`], for an optional field: present, it must be an object
/// (`null` is refused rather than read as absent, as the contract says).
pub fn some_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    object(deserializer).map(Some)
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
