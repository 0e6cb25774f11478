//! The store: the only module that speaks SurrealQL.
//!
//! Collections are SurrealDB tables defined with a `CHANGEFEED ... INCLUDE
//! ORIGINAL`, and their metadata lives in the `_lh_collections` table (with a
//! changefeed too), so every change, to a record or to a collection, reaches
//! the feed through one path and gets one durable id.
//!
//! Names are validated before they reach a query (see [`validate_name`]) and
//! every value travels as a bound parameter.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::{Map, Value as Json};
use surrealdb::Surreal;
use surrealdb::engine::any::Any;
use surrealdb::types::{RecordIdKey, Value};

use crate::config::Config;
use crate::error::ApiError;
use crate::event::{format_time, time_stamp, unix_ms};
use crate::feed::WriteTracker;
use crate::filter::Expr;
use crate::rules::Rules;

mod changes;

pub use changes::{Change, ChangeOp, ChangeSet};

/// The table holding collection metadata. Collection names start with a
/// letter, so no collection can collide with it.
pub const COLLECTIONS_TABLE: &str = "_lh_collections";
/// The table holding livehub's own bookkeeping (the database epoch).
const META_TABLE: &str = "_lh_meta";
/// Event ids this far ahead of the clock cannot come from this database.
const FUTURE_TOLERANCE: Duration = Duration::from_secs(60);
/// How long a write may take before it is abandoned (503).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a write that lost a transaction conflict is run again.
const CONFLICT_RETRIES: u32 = 5;
/// Longest collection name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest record id.
pub const MAX_ID_LEN: usize = 128;
/// Most changes one changefeed read returns (SurrealDB caps it at 1000).
pub const CHANGES_PER_READ: u32 = 1000;
/// Thrown inside a write transaction when the collection does not exist, so
/// that SurrealDB never creates an undefined table (one without a changefeed).
const NO_COLLECTION: &str = "livehub: no such collection";
/// Thrown when a record is missing or its caller may not read it.
const NO_RECORD: &str = "livehub: no such record";
/// Thrown when a rule refuses a write.
const FORBIDDEN: &str = "livehub: refused by a rule";
/// The table of stream tickets (no changefeed: tickets are not events).
const TICKETS_TABLE: &str = "_lh_tickets";
/// Admins' notices to every stream (announcements, sign-outs): a
/// changefeed table, so that every node delivers them, with durable ids.
pub const NOTICES_TABLE: &str = "_lh_notices";
/// Channel messages: a changefeed table, so messages have durable ids and
/// reach every node.
pub const MESSAGES_TABLE: &str = "_lh_messages";
/// Who is online: one entry per (node, user), with its connection count
/// and an expiry that the node keeps pushing forward (no changefeed).
const PRESENCE_TABLE: &str = "_lh_presence";
/// Whether each user is present, across nodes: every presence write
/// writes it, so concurrent changes to one user conflict (no changefeed).
const PRESENCE_USERS_TABLE: &str = "_lh_presence_users";
/// Users joining and leaving: a changefeed table, so `user.*` events have
/// durable ids and reach every node.
pub const PRESENCE_LOG_TABLE: &str = "_lh_presence_log";
/// Users signed out by an admin, and since when (no changefeed: read at
/// start; changes travel as notices).
const REVOCATIONS_TABLE: &str = "_lh_revocations";

/// One node's presence entry for one user.
#[derive(Debug)]
pub struct PresenceEntry<'a> {
    pub node: &'a str,
    pub user_id: &'a str,
    pub user_name: Option<&'a str>,
    pub connections: u32,
    pub ttl: Duration,
}

/// The rule conditions a record write must pass, inside its transaction,
/// each already bound to the caller (`None`: no condition).
#[derive(Debug, Default)]
pub struct RuleChecks {
    /// The read rule: a record the caller may not read is "not found".
    pub read: Option<Expr>,
    /// The write's own rule (`update` or `delete`), on the record as it was:
    /// refused with 403.
    pub write: Option<Expr>,
    /// Whether `write` must also hold for the record as it is after the
    /// change (updates: no one can move a record out of their own rule).
    pub write_after: bool,
}

/// A handle to the database. Cloning is shallow.
#[derive(Clone)]
pub struct Store {
    /// Shared: each clone of a `Surreal` handle opens a database session.
    db: Arc<Surreal<Any>>,
    writes: WriteTracker,
    retention: Duration,
    /// The stamp before which this database holds no changes.
    epoch: u64,
    /// Changes before this stamp may have been purged under an earlier, shorter
    /// retention setting.
    horizon: u64,
}

/// Why the changes after an event id cannot all be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreplayable {
    /// Older than the retention window: the changefeed has dropped them.
    Expired,
    /// Older than this database: they were never in it (for example a
    /// restarted in-memory database).
    BeforeDatabase,
    /// Too far in the future to come from this database.
    Unknown,
}

impl Unreplayable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unreplayable::Expired => "expired",
            Unreplayable::BeforeDatabase => "before_database",
            Unreplayable::Unknown => "unknown",
        }
    }
}

