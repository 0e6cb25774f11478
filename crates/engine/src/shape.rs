//! What a client's copy of a record holds: the fields it asked for
//! (`fields=`), and whether an update reaches it as a merge patch
//! (`diff=true`) instead of the whole record.
//!
//! Filters and rules always judge the whole record; a shape only changes
//! what is sent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use crate::Error;
use crate::filter::FieldPath;

/// Most fields one `fields=` may name.
const MAX_FIELDS: usize = 64;

/// A projection and an update mode. The default sends whole records.
/// The shapes of one stream's records: its own, and those of the
/// collections that asked for their own (`fields.<name>`, `diff.<name>`).
#[derive(Debug, Clone, Default)]
pub struct Shapes {
    pub stream: Shape,
    pub own: HashMap<Arc<str>, Shape>,
}

impl Shapes {
    /// The shape of a collection's records (`None`: not a collection's).
    pub fn of(&self, collection: Option<&str>) -> &Shape {
        collection
            .and_then(|name| self.own.get(name))
            .unwrap_or(&self.stream)
    }

    /// Whether any collection's updates go as merge patches.
    pub fn any_diff(&self) -> bool {
        self.stream.diff || self.own.values().any(|shape| shape.diff)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// The fields to keep (with `id`, always); `None` keeps every field.
    pub fields: Option<Vec<FieldPath>>,
    /// Whether an update of a record the client already holds is sent as
    /// an RFC 7396 merge patch.
    pub(crate) diff: bool,
}

impl Shape {
    /// Reads `fields=a,b.c` (comma-separated field paths) and `diff=`.
    pub fn parse(fields: Option<&str>, diff: bool) -> Result<Shape, Error> {
        let fields = match fields.map(str::trim) {
            None | Some("") => None,
            Some(list) => Some(parse_fields(list)?),
        };
        Ok(Shape { fields, diff })
    }

    /// Whether records go out as stored.
    pub(crate) fn is_whole(&self) -> bool {
        self.fields.is_none() && !self.diff
    }

    /// `record` with only the shape's fields and its `id`.
    pub fn project<'r>(&self, record: &'r Json) -> Cow<'r, Json> {
        match &self.fields {
            None => Cow::Borrowed(record),
            Some(fields) => Cow::Owned(project(record, fields)),
        }
    }
}

fn parse_fields(list: &str) -> Result<Vec<FieldPath>, Error> {
    let mut fields = Vec::new();
    for text in list.split(',').map(str::trim) {
        let path = FieldPath::parse(text).filter(|_| text.len() <= 256);
        let Some(path) = path else {
            return Err(Error::invalid(
                "invalid_query",
                format!(
                    "`fields` must list field names such as `title,author.name`; `{}` is not one",
                    text.chars().take(80).collect::<String>()
                ),
            ));
        };
        if !fields.contains(&path) {
            fields.push(path);
        }
    }
    if fields.len() > MAX_FIELDS {
        return Err(Error::invalid(
            "invalid_query",
            format!("`fields` may name at most {MAX_FIELDS} fields"),
        ));
    }
    Ok(fields)
}

/// The `id` of `record` and each of `fields` it has, nested paths keeping
/// their nesting (`author.name` gives `{"author": {"name": …}}`).
fn project(record: &Json, fields: &[FieldPath]) -> Json {
    let mut out = Map::new();
    if let Some(id) = record.get("id") {
        out.insert("id".into(), id.clone());
    }
    for field in fields {
        if let Some(value) = field.get(record) {
            insert_at(&mut out, field.segments(), value);
        }
    }
    Json::Object(out)
}

/// Puts `value` at `path` inside `target`, making the objects on the way.
/// A shorter path named earlier already holds the whole value: it stays.
fn insert_at(target: &mut Map<String, Json>, path: &[String], value: &Json) {
    match path {
        [] => {}
        [last] => {
            target.insert(last.clone(), value.clone());
        }
        [first, rest @ ..] => {
            let entry = target
                .entry(first.clone())
                .or_insert_with(|| Json::Object(Map::new()));
            if let Json::Object(inner) = entry {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// The RFC 7396 merge patch that turns `before` into `after`: changed and
/// added fields with their new values, removed ones as `null`, objects
/// patched field by field. (A field set to `null` reads as removed: the
/// format cannot say otherwise.)
pub(crate) fn merge_patch(before: &Json, after: &Json) -> Json {
    match (before, after) {
        (Json::Object(before), Json::Object(after)) => {
            let mut patch = Map::new();
            for (key, old) in before {
                match after.get(key) {
                    None => {
                        patch.insert(key.clone(), Json::Null);
                    }
                    Some(new) if new != old => {
                        let change = match (old, new) {
                            (Json::Object(_), Json::Object(_)) => merge_patch(old, new),
                            _ => new.clone(),
                        };
                        patch.insert(key.clone(), change);
                    }
                    Some(_) => {}
                }
            }
            for (key, new) in after {
                if !before.contains_key(key) {
                    patch.insert(key.clone(), new.clone());
                }
            }
            Json::Object(patch)
        }
        _ => after.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7396's MergePatch, to check that patches apply.
    fn apply(target: &Json, patch: &Json) -> Json {
        let Json::Object(patch) = patch else {
            return patch.clone();
        };
        let mut out = match target {
            Json::Object(fields) => fields.clone(),
            _ => Map::new(),
        };
        for (key, value) in patch {
            if value.is_null() {
                out.remove(key);
            } else {
                let merged = apply(out.get(key).unwrap_or(&Json::Null), value);
                out.insert(key.clone(), merged);
            }
        }
        Json::Object(out)
    }

    #[test]
    fn projections_keep_the_id_and_the_nesting() {
        let shape = Shape::parse(Some("title, author.name,missing"), false).unwrap();
        let record = json!({"id": "p1", "title": "T", "body": "B",
            "author": {"name": "ann", "email": "a@x"}});
        assert_eq!(
            *shape.project(&record),
            json!({"id": "p1", "title": "T", "author": {"name": "ann"}})
        );
        // A whole object and one of its fields: the whole object wins.
        let shape = Shape::parse(Some("author,author.name"), false).unwrap();
        assert_eq!(
            *shape.project(&record),
            json!({"id": "p1", "author": {"name": "ann", "email": "a@x"}})
        );
        assert!(Shape::parse(None, false).unwrap().is_whole());
        for bad in ["a,,b", "a b", "1x", "a.`b`"] {
            assert!(Shape::parse(Some(bad), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn merge_patches_turn_the_old_image_into_the_new() {
        let before = json!({"id": "r", "a": 1, "b": "x", "gone": true,
            "nested": {"keep": 1, "change": 2, "drop": 3}, "list": [1, 2]});
        let after = json!({"id": "r", "a": 1, "b": "y", "new": [1],
            "nested": {"keep": 1, "change": 5}, "list": [1, 2, 3]});
        let patch = merge_patch(&before, &after);
        assert_eq!(
            patch,
            json!({"b": "y", "gone": null, "new": [1],
                "nested": {"change": 5, "drop": null}, "list": [1, 2, 3]})
        );
        assert_eq!(apply(&before, &patch), after);
        assert_eq!(merge_patch(&after, &after), json!({}));
        // Applied in order from any starting image, patches end at the last.
        let third = json!({"id": "r", "a": 2, "b": "y"});
        let end = apply(
            &apply(&third, &patch),
            &merge_patch(&after, &json!({"id": "r", "a": 3})),
        );
        assert_eq!(end, json!({"id": "r", "a": 3}));
    }
}
