//! livehub's own tables, and the replay bounds kept beside them.

use std::time::Duration;

use surrealdb::types::Value;

use super::Store;
use crate::clock::Stamp;
use crate::collection::CollectionName;

/// Collection metadata. Collection names start with a letter, so no
/// collection can collide with a table of livehub's (they start with `_`).
pub(super) const COLLECTIONS_TABLE: &str = "_lh_collections";
/// livehub's own bookkeeping (the database epoch, the retention setting).
const META_TABLE: &str = "_lh_meta";
/// Stream tickets (no changefeed: tickets are not events).
pub(super) const TICKETS_TABLE: &str = "_lh_tickets";
/// Idempotency keys and the answers they were given (see `idempotency`).
pub(super) const IDEMPOTENCY_TABLE: &str = "_lh_idempotency";
/// Admins' notices to every stream (announcements, sign-outs): a
/// changefeed table, so that every node delivers them, with durable ids.
pub(super) const NOTICES_TABLE: &str = "_lh_notices";
/// Channel messages: a changefeed table, so messages have durable ids and
/// reach every node.
pub(super) const MESSAGES_TABLE: &str = "_lh_messages";
/// Who is online: one entry per (node, user), with its connection count
/// and an expiry that the node keeps pushing forward (no changefeed).
pub(super) const PRESENCE_TABLE: &str = "_lh_presence";
/// Whether each user is present, across nodes: every presence write
/// writes it, so concurrent changes to one user conflict (no changefeed).
pub(super) const PRESENCE_USERS_TABLE: &str = "_lh_presence_users";
/// Users joining and leaving: a changefeed table, so `user.*` events have
/// durable ids and reach every node.
pub(super) const PRESENCE_LOG_TABLE: &str = "_lh_presence_log";
/// Users signed out by an admin, and since when (no changefeed: read at
/// start; changes travel as notices).
pub(super) const REVOCATIONS_TABLE: &str = "_lh_revocations";

/// Messages of ephemeral channels on their way to the other nodes sharing
/// a database server: a changefeed table, read by every node's feed and
/// never replayed; rows are pruned after [`RELAY_TTL`](super::RELAY_TTL).
pub(super) const RELAY_TABLE: &str = "_lh_relay";

/// The nodes sharing this database, with how far their writes are
/// committed (no changefeed: see `peers`).
pub(super) const NODES_TABLE: &str = "_lh_nodes";

/// Thrown inside a write transaction when the collection does not exist, so
/// that SurrealDB never creates an undefined table (one without a changefeed).
pub(super) const NO_COLLECTION: &str = "livehub: no such collection";

pub(super) fn is_no_collection(error: &surrealdb::Error) -> bool {
    error.message().contains(NO_COLLECTION)
}

impl Store {
    /// Defines livehub's own tables and reads the replay bounds: the
    /// database epoch (the stamp before which it holds no changes, recorded
    /// on first use) and the retention horizon (see [`Store::replay_check`]).
    pub(super) async fn init(&mut self) -> anyhow::Result<()> {
        let changefeed = self.changefeed_clause();
        let now = Stamp::now();
        let sql = format!(
            "DEFINE TABLE IF NOT EXISTS {COLLECTIONS_TABLE} SCHEMALESS;
             ALTER TABLE {COLLECTIONS_TABLE} {changefeed};
             DEFINE TABLE IF NOT EXISTS {META_TABLE} SCHEMALESS;
             UPSERT type::record('{META_TABLE}', 'epoch') SET stamp = stamp ?? $now RETURN VALUE stamp;
             SELECT retention_secs, horizon FROM ONLY type::record('{META_TABLE}', 'retention');
             SELECT VALUE name FROM {COLLECTIONS_TABLE};
             DEFINE TABLE IF NOT EXISTS {TICKETS_TABLE} SCHEMALESS;
             DEFINE INDEX IF NOT EXISTS expires ON {TICKETS_TABLE} FIELDS expires;
             DEFINE TABLE IF NOT EXISTS {IDEMPOTENCY_TABLE} SCHEMALESS;
             DEFINE INDEX IF NOT EXISTS expires ON {IDEMPOTENCY_TABLE} FIELDS expires;
             DEFINE TABLE IF NOT EXISTS {NOTICES_TABLE} SCHEMALESS;
             ALTER TABLE {NOTICES_TABLE} {changefeed};
             DEFINE TABLE IF NOT EXISTS {REVOCATIONS_TABLE} SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS {MESSAGES_TABLE} SCHEMALESS;
             ALTER TABLE {MESSAGES_TABLE} {changefeed};
             DEFINE TABLE IF NOT EXISTS {PRESENCE_TABLE} SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS {PRESENCE_USERS_TABLE} SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS {PRESENCE_LOG_TABLE} SCHEMALESS;
             ALTER TABLE {PRESENCE_LOG_TABLE} {changefeed};
             DEFINE TABLE IF NOT EXISTS {NODES_TABLE} SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS {RELAY_TABLE} SCHEMALESS;
             ALTER TABLE {RELAY_TABLE} {changefeed};"
        );
        let mut response = self
            .db
            .query(sql)
            .bind(("now", now.0 as i64))
            .await?
            .check()?;
        let epoch: Option<i64> = response.take(3)?;
        self.epoch = Stamp(epoch.unwrap_or(now.0 as i64).max(0) as u64);
        let previous: Value = response.take(4)?;
        let previous = previous.into_json_value();
        let collections: Vec<String> = response.take(5)?;

        let retention_secs = self.retention.as_secs().max(1) as i64;
        let previous_secs = previous["retention_secs"].as_i64();
        let previous_horizon = Stamp(previous["horizon"].as_u64().unwrap_or(0));
        self.horizon = match previous_secs {
            // Raised: what the old setting already purged stays gone.
            Some(old) if old < retention_secs => {
                previous_horizon.max(now.earlier_by(Duration::from_secs(old as u64)))
            }
            _ => previous_horizon,
        };
        if previous_secs != Some(retention_secs) {
            // Apply the setting to every collection, so the changefeed keeps
            // what the reset check promises.
            let mut sql = format!(
                "UPSERT type::record('{META_TABLE}', 'retention') SET retention_secs = $secs, horizon = $horizon;"
            );
            for name in collections
                .iter()
                .filter_map(|name| CollectionName::new(name).ok())
            {
                sql.push_str(&format!("ALTER TABLE IF EXISTS `{name}` {changefeed};"));
            }
            self.db
                .query(sql)
                .bind(("secs", retention_secs))
                .bind(("horizon", self.horizon.0 as i64))
                .await?
                .check()?;
        }
        Ok(())
    }

    pub(super) fn changefeed_clause(&self) -> String {
        format!(
            "CHANGEFEED {}s INCLUDE ORIGINAL",
            self.retention.as_secs().max(1)
        )
    }
}