/// Sort order for record lists.
#[derive(Debug, Clone)]
pub struct SortOrder {
    /// A validated field path (`a.b`), spliced as escaped identifiers.
    pub field: Vec<String>,
    pub descending: bool,
}

impl Store {
    /// Connects to the configured database and prepares livehub's tables.
    pub async fn connect(config: &Config, writes: WriteTracker) -> anyhow::Result<Store> {
        let db = surrealdb::engine::any::connect(config.db.as_str())
            .await
            .with_context(|| format!("connecting to the database at {}", config.db))?;
        if let (Some(user), Some(pass)) = (&config.db_user, &config.db_pass) {
            db.signin(surrealdb::opt::auth::Root {
                username: user.clone(),
                password: pass.expose().to_owned(),
            })
            .await
            .context("signing in to the database")?;
        }
        db.use_ns(config.db_ns.as_str())
            .use_db(config.db_name.as_str())
            .await
            .context("selecting the namespace and database")?;
        let mut store = Store {
            db: Arc::new(db),
            writes,
            retention: config.retention,
            epoch: 0,
            horizon: 0,
        };
        store.init().await.context("preparing livehub's tables")?;
        Ok(store)
    }

    /// Defines livehub's own tables and reads the replay bounds: the
    /// database epoch (the stamp before which it holds no changes, recorded
    /// on first use) and the retention horizon (see [`Store::replay_check`]).
    async fn init(&mut self) -> anyhow::Result<()> {
        let changefeed = self.changefeed_clause();
        let now = time_stamp(SystemTime::now());
        let sql = format!(
            "DEFINE TABLE IF NOT EXISTS {COLLECTIONS_TABLE} SCHEMALESS;
             ALTER TABLE {COLLECTIONS_TABLE} {changefeed};
             DEFINE TABLE IF NOT EXISTS {META_TABLE} SCHEMALESS;
             UPSERT type::record('{META_TABLE}', 'epoch') SET stamp = stamp ?? $now RETURN VALUE stamp;
             SELECT retention_secs, horizon FROM ONLY type::record('{META_TABLE}', 'retention');
             SELECT VALUE name FROM {COLLECTIONS_TABLE};
             DEFINE TABLE IF NOT EXISTS {TICKETS_TABLE} SCHEMALESS;
             DEFINE INDEX IF NOT EXISTS expires ON {TICKETS_TABLE} FIELDS expires;
             DEFINE TABLE IF NOT EXISTS {NOTICES_TABLE} SCHEMALESS;
             ALTER TABLE {NOTICES_TABLE} {changefeed};
             DEFINE TABLE IF NOT EXISTS {REVOCATIONS_TABLE} SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS {MESSAGES_TABLE} SCHEMALESS;
             ALTER TABLE {MESSAGES_TABLE} {changefeed};
             DEFINE TABLE IF NOT EXISTS {PRESENCE_TABLE} SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS {PRESENCE_USERS_TABLE} SCHEMALESS;
             DEFINE TABLE IF NOT EXISTS {PRESENCE_LOG_TABLE} SCHEMALESS;
             ALTER TABLE {PRESENCE_LOG_TABLE} {changefeed};"
        );
        let mut response = self
            .db
            .query(sql)
            .bind(("now", now as i64))
            .await?
            .check()?;
        let epoch: Option<i64> = response.take(3)?;
        self.epoch = epoch.unwrap_or(now as i64).max(0) as u64;
        let previous: Value = response.take(4)?;
        let previous = previous.into_json_value();
        let collections: Vec<String> = response.take(5)?;

        let retention_secs = self.retention.as_secs().max(1) as i64;
        let previous_secs = previous["retention_secs"].as_i64();
        let previous_horizon = previous["horizon"].as_u64().unwrap_or(0);
        self.horizon = match previous_secs {
            // Raised: what the old setting already purged stays gone.
            Some(old) if old < retention_secs => {
                previous_horizon.max(now.saturating_sub(((old as u64) * 1000) << 16))
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
                .filter(|name| validate_name(name).is_ok())
            {
                sql.push_str(&format!("ALTER TABLE IF EXISTS `{name}` {changefeed};"));
            }
            self.db
                .query(sql)
                .bind(("secs", retention_secs))
                .bind(("horizon", self.horizon as i64))
                .await?
                .check()?;
        }
        Ok(())
    }

    fn changefeed_clause(&self) -> String {
        format!(
            "CHANGEFEED {}s INCLUDE ORIGINAL",
            self.retention.as_secs().max(1)
        )
    }

    /// The stamp before which this database holds no changes.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether every change after `stamp` is still in the changefeed.
    pub fn replay_check(&self, stamp: u64) -> Result<(), Unreplayable> {
        let now = SystemTime::now();
        // Every change from `stamp + 1` on must be retained.
        let first_needed = stamp.saturating_add(1);
        if stamp > time_stamp(now + FUTURE_TOLERANCE) {
            return Err(Unreplayable::Unknown);
        }
        if first_needed < self.epoch {
            return Err(Unreplayable::BeforeDatabase);
        }
        // A margin inside the window, so the changefeed's garbage collector
        // cannot drop the start of the gap between this check and the read.
        let margin = (self.retention / 10).min(Duration::from_secs(60));
        let retained_since = time_stamp(
            now.checked_sub(self.retention.saturating_sub(margin))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        if first_needed < retained_since.max(self.horizon) {
            return Err(Unreplayable::Expired);
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), ApiError> {
        self.db.query("RETURN 1").await?.check()?;
        Ok(())
    }

    /// Runs a write: registered with the write tracker for its whole life,
    /// in a task of its own (so a client that disconnects cannot cut it off
    /// while the feed still counts it in flight), and run again when its
    /// transaction loses a conflict with a concurrent one. Returns the
    /// response and the error that caused a failure, if any.
    async fn write(
        &self,
        sql: String,
        vars: Json,
    ) -> Result<(surrealdb::IndexedResults, Option<surrealdb::Error>), ApiError> {
        let db = self.db.clone();
        let writes = self.writes.clone();
        let task = tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                let _write = writes.begin();
                let query = db.query(sql.as_str()).bind(vars.clone());
                // A write that hangs would hold the feed's watermark, and with
                // it every stream: give up on it (the guard goes with it).
                let Ok(response) = tokio::time::timeout(WRITE_TIMEOUT, query).await else {
                    tracing::warn!(timeout = ?WRITE_TIMEOUT, "a database write timed out");
                    return Err(ApiError::Unavailable);
                };
                let mut response = response?;
                let error = first_error(&mut response);
                if error.as_ref().is_some_and(is_conflict) {
                    if attempt < CONFLICT_RETRIES {
                        attempt += 1;
                        drop(_write);
                        // Jitter, so writers that collided do not collide again.
                        let base = 2u64 << attempt;
                        let jitter = rand::random::<u64>() % base;
                        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                        continue;
                    }
                    return Err(ApiError::Conflict(
                        "the data was changed concurrently and the write kept conflicting; retry it"
                            .into(),
                    ));
                }
                return Ok((response, error));
            }
        });
        match task.await {
            Ok(result) => result,
            Err(error) => Err(ApiError::Internal(anyhow::anyhow!(
                "write task failed: {error}"
            ))),
        }
    }

