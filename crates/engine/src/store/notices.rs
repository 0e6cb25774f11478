//! Admins' notices (announcements and sign-outs) and channel messages:
//! rows of changefeed tables, so every node delivers them with durable ids.

use serde_json::Value as Json;
use surrealdb::types::Value;

use super::records::record_json;
use super::schema::{MESSAGES_TABLE, NOTICES_TABLE, RELAY_TABLE, REVOCATIONS_TABLE};
use super::{Store, StoreError, Written};
use crate::clock::unix_ms_now;
use crate::collection::RecordKey;
use crate::revocations::SignOut;

/// A notice's `kind` for an announcement.
pub(super) const ANNOUNCEMENT: &str = "announcement";
/// A notice's `kind` for a sign-out.
pub(super) const SIGN_OUT: &str = "logout";
/// A notice's `kind` for a change to one open stream.
pub(super) const SUBSCRIPTION_CHANGE: &str = "subscription";

impl Store {
    /// Sends an admin's announcement to every stream of every node,
    /// through the changefeed.
    pub async fn announce(&self, data: Json) -> Result<(), StoreError> {
        let sql = format!(
            "CREATE type::record('{NOTICES_TABLE}', $id) CONTENT {{ kind: '{ANNOUNCEMENT}', data: $data, at: $now }}"
        );
        let vars =
            serde_json::json!({ "id": RecordKey::generate(), "data": data, "now": unix_ms_now() });
        self.write_only(sql, vars, Some((Written::Announcement, 0)))
            .await
    }

    /// Sends a change to an open stream of another node (`data` says which
    /// stream, who asks and what), through the changefeed.
    pub async fn forward_subscription_change(&self, data: Json) -> Result<(), StoreError> {
        let sql = format!(
            "CREATE type::record('{NOTICES_TABLE}', $id) CONTENT {{ kind: '{SUBSCRIPTION_CHANGE}', data: $data, at: $now }}"
        );
        let vars =
            serde_json::json!({ "id": RecordKey::generate(), "data": data, "now": unix_ms_now() });
        self.write_only(sql, vars, None).await
    }

    /// Records that `user_id`'s tokens issued at or before `before` (Unix
    /// seconds) are refused, and tells every node's streams of that user to
    /// end.
    pub async fn sign_out(&self, user_id: &str, before: u64) -> Result<(), StoreError> {
        let sql = format!(
            "BEGIN;
             UPSERT type::record('{REVOCATIONS_TABLE}', $user) SET before = math::max([before ?? 0, $before]);
             CREATE type::record('{NOTICES_TABLE}', $id) CONTENT {{ kind: '{SIGN_OUT}', data: $data, at: $now }};
             COMMIT;"
        );
        let vars = serde_json::json!({
            "user": user_id,
            "before": before,
            "id": RecordKey::generate(),
            "data": { "user_id": user_id, "revoked_before": before },
            "now": unix_ms_now(),
        });
        self.write_only(sql, vars, None).await
    }

    /// Every sign-out still in force: the user, and the time at or before
    /// which its tokens are refused.
    pub(crate) async fn sign_outs(&self) -> Result<Vec<SignOut>, StoreError> {
        let sql = format!("SELECT * FROM {REVOCATIONS_TABLE}");
        let rows: Vec<Value> = self.db.query(sql).await?.check()?.take(0)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let (_, user, row) = record_json(row);
                Some(SignOut {
                    user_id: user,
                    revoked_before: row.get("before")?.as_u64()?,
                })
            })
            .collect())
    }

    /// Publishes channel messages (their envelopes) through the changefeed,
    /// in order, in one commit; a lone message goes with the next group
    /// commit (see `group`).
    pub async fn publish_messages(&self, envelopes: &[Json]) -> Result<(), StoreError> {
        self.admit()?;
        // `at` is for pruning; the feed leaves it out of the event.
        let at = Json::from(unix_ms_now());
        let mut rows: Vec<(RecordKey, Json)> = envelopes
            .iter()
            .map(|envelope| {
                let mut row = envelope.clone();
                row["at"] = at.clone();
                (RecordKey::generate(), row)
            })
            .collect();
        match (&self.committer, rows.len()) {
            (Some(committer), 1) => {
                let (key, row) = rows.remove(0);
                committer.publish(key, row).await
            }
            _ => self.write_messages(rows).await,
        }
    }

    /// Writes channel messages' rows (each with its key) in one
    /// transaction, in order: one multi-row statement, the rows a bound
    /// parameter.
    pub(super) async fn write_messages(
        &self,
        rows: Vec<(RecordKey, Json)>,
    ) -> Result<(), StoreError> {
        let mut written = Vec::with_capacity(rows.len());
        let rows: Vec<Json> = rows
            .into_iter()
            .map(|(key, mut row)| {
                if let Some(channel) = row["channel"].as_str() {
                    let target = Written::Message {
                        channel: channel.to_owned(),
                        key: key.to_string(),
                    };
                    written.push((target, super::json_len(&row)));
                }
                row["id"] = serde_json::json!(key);
                row
            })
            .collect();
        let sql = format!("INSERT INTO {MESSAGES_TABLE} $rows RETURN NONE");
        let done = self.write(sql, serde_json::json!({ "rows": rows })).await?;
        if let Some(error) = done.error {
            return Err(error.into());
        }
        done.guard.acknowledge_all(written);
        Ok(())
    }

    /// Passes messages of an ephemeral channel to the other nodes sharing
    /// the database (this node delivered them already): rows of the relay
    /// table, which their feeds read and no replay does, in one commit (a
    /// lone message with the next group commit). Not
    /// admitted here: the caller admits before delivering them anywhere,
    /// so that a refusal delivers them nowhere.
    pub async fn relay_messages(&self, envelopes: &[Json], at_ms: i64) -> Result<(), StoreError> {
        let mut rows: Vec<Json> = envelopes
            .iter()
            .map(|envelope| {
                serde_json::json!({
                    "id": RecordKey::generate(),
                    "node": &*self.node,
                    "message": envelope,
                    "at": at_ms,
                })
            })
            .collect();
        match (&self.committer, rows.len()) {
            (Some(committer), 1) => committer.relay(rows.remove(0)).await,
            _ => self.write_relay_rows(rows).await,
        }
    }

    /// Writes relay rows in one transaction: one multi-row statement.
    pub(super) async fn write_relay_rows(&self, rows: Vec<Json>) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO {RELAY_TABLE} $rows RETURN NONE");
        self.write_only(sql, serde_json::json!({ "rows": rows }), None)
            .await
    }
}
