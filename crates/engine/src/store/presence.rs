//! Who is online, across nodes: one entry per (node, user) with an expiry,
//! a flag per user that makes concurrent changes conflict, and a changefeed
//! log of joins and leaves.

use std::time::Duration;

use serde_json::Value as Json;
use surrealdb::types::Value;

use super::schema::{
    IDEMPOTENCY_TABLE, MESSAGES_TABLE, NOTICES_TABLE, PRESENCE_LOG_TABLE, PRESENCE_TABLE,
    PRESENCE_USERS_TABLE, RELAY_TABLE, TICKETS_TABLE,
};
use super::{Store, StoreError};
use crate::clock::{format_time, unix_ms, unix_ms_now};
use crate::collection::RecordKey;

/// One node's presence entry for one user.
#[derive(Debug)]
pub struct PresenceEntry<'a> {
    pub node: &'a str,
    pub user_id: &'a str,
    pub user_name: Option<&'a str>,
    pub connections: u32,
    pub ttl: Duration,
}

impl Store {
    /// Sets this node's connection count for a user (creating its entry if
    /// need be), and logs `joined` if the user was not present. Every
    /// presence write also writes the user's flag record, so two nodes
    /// changing one user at once conflict and one runs again: each join and
    /// leave is logged once.
    pub async fn presence_set(&self, entry: &PresenceEntry<'_>) -> Result<(), StoreError> {
        let sql = format!(
            "BEGIN;
             UPSERT type::record('{PRESENCE_TABLE}', $key) CONTENT {{
                 user_id: $user, user_name: $name, node: $node, connections: $n,
                 last_seen: $seen, expires: $expires }};
             LET $was = (SELECT VALUE present FROM type::record('{PRESENCE_USERS_TABLE}', $user));
             UPSERT type::record('{PRESENCE_USERS_TABLE}', $user) SET present = true, at = $now;
             IF array::len($was) = 0 OR $was[0] != true {{
                 CREATE type::record('{PRESENCE_LOG_TABLE}', $log) CONTENT {{ kind: 'joined', at: $now, data: {{
                     user_id: $user, user_name: $name, connections: $n, last_seen: $seen }} }};
             }};
             COMMIT;"
        );
        self.presence_write(sql, entry).await
    }

    /// Removes this node's entry for a user, and logs `left` if no live
    /// entry of any node is left.
    pub async fn presence_leave(&self, entry: &PresenceEntry<'_>) -> Result<(), StoreError> {
        let sql = format!(
            "BEGIN;
             DELETE type::record('{PRESENCE_TABLE}', $key);
             LET $live = (SELECT VALUE connections FROM {PRESENCE_TABLE}
                 WHERE user_id = $user AND expires >= $now);
             LET $was = (SELECT VALUE present FROM type::record('{PRESENCE_USERS_TABLE}', $user));
             UPSERT type::record('{PRESENCE_USERS_TABLE}', $user) SET present = array::len($live) > 0, at = $now;
             IF array::len($live) = 0 AND array::len($was) > 0 AND $was[0] = true {{
                 CREATE type::record('{PRESENCE_LOG_TABLE}', $log) CONTENT {{ kind: 'left', at: $now, data: {{
                     user_id: $user, user_name: $name, connections: 0, last_seen: $seen }} }};
             }};
             COMMIT;"
        );
        self.presence_write(sql, entry).await
    }

    async fn presence_write(
        &self,
        sql: String,
        entry: &PresenceEntry<'_>,
    ) -> Result<(), StoreError> {
        let now = time::OffsetDateTime::now_utc();
        let now_ms = unix_ms(now);
        let vars = serde_json::json!({
            "key": format!("{}/{}", entry.node, entry.user_id),
            "user": entry.user_id,
            "name": entry.user_name,
            "node": entry.node,
            "n": entry.connections,
            "seen": format_time(now),
            "now": now_ms,
            "expires": now_ms + entry.ttl.as_millis() as i64,
            "log": RecordKey::generate(),
        });
        self.write_only(sql, vars, None).await
    }