    // ----- collections -----

    /// Creates a collection: its metadata record and its table.
    pub async fn create_collection(
        &self,
        name: &str,
        description: Option<&str>,
        rules: &Rules,
    ) -> Result<Json, ApiError> {
        let now = format_time(time::OffsetDateTime::now_utc());
        let meta = serde_json::json!({
            "name": name, "description": description, "rules": rules,
            "created": now, "updated": now,
        });
        let changefeed = self.changefeed_clause();
        // The name was validated by `validate_name`, so splicing it (escaped) is safe.
        let sql = format!(
            "BEGIN;
             CREATE type::record('{COLLECTIONS_TABLE}', $name) CONTENT $meta RETURN AFTER;
             DEFINE TABLE IF NOT EXISTS `{name}` SCHEMALESS;
             ALTER TABLE `{name}` {changefeed};
             COMMIT;"
        );
        let (mut response, error) = self
            .write(sql, serde_json::json!({ "name": name, "meta": meta }))
            .await?;
        if let Some(error) = error {
            if error.is_already_exists() {
                return Err(ApiError::Conflict(format!(
                    "collection `{name}` already exists"
                )));
            }
            return Err(error.into());
        }
        // Statement 0 is BEGIN.
        let created: Vec<Value> = response.take(1)?;
        created
            .into_iter()
            .next()
            .map(collection_json)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("CREATE returned nothing")))
    }

    pub async fn list_collections(&self) -> Result<Vec<Json>, ApiError> {
        let sql = format!("SELECT * FROM {COLLECTIONS_TABLE} ORDER BY id");
        let rows: Vec<Value> = self.db.query(sql).await?.check()?.take(0)?;
        Ok(rows.into_iter().map(collection_json).collect())
    }

    pub async fn get_collection(&self, name: &str) -> Result<Option<Json>, ApiError> {
        let sql = format!("SELECT * FROM type::record('{COLLECTIONS_TABLE}', $name)");
        let rows: Vec<Value> = self
            .db
            .query(sql)
            .bind(("name", name.to_owned()))
            .await?
            .check()?
            .take(0)?;
        Ok(rows.into_iter().next().map(collection_json))
    }

    /// Changes a collection's description and rules (those given); `None`
    /// if it does not exist.
    pub async fn update_collection(
        &self,
        name: &str,
        description: Option<Option<String>>,
        rules: Option<&Rules>,
    ) -> Result<Option<Json>, ApiError> {
        let now = format_time(time::OffsetDateTime::now_utc());
        let mut patch = Map::new();
        patch.insert("updated".into(), Json::String(now));
        if let Some(rules) = rules {
            patch.insert(
                "rules".into(),
                serde_json::to_value(rules).unwrap_or_default(),
            );
        }
        if let Some(description) = description {
            patch.insert(
                "description".into(),
                description.map_or(Json::Null, Json::String),
            );
        }
        let sql =
            format!("UPDATE type::record('{COLLECTIONS_TABLE}', $name) MERGE $patch RETURN AFTER");
        let (mut response, error) = self
            .write(sql, serde_json::json!({ "name": name, "patch": patch }))
            .await?;
        if let Some(error) = error {
            return Err(error.into());
        }
        let rows: Vec<Value> = response.take(0)?;
        Ok(rows.into_iter().next().map(collection_json))
    }

    /// Deletes a collection with all its records; `false` if it did not exist.
    pub async fn delete_collection(&self, name: &str) -> Result<bool, ApiError> {
        let sql = format!(
            "BEGIN;
             IF !record::exists(type::record('{COLLECTIONS_TABLE}', $name)) {{ THROW '{NO_COLLECTION}' }};
             DELETE type::record('{COLLECTIONS_TABLE}', $name);
             REMOVE TABLE IF EXISTS `{name}`;
             COMMIT;"
        );
        let (_, error) = self.write(sql, serde_json::json!({ "name": name })).await?;
        match error {
            Some(error) if is_no_collection(&error) => Ok(false),
            Some(error) => Err(error.into()),
            None => Ok(true),
        }
    }

    // ----- records -----

    /// Creates a record. `id` must have passed [`validate_id`].
    pub async fn create_record(
        &self,
        collection: &str,
        id: &str,
        data: Map<String, Json>,
    ) -> Result<Json, ApiError> {
        self.write_record(
            collection,
            "CREATE type::record($tb, $id) CONTENT $data RETURN AFTER",
            id,
            Some(data),
            &RuleChecks::default(),
        )
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("CREATE returned nothing")))
    }

    /// Merges fields into a record; `None` if it does not exist.
    pub async fn merge_record(
        &self,
        collection: &str,
        id: &str,
        data: Map<String, Json>,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, ApiError> {
        let sql = "UPDATE type::record($tb, $id) MERGE $data RETURN AFTER";
        self.write_record(collection, sql, id, Some(data), checks)
            .await
    }

    /// Replaces a record's content; `None` if it does not exist.
    pub async fn replace_record(
        &self,
        collection: &str,
        id: &str,
        data: Map<String, Json>,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, ApiError> {
        let sql = "UPDATE type::record($tb, $id) CONTENT $data RETURN AFTER";
        self.write_record(collection, sql, id, Some(data), checks)
            .await
    }

    /// Deletes a record; the deleted record, or `None` if it did not exist.
    pub async fn delete_record(
        &self,
        collection: &str,
        id: &str,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, ApiError> {
        let sql = "DELETE type::record($tb, $id) RETURN BEFORE";
        self.write_record(collection, sql, id, None, checks).await
    }

    /// Runs one record write inside a transaction that first checks that the
    /// collection exists (so SurrealDB never creates an undefined table), and
    /// then the caller's rules (see [`RuleChecks`]), so that no concurrent
    /// write can slip between the check and the change.
    ///
    /// An update whose data holds long strings first sets each of them to
    /// `null` (see [`long_strings_cleared`]), in the same transaction: the
    /// changefeed then stores whole values for them, not string diffs, which
    /// SurrealDB computes in time quadratic in the length and inside the
    /// write. The feed merges the two steps into one change.
    async fn write_record(
        &self,
        collection: &str,
        statement: &str,
        id: &str,
        data: Option<Map<String, Json>>,
        checks: &RuleChecks,
    ) -> Result<Option<Json>, ApiError> {
        let mut vars = serde_json::json!({ "tb": collection, "id": id });
        let clear = match &data {
            Some(data) if statement.starts_with("UPDATE") => long_strings_cleared(data),
            _ => None,
        };
        let statement = match clear {
            Some(cleared) => {
                vars["cleared"] = Json::Object(cleared);
                format!("UPDATE type::record($tb, $id) MERGE $cleared RETURN NONE;\n{statement}")
            }
            None => statement.to_owned(),
        };
        let steps = statement.matches(';').count() + 1;
        let mut check = |name: &str, condition: &Expr, error: &str| {
            let (sql, params) = condition.to_surrealql_named(name);
            for (param, value) in params {
                vars[param] = value;
            }
            format!(
                "IF array::len(SELECT VALUE id FROM type::record($tb, $id) WHERE {sql}) = 0 {{ THROW '{error}' }};"
            )
        };
        let mut before = Vec::new();
        let mut after = Vec::new();
        if let Some(read) = &checks.read {
            // Missing and unreadable records look the same: not found.
            before.push(format!(
                "IF record::exists(type::record($tb, $id)) {{ {} }};",
                check("r", read, NO_RECORD)
            ));
        }
        if let Some(write) = &checks.write {
            before.push(format!(
                "IF record::exists(type::record($tb, $id)) {{ {} }};",
                check("w", write, FORBIDDEN)
            ));
            if checks.write_after {
                // A missing record was not written: nothing to check.
                after.push(format!(
                    "IF record::exists(type::record($tb, $id)) {{ {} }};",
                    check("a", write, FORBIDDEN)
                ));
            }
        }
        let sql = format!(
            "BEGIN;
             IF !record::exists(type::record('{COLLECTIONS_TABLE}', $tb)) {{ THROW '{NO_COLLECTION}' }};
             {}
             {statement};
             {}
             COMMIT;",
            before.join("\n"),
            after.join("\n"),
        );
        if let Some(data) = data {
            vars["data"] = Json::Object(data);
        }
        let (mut response, error) = self.write(sql, vars).await?;
        if let Some(error) = error {
            let message = error.message();
            if is_no_collection(&error) {
                return Err(no_collection(collection));
            }
            if message.contains(NO_RECORD) {
                return Ok(None);
            }
            if message.contains(FORBIDDEN) {
                return Err(ApiError::Forbidden(format!(
                    "your rules do not allow this change to record `{id}` of `{collection}`"
                )));
            }
            if error.is_already_exists() {
                return Err(ApiError::Conflict(format!(
                    "record `{id}` already exists in `{collection}`"
                )));
            }
            return Err(error.into());
        }
        // Statement 0 is BEGIN, 1 the collection check, then the rule
        // checks, then the write's steps, the last of which returns it.
        let rows: Vec<Value> = response.take(1 + before.len() + steps)?;
        Ok(rows.into_iter().next().map(|row| record_json(row).2))
    }

    pub async fn get_record(&self, collection: &str, id: &str) -> Result<Json, ApiError> {
        let sql = format!(
            "RETURN record::exists(type::record('{COLLECTIONS_TABLE}', $tb));
             SELECT * FROM type::record($tb, $id);"
        );
        let mut response = self
            .db
            .query(sql)
            .bind(("tb", collection.to_owned()))
            .bind(("id", id.to_owned()))
            .await?;
        // Read the check first: the second statement fails on a table that
        // does not exist.
        let exists: Option<bool> = response.take(0)?;
        if exists != Some(true) {
            return Err(no_collection(collection));
        }
        let rows: Vec<Value> = response.take(1)?;
        rows.into_iter()
            .next()
            .map(|row| record_json(row).2)
            .ok_or_else(|| ApiError::NotFound(format!("no record `{id}` in `{collection}`")))
    }

    /// One page of a collection's records, those matching `filter` if given
    /// (its `$auth` parameters already bound).
    pub async fn list_records(
        &self,
        collection: &str,
        filter: Option<&Expr>,
        sort: &SortOrder,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Json>, ApiError> {
        let (condition, params) = match filter {
            Some(filter) => filter.to_surrealql(),
            None => ("true".to_owned(), Vec::new()),
        };
        let direction = if sort.descending { "DESC" } else { "ASC" };
        let field = escaped_path(&sort.field);
        // `id` breaks ties so that pages are stable.
        let order = if sort.field == ["id"] {
            format!("id {direction}")
        } else {
            format!("{field} {direction}, id {direction}")
        };
        let sql = format!(
            "RETURN record::exists(type::record('{COLLECTIONS_TABLE}', $tb));
             SELECT * FROM type::table($tb) WHERE {condition} ORDER BY {order} LIMIT $limit START $start;"
        );
        // The filter's parameters are named `f0`, `f1`, …: no clash with these.
        let mut query = self
            .db
            .query(sql)
            .bind(("tb", collection.to_owned()))
            .bind(("limit", i64::from(limit)))
            .bind(("start", offset.min(i64::MAX as u64) as i64));
        for (name, value) in params {
            query = query.bind((name, value));
        }
        let mut response = query.await?;
        // Read the check first: the second statement fails on a table that
        // does not exist.
        let exists: Option<bool> = response.take(0)?;
        if exists != Some(true) {
            return Err(no_collection(collection));
        }
        let rows: Vec<Value> = response.take(1)?;
        Ok(rows.into_iter().map(|row| record_json(row).2).collect())
    }

    // ----- stream tickets -----

    /// Stores a single-use ticket for `claims`, valid until `expires` (Unix
    /// seconds). In the database, so that any node sharing it can redeem the
    /// ticket. Expired tickets are cleared by [`Store::presence_maintain`],
    /// not here: a request must not cost a scan of every ticket.
    pub async fn create_ticket(
        &self,
        ticket: &str,
        claims: &Json,
        expires: u64,
    ) -> Result<(), ApiError> {
        let sql = format!(
            "CREATE type::record('{TICKETS_TABLE}', $ticket) CONTENT {{ claims: $claims, expires: $expires }};"
        );
        self.db
            .query(sql)
            .bind(("ticket", ticket.to_owned()))
            .bind(("claims", claims.clone()))
            .bind(("expires", expires as i64))
            .await?
            .check()?;
        Ok(())
    }

    /// Takes a ticket out (so it works once) and returns its claims and
    /// expiry, if it existed.
    pub async fn redeem_ticket(&self, ticket: &str) -> Result<Option<(Json, u64)>, ApiError> {
        let sql = format!("DELETE type::record('{TICKETS_TABLE}', $ticket) RETURN BEFORE");
        let rows: Vec<Value> = self
            .db
            .query(sql)
            .bind(("ticket", ticket.to_owned()))
            .await?
            .check()?
            .take(0)?;
        Ok(rows.into_iter().next().and_then(|row| {
            let (_, _, row) = record_json(row);
            let expires = row.get("expires")?.as_u64()?;
            Some((row.get("claims")?.clone(), expires))
        }))
    }

    // ----- admins' notices -----

    /// Sends a notice (`kind`: `announcement` or `logout`) to every stream
    /// of every node, through the changefeed.
    pub async fn send_notice(&self, kind: &str, data: Json) -> Result<(), ApiError> {
        let sql = format!(
            "CREATE type::record('{NOTICES_TABLE}', $id) CONTENT {{ kind: $kind, data: $data, at: $now }}"
        );
        let vars = serde_json::json!({ "id": new_record_id(), "kind": kind, "data": data, "now": now_ms() });
        let (_, error) = self.write(sql, vars).await?;
        error.map_or(Ok(()), |error| Err(error.into()))
    }

    /// Records that `user_id`'s tokens issued at or before `before` (Unix
    /// seconds) are refused, and tells every node's streams of that user to
    /// end.
    pub async fn force_logout(&self, user_id: &str, before: u64) -> Result<(), ApiError> {
        let sql = format!(
            "BEGIN;
             UPSERT type::record('{REVOCATIONS_TABLE}', $user) SET before = math::max([before ?? 0, $before]);
             CREATE type::record('{NOTICES_TABLE}', $id) CONTENT {{ kind: 'logout', data: $data, at: $now }};
             COMMIT;"
        );
        let vars = serde_json::json!({
            "user": user_id,
            "before": before,
            "id": new_record_id(),
            "data": { "user_id": user_id, "revoked_before": before },
            "now": now_ms(),
        });
        let (_, error) = self.write(sql, vars).await?;
        error.map_or(Ok(()), |error| Err(error.into()))
    }

    /// Every revocation: user id and the time at or before which its tokens
    /// are refused.
    pub async fn revocations(&self) -> Result<Vec<(String, u64)>, ApiError> {
        let sql = format!("SELECT * FROM {REVOCATIONS_TABLE}");
        let rows: Vec<Value> = self.db.query(sql).await?.check()?.take(0)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let (_, user, row) = record_json(row);
                Some((user, row.get("before")?.as_u64()?))
            })
            .collect())
    }

    // ----- channels -----

    /// Publishes a message (its envelope, see `channels::envelope`).
    pub async fn publish_message(&self, envelope: &Json) -> Result<(), ApiError> {
        // `at` is for pruning; the feed leaves it out of the event.
        let mut row = envelope.clone();
        row["at"] = Json::from(now_ms());
        let sql = format!("CREATE type::record('{MESSAGES_TABLE}', $id) CONTENT $row");
        let vars = serde_json::json!({ "id": new_record_id(), "row": row });
        let (_, error) = self.write(sql, vars).await?;
        error.map_or(Ok(()), |error| Err(error.into()))
    }

    // ----- presence -----

    /// Sets this node's connection count for a user (creating its entry if
    /// need be), and logs `joined` if the user was not present. Every
    /// presence write also writes the user's flag record, so two nodes
    /// changing one user at once conflict and one runs again: each join and
    /// leave is logged once.
    pub async fn presence_set(&self, entry: &PresenceEntry<'_>) -> Result<(), ApiError> {
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
    pub async fn presence_leave(&self, entry: &PresenceEntry<'_>) -> Result<(), ApiError> {
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

    async fn presence_write(&self, sql: String, entry: &PresenceEntry<'_>) -> Result<(), ApiError> {
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
            "log": new_record_id(),
        });
        let (_, error) = self.write(sql, vars).await?;
        error.map_or(Ok(()), |error| Err(error.into()))
    }

    /// Pushes this node's entries' expiry forward; removes the entries of
    /// nodes that stopped doing so, logging `left` for users no live entry
    /// is left of; deletes messages, notices and presence log rows older
    /// than the changefeed keeps (their events can no longer be replayed);
    /// and deletes expired tickets (through their index).
    pub async fn presence_maintain(&self, node: &str, ttl: Duration) -> Result<(), ApiError> {
        let now_ms = now_ms();
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
             COMMIT;
             DELETE {MESSAGES_TABLE} WHERE at < $cutoff;
             DELETE {NOTICES_TABLE} WHERE at < $cutoff;
             DELETE {PRESENCE_LOG_TABLE} WHERE at < $cutoff;
             DELETE {TICKETS_TABLE} WHERE expires < $now_secs;"
        );
        let vars = serde_json::json!({
            "node": node,
            "now": now_ms,
            "expires": now_ms + ttl.as_millis() as i64,
            "cutoff": now_ms - self.retention.as_millis() as i64,
            "now_secs": now_ms / 1000,
        });
        let (_, error) = self.write(sql, vars).await?;
        error.map_or(Ok(()), |error| Err(error.into()))
    }

    /// Who is online: one entry per user, with connections summed over
    /// nodes.
    pub async fn presence_list(&self) -> Result<Vec<Json>, ApiError> {
        let now_ms = now_ms();
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

    // ----- changefeed -----

    /// Reads committed transactions with stamps at or after `since`
    /// (SurrealDB's `SINCE` is inclusive), oldest first.
    pub async fn read_changes(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<Vec<ChangeSet>, surrealdb::Error> {
        let limit = limit.clamp(1, CHANGES_PER_READ);
        let sql = format!("SHOW CHANGES FOR DATABASE SINCE {since} LIMIT {limit}");
        let sets: Vec<Value> = self.db.query(sql).await?.check()?.take(0)?;
        Ok(sets
            .into_iter()
            .filter_map(changes::parse_change_set)
            .collect())
    }

    /// Runs raw SurrealQL, bypassing the API: for tests that play an outside
    /// writer, and for tools.
    pub async fn raw_query(&self, sql: &str) -> Result<(), surrealdb::Error> {
        self.db.query(sql).await?.check()?;
        Ok(())
    }
}

/// The error that made a multi-statement response fail. In a failed
/// transaction every statement reports an error: the cause is the first one
/// that is not a consequence ("not executed", "aborted due to a prior
/// error"); if there is none, the COMMIT itself failed (a conflict, say) and
/// its row, the last, says why.
fn first_error(response: &mut surrealdb::IndexedResults) -> Option<surrealdb::Error> {
    let mut errors: Vec<(usize, surrealdb::Error)> = response.take_errors().into_iter().collect();
    errors.sort_by_key(|(index, _)| *index);
    let consequence = |error: &surrealdb::Error| {
        let message = error.message();
        error.query_details() == Some(&surrealdb::types::QueryError::NotExecuted)
            || message.starts_with("The query was not executed")
            || message
                .starts_with("Cannot COMMIT: the transaction was aborted due to a prior error")
    };
    match errors.iter().position(|(_, error)| !consequence(error)) {
        Some(position) => Some(errors.swap_remove(position).1),
        None => errors.pop().map(|(_, error)| error),
    }
}

fn is_conflict(error: &surrealdb::Error) -> bool {
    error.query_details() == Some(&surrealdb::types::QueryError::TransactionConflict)
}

fn is_no_collection(error: &surrealdb::Error) -> bool {
    error.message().contains(NO_COLLECTION)
}

fn no_collection(name: &str) -> ApiError {
    ApiError::NotFound(format!("no collection named `{name}`"))
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    unix_ms(time::OffsetDateTime::now_utc())
}

/// Checks a collection name: a letter, then letters, digits or `_`.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_with_letter
        || name.len() > MAX_NAME_LEN
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "`{}` is not a valid collection name: use a letter followed by up to {} letters, digits or underscores",
                truncate(name, 80),
                MAX_NAME_LEN - 1
            ),
        ));
    }
    Ok(())
}

