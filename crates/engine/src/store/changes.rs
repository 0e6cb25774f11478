//! Reading SurrealDB's changefeed: `SHOW CHANGES` output into typed changes.
//!
//! With `INCLUDE ORIGINAL`, a create is `{update: record}`, an update is
//! `{current: record, update: [reverse patches]}` and a delete is
//! `{delete: {id, original}}`. The reverse patches turn the current record
//! back into the previous one; applying them gives the before-image that
//! filters need to tell a record leaving a subscriber's view.

use std::sync::Arc;

use serde_json::Value as Json;
use surrealdb::types::Value;

use super::notices::{ANNOUNCEMENT, SIGN_OUT, SUBSCRIPTION_CHANGE};
use super::records::record_json;
use super::schema::{
    COLLECTIONS_TABLE, MESSAGES_TABLE, NOTICES_TABLE, PRESENCE_LOG_TABLE, RELAY_TABLE,
};
use super::{Store, StoreError};
use crate::clock::Stamp;
use crate::collection::CollectionMeta;
use crate::revocations::SignOut;

/// Most changes one changefeed read returns (SurrealDB caps it at 1000).
pub(crate) const CHANGES_PER_READ: u32 = 1000;

/// One committed transaction read from the changefeed.
#[derive(Debug)]
pub(crate) struct ChangeSet {
    pub(crate) stamp: Stamp,
    /// In commit order. A change's position is its event's index, so
    /// changes that are no event stay in the list (as [`Change::Other`]).
    pub(crate) changes: Vec<Change>,
    /// How many raw changes the set holds, table definitions included. It is
    /// at least the number of changefeed entries the set spans (one per
    /// table the commit wrote), which is what SurrealDB's read limit counts:
    /// over-counting only costs an extra read, under-counting would skip.
    pub(crate) entries: u32,
}

/// One change inside a [`ChangeSet`], decoded by the table it was made to.
#[derive(Debug)]
pub(crate) enum Change {
    /// A change to a record of a collection.
    Record {
        collection: Arc<str>,
        /// The bare record id.
        key: String,
        op: ChangeOp,
        /// The record after the change; for a delete, the record before it.
        data: Json,
        /// For an update, the record before it (`None` if it could not be
        /// rebuilt from the stored patches).
        before: Option<Json>,
    },
    /// A change to a collection's metadata.
    Collection {
        name: Arc<str>,
        op: ChangeOp,
        /// The metadata after the change (before it, for a delete), as
        /// stored, without its id.
        data: Json,
        /// `data`, typed (`None` if it does not decode).
        meta: Option<Arc<CollectionMeta>>,
        /// For an update, the metadata before it (`None` if it could not be
        /// rebuilt).
        before: Option<Arc<CollectionMeta>>,
    },
    /// A message published to a channel.
    /// `key`: the message's own row, which tells it from every other
    /// message to the channel when the feed matches it to its write.
    Message {
        channel: Arc<str>,
        key: String,
        data: Json,
    },
    /// A message of an ephemeral channel that node `node` published,
    /// relayed to the others (see `relay`); `at` is when it was published.
    Relayed {
        node: String,
        channel: Arc<str>,
        data: Json,
        at: std::time::SystemTime,
    },
    /// A user joined (`true`) or left (`false`).
    Presence { joined: bool, data: Json },
    /// An admin's notice.
    Notice(Notice),
    /// A change that is no event (a pruned message, a table of livehub's
    /// own without events, a malformed row).
    Other,
}

/// An admin's notice to every stream.
#[derive(Debug)]
pub(crate) enum Notice {
    Announcement(Json),
    /// A change to one open stream, for the node that holds it.
    SubscriptionChange(Json),
    /// A sign-out: `data` as clients see it, and what it revokes (`None`
    /// if the data lacks the user or the time: it then revokes nothing).
    SignOut {
        data: Json,
        sign_out: Option<SignOut>,
    },
}