    /// For a node that shuts down: its entries run out after `grace`, and
    /// whichever node sweeps them then says who left (a user whose streams
    /// came back elsewhere meanwhile is still present, and does not).
    pub async fn presence_hand_over(&self, node: &str, grace: Duration) -> Result<(), StoreError> {
        let sql = format!("UPDATE {PRESENCE_TABLE} SET expires = $expires WHERE node = $node");
        let vars = serde_json::json!({
            "node": node,
            "expires": unix_ms_now() + grace.as_millis() as i64,
        });
        self.write_only(sql, vars, None).await
    }

    /// Pushes this node's entries' expiry forward; removes the entries of
    /// nodes that stopped doing so, logging `left` for users no live entry
    /// is left of; deletes messages, notices and presence log rows older
    /// than the changefeed keeps (their events can no longer be replayed);
    /// and deletes expired tickets (through their index).
    pub async fn presence_maintain(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        let now_ms = unix_ms_now();
        let sql = format!(
            "UPDATE {PRESENCE_TABLE} SET expires = $expires WHERE node = $node;
             BEGIN;
             LET $gone = (DELETE {PRESENCE_TABLE} WHERE expires < $now RETURN BEFORE);
             FOR $user IN array::distinct($gone.user_id) {{
                 LET $live = (SELECT VALUE connections FROM {PRESENCE_TABLE}
                     WHERE user_id = $user AND expires >= $now);
                 LET $was = (SELECT VALUE present FROM type::record('{PRESENCE_USERS_TABLE}', $user));
                 IF array::len($live) = 0 AND array::len($was) > 0 AND $was[0] = true {{
                     UPSERT type::record('{PRESENCE_USERS_TABLE}', $user) SET present = false, at = $now;
                     LET $last = (SELECT user_name, last_seen FROM $gone WHERE user_id = $user)[0];
                     CREATE {PRESENCE_LOG_TABLE} CONTENT {{ kind: 'left', at: $now, data: {{
                         user_id: $user, user_name: $last.user_name, connections: 0,
                         last_seen: $last.last_seen }} }};
                 }};
             }};
             COMMIT;"
        );
        let vars = serde_json::json!({
            "node": node,
            "now": now_ms,
            "expires": now_ms + ttl.as_millis() as i64,
        });
        self.write_only(sql, vars, None).await?;
        // Pruning scans whole tables (every message kept, say) and makes no
        // change the feed delivers, so it runs outside the write tracker: as
        // a tracked write it held the feed's watermark, and with it every
        // live event, for as long as the scan took (a second behind under
        // a load of channel messages).
        let prune = format!(
            "DELETE {MESSAGES_TABLE} WHERE at < $cutoff;
             DELETE {NOTICES_TABLE} WHERE at < $cutoff;
             DELETE {PRESENCE_LOG_TABLE} WHERE at < $cutoff;
             DELETE {TICKETS_TABLE} WHERE expires < $now_secs;
             DELETE {IDEMPOTENCY_TABLE} WHERE expires < $now_secs;
             DELETE {RELAY_TABLE} WHERE at < $relay_cutoff;"
        );
        self.db
            .query(prune)
            .bind(("cutoff", now_ms - self.retention.as_millis() as i64))
            .bind(("now_secs", now_ms / 1000))
            .bind(("relay_cutoff", now_ms - super::RELAY_TTL.as_millis() as i64))
            .await?
            .check()?;
        Ok(())
    }

    /// Who is online: one entry per user, with connections summed over
    /// nodes.
    pub async fn presence_list(&self) -> Result<Vec<Json>, StoreError> {
        let now_ms = unix_ms_now();
        let sql = format!(
            "SELECT user_id, user_name, connections, last_seen FROM {PRESENCE_TABLE}
             WHERE expires >= $now ORDER BY user_id"
        );
        let rows: Vec<Value> = self
            .db
            .query(sql)
            .bind(("now", now_ms))
            .await?
            .check()?
            .take(0)?;
        let mut users: Vec<Json> = Vec::new();
        for row in rows {
            let row = row.into_json_value();
            match users.last_mut() {
                Some(last) if last["user_id"] == row["user_id"] => {
                    let sum = last["connections"].as_u64().unwrap_or(0)
                        + row["connections"].as_u64().unwrap_or(0);
                    last["connections"] = Json::from(sum);
                    if row["last_seen"].as_str() > last["last_seen"].as_str() {
                        last["last_seen"] = row["last_seen"].clone();
                    }
                }
                _ => users.push(row),
            }
        }
        Ok(users)
    }
}