/// Checks a record id: 1 to 128 letters, digits, `_` or `-`.
pub fn validate_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::bad_request(
            "invalid_id",
            format!(
                "`{}` is not a valid record id: use 1 to {MAX_ID_LEN} letters, digits, `_` or `-`",
                truncate(id, 80)
            ),
        ));
    }
    Ok(())
}

/// A new record id: a lower-case ULID, so generated ids sort by creation
/// time, strictly increasing within this process (even within a millisecond).
pub fn new_record_id() -> String {
    // A std mutex: generating an id is a few arithmetic steps, never awaited.
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let generated = GENERATOR
        .lock()
        .map(|mut generator| generator.generate())
        .unwrap_or_else(|poisoned| poisoned.into_inner().generate());
    // The generator only fails after 2^80 ids in one millisecond.
    generated
        .unwrap_or_else(|_| ulid::Ulid::new())
        .to_string()
        .to_ascii_lowercase()
}

/// Strings longer than this are written without a string diff (see
/// [`Store::write_record`]): SurrealDB's diff of two strings costs up to
/// length squared, about 5 ms at this length and seconds at 30,000.
pub const LONG_STRING_BYTES: usize = 1024;

/// `data` with `null` at every field a merge would set to a long string (or
/// to an array holding one anywhere), and nothing else; `None` if there is
/// no such field. Nested objects keep their nesting, since a merge into an
/// object keeps the fields it does not name.
fn long_strings_cleared(data: &Map<String, Json>) -> Option<Map<String, Json>> {
    fn holds_long_string(value: &Json) -> bool {
        match value {
            Json::String(text) => text.len() > LONG_STRING_BYTES,
            Json::Array(items) => items.iter().any(holds_long_string),
            Json::Object(fields) => fields.values().any(holds_long_string),
            _ => false,
        }
    }
    let cleared: Map<String, Json> = data
        .iter()
        .filter_map(|(key, value)| {
            let value = match value {
                Json::Object(fields) if !fields.is_empty() => {
                    Json::Object(long_strings_cleared(fields)?)
                }
                value if holds_long_string(value) => Json::Null,
                _ => return None,
            };
            Some((key.clone(), value))
        })
        .collect();
    (!cleared.is_empty()).then_some(cleared)
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// A field path as SurrealQL, each segment escaped. Segments must already be
/// validated identifiers.
fn escaped_path(path: &[String]) -> String {
    path.iter()
        .map(|segment| format!("`{segment}`"))
        .collect::<Vec<_>>()
        .join(".")
}

/// The text of a record id key: the string itself, or its SurrealQL form.
fn key_text(key: &RecordIdKey) -> String {
    match key {
        RecordIdKey::String(text) => text.clone(),
        RecordIdKey::Number(number) => number.to_string(),
        other => Value::RecordId(surrealdb::types::RecordId {
            table: "_".into(),
            key: other.clone(),
        })
        .into_json_value()
        .as_str()
        .map(|text| text.trim_start_matches("_:").to_owned())
        .unwrap_or_default(),
    }
}

/// Converts a stored record to JSON with a bare `id`; also returns its table
/// and key.
pub(crate) fn record_json(value: Value) -> (String, String, Json) {
    let Value::Object(object) = value else {
        return (String::new(), String::new(), value.into_json_value());
    };
    let mut table = String::new();
    let mut key = String::new();
    let mut json = Map::new();
    for (field, value) in object.into_inner() {
        match (field.as_str(), value) {
            ("id", Value::RecordId(id)) => {
                table = id.table.to_string();
                key = key_text(&id.key);
                json.insert(field, Json::String(key.clone()));
            }
            (_, value) => {
                json.insert(field, value.into_json_value());
            }
        }
    }
    (table, key, Json::Object(json))
}

/// Collection metadata as clients see it: the record without its id.
fn collection_json(value: Value) -> Json {
    let (_, key, mut json) = record_json(value);
    if let Json::Object(map) = &mut json {
        map.remove("id");
        map.entry("name").or_insert(Json::String(key));
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expired tickets used to be deleted by every ticket request, with a
    /// scan of the whole table. They are pruned by the maintenance pass now,
    /// through an index on `expires`.
    #[tokio::test]
    async fn expired_tickets_are_pruned_through_an_index() {
        let store = Store::connect(&Config::defaults(), WriteTracker::new())
            .await
            .unwrap();
        let claims = serde_json::json!({"sub": "ann"});
        store.create_ticket("old", &claims, 1).await.unwrap();
        store
            .create_ticket("new", &claims, u64::MAX >> 12)
            .await
            .unwrap();
        let plan: Vec<Value> = store
            .db
            .query(format!(
                "SELECT * FROM {TICKETS_TABLE} WHERE expires < $now EXPLAIN"
            ))
            .bind(("now", 1_000_i64))
            .await
            .unwrap()
            .take(0)
            .unwrap();
        let plan = serde_json::to_string(&Value::Array(plan.into())).unwrap();
        assert!(plan.contains("IndexScan"), "{plan}");
        // Creating a ticket left the expired one; maintenance removes it.
        let count = |store: &Store| {
            let db = store.db.clone();
            async move {
                let keys: Vec<Value> = db
                    .query(format!("SELECT VALUE id FROM {TICKETS_TABLE}"))
                    .await
                    .unwrap()
                    .take(0)
                    .unwrap();
                keys.len()
            }
        };
        assert_eq!(count(&store).await, 2);
        store
            .presence_maintain("node", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(count(&store).await, 1);
        assert!(store.redeem_ticket("new").await.unwrap().is_some());
    }

    #[test]
    fn long_strings_are_found_where_a_merge_puts_them() {
        let long = "x".repeat(LONG_STRING_BYTES + 1);
        let data = serde_json::json!({
            "short": "s", "n": 1, "long": long,
            "list": ["a", long], "plain": ["a"],
            "nested": {"deep": {"long": long, "short": "s"}, "other": 2},
            "flat": {"short": "s"},
        });
        assert_eq!(
            long_strings_cleared(data.as_object().unwrap()).map(Json::Object),
            Some(serde_json::json!({
                "long": null, "list": null, "nested": {"deep": {"long": null}},
            }))
        );
        let short = serde_json::json!({"a": "s", "b": {"c": [1, "d"]}});
        assert_eq!(long_strings_cleared(short.as_object().unwrap()), None);
    }

    #[test]
    fn collection_names_are_checked() {
        for good in ["posts", "a", "Posts_2024", &"a".repeat(MAX_NAME_LEN)] {
            assert!(validate_name(good).is_ok(), "{good}");
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
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_ids_are_checked() {
        for good in ["abc123", "a-b_c", "1", &new_record_id()] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a:b", "⟨x⟩", "a`", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_sort_by_creation() {
        let ids: Vec<String> = (0..1000).map(|_| new_record_id()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(ids.iter().all(|id| id.len() == 26));
    }
}