/// One change as the changefeed holds it, before it is decoded.
#[derive(Debug)]
struct RawChange {
    pub(crate) table: String,
    /// The bare record id.
    pub(crate) key: String,
    pub(crate) op: ChangeOp,
    /// The record after the change; for a delete, the record before it.
    pub(crate) data: Json,
    /// For an update, the record before it (`None` if it could not be
    /// rebuilt from the stored patches).
    pub(crate) before: Option<Json>,
}

impl ChangeSet {
    /// The set with the messages `node` relayed to the others left out (as
    /// [`Change::Other`], so the other changes keep their indexes): that
    /// node delivered them itself.
    pub(crate) fn without_relays_from(mut self, node: &str) -> ChangeSet {
        for change in &mut self.changes {
            if matches!(change, Change::Relayed { node: from, .. } if from == node) {
                *change = Change::Other;
            }
        }
        self
    }
}

impl RawChange {
    /// Folds `next`, a later change of the same record in the same commit,
    /// into this one when it is an update: a transaction's intermediate
    /// states were never visible, so clients see one change from the
    /// record before the commit to the record after it (livehub's own
    /// writes of long strings take two steps, see `Store::write_record`).
    /// Anything else is given back, to stay a change of its own.
    fn absorb(&mut self, next: RawChange) -> Option<RawChange> {
        match (self.op, next.op) {
            (ChangeOp::Create | ChangeOp::Update, ChangeOp::Update) => {
                self.data = next.data;
                // A create keeps no before-image; an update keeps the first.
                None
            }
            _ => Some(next),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeOp {
    Create,
    Update,
    Delete,
}

/// Parses one `SHOW CHANGES` entry: `{versionstamp, changes: [...]}`.
fn parse_change_set(value: Value) -> Option<ChangeSet> {
    let Value::Object(mut object) = value else {
        return None;
    };
    let stamp = match object.remove("versionstamp")? {
        Value::Number(number) => Stamp(number.to_int().and_then(|n| u64::try_from(n).ok())?),
        _ => return None,
    };
    let Some(Value::Array(items)) = object.remove("changes") else {
        return None;
    };
    let entries = u32::try_from(items.len()).unwrap_or(u32::MAX).max(1);
    let mut changes: Vec<RawChange> = Vec::with_capacity(items.len());
    for change in items.into_inner().into_iter().filter_map(parse_change) {
        match changes.last_mut() {
            Some(last) if last.table == change.table && last.key == change.key => {
                if let Some(unmerged) = last.absorb(change) {
                    changes.push(unmerged);
                }
            }
            _ => changes.push(change),
        }
    }
    Some(ChangeSet {
        stamp,
        changes: changes.into_iter().map(RawChange::decode).collect(),
        entries,
    })
}

impl RawChange {
    /// What the change means, by its table.
    fn decode(self) -> Change {
        let created = self.op == ChangeOp::Create;
        // Messages, presence and notices are only ever created; their
        // deletes are pruning.
        let field =
            |data: &Json, name: &str| data.get(name).and_then(Json::as_str).map(str::to_owned);
        match self.table.as_str() {
            COLLECTIONS_TABLE => {
                let mut data = self.data;
                if let Some(map) = data.as_object_mut() {
                    map.remove("id");
                }
                let decode = |row: &Json| CollectionMeta::decode(row, &self.key).map(Arc::new);
                Change::Collection {
                    meta: decode(&data),
                    before: self.before.as_ref().and_then(decode),
                    name: Arc::from(self.key.as_str()),
                    op: self.op,
                    data,
                }
            }
            MESSAGES_TABLE if created => {
                let Some(channel) = field(&self.data, "channel") else {
                    return Change::Other;
                };
                let mut data = self.data;
                if let Some(map) = data.as_object_mut() {
                    // `at` is for pruning.
                    map.remove("id");
                    map.remove("at");
                }
                Change::Message {
                    channel: Arc::from(channel),
                    key: self.key,
                    data,
                }
            }
            RELAY_TABLE if created => {
                let (Some(node), Some(data)) =
                    (field(&self.data, "node"), self.data.get("message"))
                else {
                    return Change::Other;
                };
                let Some(channel) = data.get("channel").and_then(Json::as_str) else {
                    return Change::Other;
                };
                let at_ms = self.data.get("at").and_then(Json::as_u64).unwrap_or(0);
                Change::Relayed {
                    node,
                    channel: Arc::from(channel),
                    data: data.clone(),
                    at: std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms),
                }
            }
            PRESENCE_LOG_TABLE if created => {
                let joined = match field(&self.data, "kind").as_deref() {
                    Some("joined") => true,
                    Some("left") => false,
                    _ => return Change::Other,
                };
                let data = self.data.get("data").cloned().unwrap_or(Json::Null);
                Change::Presence { joined, data }
            }
            NOTICES_TABLE if created => {
                let data = self.data.get("data").cloned().unwrap_or(Json::Null);
                match field(&self.data, "kind").as_deref() {
                    Some(ANNOUNCEMENT) => Change::Notice(Notice::Announcement(data)),
                    Some(SUBSCRIPTION_CHANGE) => Change::Notice(Notice::SubscriptionChange(data)),
                    Some(SIGN_OUT) => Change::Notice(Notice::SignOut {
                        sign_out: SignOut::decode(&data),
                        data,
                    }),
                    _ => Change::Other,
                }
            }
            // livehub's own tables carry no other events.
            table if table.starts_with('_') => Change::Other,
            table => Change::Record {
                collection: Arc::from(table),
                key: self.key,
                op: self.op,
                data: self.data,
                before: self.before,
            },
        }
    }
}

impl Store {
    /// Reads committed transactions with stamps at or after `since`
    /// (SurrealDB's `SINCE` is inclusive), oldest first, at most `limit`
    /// changefeed entries.
    pub(crate) async fn read_changes(
        &self,
        since: Stamp,
        limit: u32,
    ) -> Result<Vec<ChangeSet>, StoreError> {
        let limit = limit.clamp(1, CHANGES_PER_READ);
        let sql = format!("SHOW CHANGES FOR DATABASE SINCE {} LIMIT {limit}", since.0);
        let sets: Vec<Value> = self.db.query(sql).await?.check()?.take(0)?;
        Ok(sets.into_iter().filter_map(parse_change_set).collect())
    }
}

/// Parses one change: `{update}` (a create, with `INCLUDE ORIGINAL`),
/// `{current, update: [patches]}` (an update) or `{delete: {id, original}}`.
/// Table definitions and anything unknown are skipped.
fn parse_change(value: Value) -> Option<RawChange> {
    let Value::Object(mut object) = value else {
        return None;
    };
    let mut patches = None;
    let (op, record) = if let Some(current) = object.remove("current") {
        patches = object.remove("update");
        (ChangeOp::Update, current)
    } else if let Some(update) = object.remove("update") {
        (ChangeOp::Create, update)
    } else if let Some(Value::Object(mut delete)) = object.remove("delete") {
        match delete.remove("original") {
            Some(original @ Value::Object(_)) => (ChangeOp::Delete, original),
            _ => {
                let mut record = surrealdb::types::Object::new();
                record.insert("id", delete.remove("id")?);
                (ChangeOp::Delete, Value::Object(record))
            }
        }
    } else {
        return None;
    };
    let (table, key, data) = record_json(record);
    if table.is_empty() {
        return None;
    }
    let before = patches.and_then(|patches| {
        let rebuilt = apply_reverse_patches(&data, &patches.into_json_value());
        if rebuilt.is_none() {
            tracing::debug!(%table, %key, "could not rebuild the record before an update");
        }
        rebuilt
    });
    Some(RawChange {
        table,
        key,
        op,
        data,
        before,
    })
}

/// Rebuilds the record before an update from the record after it and the
/// reverse patches stored with it: JSON-Patch-like operations whose paths are
/// `/`-joined keys (not escaped) and whose `change` operation carries a
/// diff-match-patch text edit of a string. `None` if an operation does not
/// apply (for example a key containing `/`, which the path cannot express).
fn apply_reverse_patches(current: &Json, patches: &Json) -> Option<Json> {
    let mut record = current.clone();
    for operation in patches.as_array()? {
        let path = operation.get("path")?.as_str()?.strip_prefix('/')?;
        let parts: Vec<&str> = path.split('/').collect();
        let (last, parents) = parts.split_last()?;
        let parent = locate(&mut record, parents)?;
        match operation.get("op")?.as_str()? {
            "add" | "replace" => {
                let value = operation.get("value")?.clone();
                match parent {
                    Json::Object(fields) => {
                        fields.insert((*last).to_owned(), value);
                    }
                    Json::Array(items) => {
                        let index: usize = last.parse().ok()?;
                        if operation["op"] == "replace" {
                            *items.get_mut(index)? = value;
                        } else if index <= items.len() {
                            items.insert(index, value);
                        } else {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
            "remove" => match parent {
                Json::Object(fields) => {
                    fields.remove(*last)?;
                }
                Json::Array(items) => {
                    let index: usize = last.parse().ok()?;
                    if index >= items.len() {
                        return None;
                    }
                    items.remove(index);
                }
                _ => return None,
            },
            "change" => {
                let target = locate(parent, &[last])?;
                let text = target.as_str()?;
                let edit = operation.get("value")?.as_str()?;
                let dmp = dmp::new();
                let patch = dmp.patch_from_text(edit.to_owned()).ok()?;
                let (chars, applied) = dmp.patch_apply(&patch, text).ok()?;
                if applied.iter().any(|ok| !ok) {
                    return None;
                }
                *target = Json::String(chars.into_iter().collect());
            }
            _ => return None,
        }
    }
    Some(record)
}

/// The value at `parts` (object keys or array indexes) inside `value`.
fn locate<'v>(mut value: &'v mut Json, parts: &[&str]) -> Option<&'v mut Json> {
    for part in parts {
        value = match value {
            Json::Object(fields) => fields.get_mut(*part)?,
            Json::Array(items) => items.get_mut(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(op: ChangeOp, key: &str, data: Json, before: Option<Json>) -> RawChange {
        RawChange {
            table: "t".into(),
            key: key.into(),
            op,
            data,
            before,
        }
    }

    #[test]
    fn a_commit_that_changes_a_record_twice_is_one_change() {
        let mut first = change(
            ChangeOp::Update,
            "a",
            json!({"s": null}),
            Some(json!({"s": "old"})),
        );
        assert!(
            first
                .absorb(change(
                    ChangeOp::Update,
                    "a",
                    json!({"s": "new"}),
                    Some(json!({"s": null}))
                ))
                .is_none()
        );
        assert_eq!(first.data, json!({"s": "new"}));
        assert_eq!(first.before, Some(json!({"s": "old"})));
        let mut created = change(ChangeOp::Create, "a", json!({"n": 1}), None);
        assert!(
            created
                .absorb(change(
                    ChangeOp::Update,
                    "a",
                    json!({"n": 2}),
                    Some(json!({"n": 1}))
                ))
                .is_none()
        );
        assert_eq!(
            (created.op, created.data, created.before),
            (ChangeOp::Create, json!({"n": 2}), None)
        );
        // A delete stays a change of its own.
        let mut updated = change(
            ChangeOp::Update,
            "a",
            json!({"n": 2}),
            Some(json!({"n": 1})),
        );
        let delete = change(ChangeOp::Delete, "a", json!({"n": 2}), None);
        assert!(updated.absorb(delete).is_some());
    }

    #[test]
    fn changes_are_decoded_by_their_table() {
        let raw = |table: &str, op: ChangeOp, data: Json| RawChange {
            table: table.into(),
            key: "k".into(),
            op,
            data,
            before: None,
        };
        let created = |table: &str, data: Json| raw(table, ChangeOp::Create, data).decode();
        assert!(matches!(
            created("posts", json!({"id": "k"})),
            Change::Record { ref collection, ref key, op: ChangeOp::Create, .. }
                if &**collection == "posts" && key == "k"
        ));
        let Change::Collection {
            name, meta, data, ..
        } = created(
            COLLECTIONS_TABLE,
            json!({"id": "k", "rules": {"read": "true"}}),
        )
        else {
            panic!("not a collection change");
        };
        assert_eq!(&*name, "k");
        assert!(data.get("id").is_none(), "the id is not part of the event");
        assert_eq!(meta.unwrap().rules.read.as_deref(), Some("true"));
        let Change::Message { channel, data, .. } = created(
            MESSAGES_TABLE,
            json!({"id": "m", "channel": "room", "at": 1, "text": "hi"}),
        ) else {
            panic!("not a message");
        };
        assert_eq!(
            (&*channel, data),
            ("room", json!({"channel": "room", "text": "hi"}))
        );
        assert!(matches!(
            created(
                PRESENCE_LOG_TABLE,
                json!({"kind": "left", "data": {"user_id": "u"}})
            ),
            Change::Presence { joined: false, .. }
        ));
        let Change::Notice(Notice::SignOut { sign_out, .. }) = created(
            NOTICES_TABLE,
            json!({"kind": SIGN_OUT, "data": {"user_id": "u", "revoked_before": 9}}),
        ) else {
            panic!("not a sign-out");
        };
        assert_eq!(
            sign_out.map(|s| (s.user_id, s.revoked_before)),
            Some(("u".into(), 9))
        );
        assert!(matches!(
            created(NOTICES_TABLE, json!({"kind": ANNOUNCEMENT, "data": {}})),
            Change::Notice(Notice::Announcement(_))
        ));
        // Pruning, unknown kinds and livehub's other tables are no events.
        for other in [
            raw(MESSAGES_TABLE, ChangeOp::Delete, json!({"channel": "room"})).decode(),
            created(NOTICES_TABLE, json!({"kind": "mystery"})),
            created(MESSAGES_TABLE, json!({"text": "no channel"})),
            created("_lh_meta", json!({})),
        ] {
            assert!(matches!(other, Change::Other), "{other:?}");
        }
    }

    #[test]
    fn reverse_patches_rebuild_the_previous_record() {
        // As SurrealDB 3.3 stored them for: {title: "x\n\nevent: y", n: 1}
        // updated to {title: "changed", extra: true, n: 1}.
        let current = json!({"id": "abc", "extra": true, "n": 1, "title": "changed"});
        let patches = json!([
            {"op": "remove", "path": "/extra"},
            {"op": "change", "path": "/title", "value": "@@ -1,7 +1,11 @@\n-changed\n+x%0A%0Aevent: y\n"}
        ]);
        assert_eq!(
            apply_reverse_patches(&current, &patches),
            Some(json!({"id": "abc", "n": 1, "title": "x\n\nevent: y"}))
        );
    }

    #[test]
    fn nested_and_array_operations_apply_in_order() {
        let current = json!({"a": {"b": [1, 2, 3]}, "s": 5});
        let patches = json!([
            {"op": "replace", "path": "/a/b/0", "value": 9},
            {"op": "remove", "path": "/a/b/2"},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "replace", "path": "/s", "value": "five"},
            {"op": "add", "path": "/new", "value": [true]}
        ]);
        assert_eq!(
            apply_reverse_patches(&current, &patches),
            Some(json!({"a": {"b": [9]}, "s": "five", "new": [true]}))
        );
    }

    #[test]
    fn operations_that_do_not_apply_give_none() {
        let current = json!({"a": 1});
        for patches in [
            json!([{"op": "remove", "path": "/missing"}]),
            json!([{"op": "change", "path": "/a", "value": "@@ -1 +1 @@"}]),
            json!([{"op": "move", "path": "/a", "from": "/b"}]),
            json!({"not": "a list"}),
        ] {
            assert_eq!(apply_reverse_patches(&current, &patches), None, "{patches}");
        }
    }
}
