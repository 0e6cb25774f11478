//! The store: the only module that speaks SurrealQL.
//!
//! Collections are SurrealDB tables defined with a `CHANGEFEED ... INCLUDE
//! ORIGINAL`, and their metadata lives in the `_lh_collections` table (with a
//! changefeed too), so every change, to a record or to a collection, reaches
//! the feed through one path and gets one durable id.
//!
//! Names reach queries as [`CollectionName`]s and [`RecordKey`]s, which
//! cannot hold anything but safe identifiers, and every value travels as a
//! bound parameter. The store speaks storage: it fails with [`StoreError`],
//! which `error.rs` turns into HTTP answers, and decodes its own tables
//! (collection metadata, notices, messages, presence) into types, so no
//! module outside it compares table names.
//!
//! One file per concern: `schema` (livehub's tables and the replay bounds),
//! `tracker` (writes in flight, for the feed's watermark), `collections`,
//! `records`, `tickets`, `notices` (notices, sign-outs and channel
//! messages), `presence`, `nodes` (the nodes' shared low stamps),
//! `health` (whether a database server answers) and `changes` (reading the
//! changefeed).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::Value as Json;
use surrealdb::Surreal;
use surrealdb::engine::any::Any;

use crate::clock::Stamp;
use crate::collection::{CollectionName, RecordKey};

mod changes;
mod collections;
mod group;
mod health;
mod idempotency;
mod nodes;
mod notices;
mod presence;
mod records;
mod schema;
mod tickets;
mod tracker;

pub(crate) use changes::{CHANGES_PER_READ, Change, ChangeOp, ChangeSet, Notice};
pub use idempotency::Claim;
pub(crate) use nodes::LEASE_TTL;
pub use presence::PresenceEntry;
pub use records::{BatchError, PageCursor, RuleChecks, SortOrder};
use tracker::WriteGuard;
pub use tracker::{Backlog, Target, WriteTracker, Written};

/// Event ids this far ahead of the clock cannot come from this database.
const FUTURE_TOLERANCE: Duration = Duration::from_secs(60);
/// How long a write may take before it is abandoned (503).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a relayed message of an ephemeral channel stays in its table:
/// long enough for every live node's feed to read it.
const RELAY_TTL: Duration = Duration::from_secs(60);
/// How often a write that lost a transaction conflict is run again.
const CONFLICT_RETRIES: u32 = 5;

/// Why a store operation failed, in storage terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// (Worded for clients by `Error::no_collection`.)
    #[error("collection `{0}` does not exist")]
    NoCollection(CollectionName),
    /// (Worded for clients by `Error::no_record`.)
    #[error("record `{key}` does not exist in `{collection}`")]
    NoRecord {
        collection: CollectionName,
        key: RecordKey,
    },
    #[error("collection `{0}` already exists")]
    CollectionExists(CollectionName),
    #[error("record `{key}` already exists in `{collection}`")]
    RecordExists {
        collection: CollectionName,
        key: RecordKey,
    },
    /// A rule checked inside the write's transaction refused it.
    #[error("your rules do not allow this change to record `{key}` of `{collection}`")]
    Refused {
        collection: CollectionName,
        key: RecordKey,
    },
    #[error("the data was changed concurrently and the write kept conflicting; retry it")]
    Conflict,
    /// The changes this node accepted are further ahead of its streams than
    /// `--max-backlog` allows: the writer should slow down.
    #[error(
        "this node has {events} changes ({bytes} bytes) accepted and not yet streamed, past its bound (--max-backlog {max_events}, --max-backlog-bytes {max_bytes}); retry after a moment"
    )]
    Overloaded {
        events: usize,
        bytes: usize,
        max_events: usize,
        max_bytes: usize,
    },
    /// A write took longer than [`WRITE_TIMEOUT`], or the connection is
    /// down.
    #[error("the database is unavailable")]
    Unavailable,
    #[error(transparent)]
    Database(#[from] surrealdb::Error),
    /// The database answered something livehub cannot read.
    #[error("{0}")]
    Unexpected(String),
}

/// A handle to the database. Cloning is shallow.
#[derive(Clone)]
pub struct Store {
    /// Shared: each clone of a `Surreal` handle opens a database session.
    db: Arc<Surreal<Any>>,
    writes: WriteTracker,
    /// Single creates go through it, committed together under load (see
    /// `group`); `None` in the committer's own handle.
    committer: Option<group::Committer>,
    retention: Duration,
    /// The stamp before which this database holds no changes.
    epoch: Stamp,
    /// Changes before this stamp may have been purged under an earlier, shorter
    /// retention setting.
    horizon: Stamp,
    /// Whether the database answers (see `health`).
    available: Arc<std::sync::atomic::AtomicBool>,
    /// The most changes accepted and not yet streamed before record writes
    /// and channel messages are refused.
    max_backlog: Backlog,
    /// Writes refused for the backlog, for `/metrics`.
    overloaded: Arc<std::sync::atomic::AtomicU64>,
    /// This node's name among the nodes sharing the database: random,
    /// new at each start.
    node: Arc<str>,
    /// Taken by every publication of this node's row (see `nodes`).
    publishing: Arc<tokio::sync::Mutex<()>>,
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

/// Which database to use, and how.
#[derive(Clone)]
pub struct Database {
    /// `mem://`, `surrealkv://<dir>` (embedded) or `ws://host:port` (a server).
    pub url: String,
    /// A root user and password, for a server.
    pub root: Option<(String, String)>,
    pub namespace: String,
    pub name: String,
    /// How long changes stay replayable (collections created from now on).
    pub retention: Duration,
    /// How far writes may run ahead of the streams before they are refused.
    pub max_backlog: Backlog,
}

impl std::fmt::Debug for Database {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url)
            .field("user", &self.root.as_ref().map(|(user, _)| user))
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("retention", &self.retention)
            .field("max_backlog", &self.max_backlog)
            .finish()
    }
}

impl Database {
    /// A fresh database in memory, for the engine's unit tests (the
    /// `livehub` crate's defaults come from its flags).
    #[cfg(test)]
    pub(crate) fn in_memory() -> Database {
        Database {
            url: "mem://".into(),
            root: None,
            namespace: "livehub".into(),
            name: "livehub".into(),
            retention: Duration::from_secs(24 * 3600),
            max_backlog: Backlog {
                events: 20_000,
                bytes: 64 * 1024 * 1024,
            },
        }
    }

    /// Whether the database runs in this process (no other node can share it).
    pub fn is_embedded(&self) -> bool {
        !(self.url.starts_with("ws://") || self.url.starts_with("wss://"))
    }
}

impl Store {
    /// Connects to the configured database and prepares livehub's tables.
    pub async fn connect(config: &Database, writes: WriteTracker) -> anyhow::Result<Store> {
        let db = surrealdb::engine::any::connect(config.url.as_str())
            .await
            .with_context(|| format!("connecting to the database at {}", config.url))?;
        if let Some((user, pass)) = &config.root {
            db.signin(surrealdb::opt::auth::Root {
                username: user.clone(),
                password: pass.clone(),
            })
            .await
            .context("signing in to the database")?;
        }
        // Nodes started together on a new database define the same
        // namespace, database and tables at once, and SurrealDB refuses all
        // but one of the conflicting transactions; every statement here is
        // idempotent, so the others try again.
        let mut attempts = Attempts::default();
        while let Err(error) = db
            .use_ns(config.namespace.as_str())
            .use_db(config.name.as_str())
            .await
        {
            attempts
                .again(anyhow::Error::from(error))
                .await
                .context("selecting the namespace and database")?;
        }
        let mut store = Store {
            db: Arc::new(db),
            writes,
            committer: None,
            retention: config.retention,
            epoch: Stamp(0),
            horizon: Stamp(0),
            available: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            max_backlog: config.max_backlog,
            overloaded: Arc::default(),
            node: Arc::from(RecordKey::generate().to_string()),
            publishing: Arc::default(),
        };
        while let Err(error) = store.init().await {
            attempts
                .again(error)
                .await
                .context("preparing livehub's tables")?;
        }
        store.committer = Some(group::Committer::start(store.clone()));
        Ok(store)
    }

    /// The stamp before which this database holds no changes.
    pub fn epoch(&self) -> Stamp {
        self.epoch
    }

    /// The writes this store has in flight (the feed's watermark).
    pub fn writes(&self) -> &WriteTracker {
        &self.writes
    }

    /// Whether every change after `stamp` is still in the changefeed.
    pub fn replay_check(&self, stamp: Stamp) -> Result<(), Unreplayable> {
        // Every change from `stamp + 1` on must be retained.
        let first_needed = stamp.next();
        if stamp > Stamp::at(SystemTime::now() + FUTURE_TOLERANCE) {
            return Err(Unreplayable::Unknown);
        }
        if first_needed < self.epoch {
            return Err(Unreplayable::BeforeDatabase);
        }
        if first_needed < self.earliest_retained() {
            return Err(Unreplayable::Expired);
        }
        Ok(())
    }

    /// How long a change stays replayable: the retention, less a margin so
    /// that the changefeed's garbage collector cannot drop the start of a
    /// gap between a check and the read.
    fn replayable_span(&self) -> Duration {
        let margin = (self.retention / 10).min(Duration::from_secs(60));
        self.retention.saturating_sub(margin)
    }

    /// How much longer the changes after `stamp` stay replayable: what a
    /// cache may keep a page from that cursor for.
    pub fn replayable_for(&self, stamp: Stamp) -> Duration {
        let until = Duration::from_millis(stamp.millis()) + self.replayable_span();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        until.saturating_sub(now)
    }

    /// The oldest stamp whose changes can still be replayed: the start of
    /// the [`replayable_span`](Self::replayable_span), and never before
    /// this database.
    pub fn earliest_retained(&self) -> Stamp {
        let retained_since = Stamp::at(
            SystemTime::now()
                .checked_sub(self.replayable_span())
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        retained_since.max(self.horizon).max(self.epoch)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.query("RETURN 1").await?.check()?;
        Ok(())
    }

    /// Runs a write: registered with the write tracker for its whole life,
    /// in a task of its own (so a client that disconnects cannot cut it off
    /// while the feed still counts it in flight), and run again when its
    /// transaction loses a conflict with a concurrent one. Returns the
    /// response, the error that caused a failure, if any, and the write's
    /// guard: the caller acknowledges what it changed, or drops it.
    async fn write(&self, sql: String, vars: Json) -> Result<Ran, StoreError> {
        if !self.is_available() {
            return Err(StoreError::Unavailable);
        }
        let store = self.clone();
        let task = tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                let write = store.begin_write().await?;
                let query = store.db.query(sql.as_str()).bind(vars.clone());
                // A write that hangs would hold the feed's watermark, and with
                // it every stream: give up on it (the guard goes with it).
                let Ok(response) = tokio::time::timeout(WRITE_TIMEOUT, query).await else {
                    tracing::warn!(timeout = ?WRITE_TIMEOUT, "a database write timed out");
                    return Err(StoreError::Unavailable);
                };
                let mut response = response?;
                let error = first_error(&mut response);
                if error.as_ref().is_some_and(is_conflict) {
                    if attempt < CONFLICT_RETRIES {
                        attempt += 1;
                        drop(write);
                        // Jitter, so writers that collided do not collide again.
                        let base = 2u64 << attempt;
                        let jitter = rand::random::<u64>() % base;
                        tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                        continue;
                    }
                    return Err(StoreError::Conflict);
                }
                return Ok(Ran {
                    response,
                    error,
                    guard: write,
                });
            }
        });
        match task.await {
            Ok(result) => result,
            Err(error) => Err(StoreError::Unexpected(format!(
                "write task failed: {error}"
            ))),
        }
    }

    /// Refuses a record write or channel message while this node's backlog
    /// (changes accepted and not yet streamed) is past its bound: writers
    /// are slowed down rather than let run ahead of every stream.
    pub fn admit(&self) -> Result<(), StoreError> {
        if self.is_backlogged() {
            let backlog = self.writes.backlog();
            let max = self.max_backlog;
            self.overloaded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(StoreError::Overloaded {
                events: backlog.events,
                bytes: backlog.bytes,
                max_events: max.events,
                max_bytes: max.bytes,
            });
        }
        Ok(())
    }

    /// Whether record writes and channel messages are refused now.
    pub fn is_backlogged(&self) -> bool {
        let backlog = self.writes.backlog();
        backlog.events >= self.max_backlog.events || backlog.bytes >= self.max_backlog.bytes
    }

    /// How many writes were refused for the backlog.
    pub fn overloaded_writes(&self) -> u64 {
        self.overloaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This node's name among the nodes sharing the database.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// Runs a write whose only answer is whether it worked; on success it
    /// is acknowledged as having changed `written`.
    async fn write_only(
        &self,
        sql: String,
        vars: Json,
        written: Option<(Written, usize)>,
    ) -> Result<(), StoreError> {
        let done = self.write(sql, vars).await?;
        if let Some(error) = done.error {
            return Err(error.into());
        }
        if let Some(written) = written {
            done.guard.acknowledge_all(vec![written]);
        }
        Ok(())
    }

    /// Runs raw SurrealQL, bypassing the API: for tests that play an outside
    /// writer, and for tools.
    pub async fn raw_query(&self, sql: &str) -> Result<(), surrealdb::Error> {
        self.db.query(sql).await?.check()?;
        Ok(())
    }
}

/// The length of `value` as JSON, counted without building the text: what
/// a change weighs in the backlog.
pub(crate) fn json_len(value: &Json) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// A write that ran: its response, the error that made it fail (if any),
/// and its place among the writes in flight until acknowledged or dropped.
struct Ran {
    response: surrealdb::IndexedResults,
    error: Option<surrealdb::Error>,
    guard: WriteGuard,
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

/// The tries of a start-up step that may conflict with other nodes doing
/// the same.
#[derive(Default)]
struct Attempts(u32);

impl Attempts {
    /// At most this many tries in all.
    const MOST: u32 = 20;

    /// `Ok` after a short wait if `error` is a transaction conflict and
    /// tries are left; else the error.
    async fn again(&mut self, error: anyhow::Error) -> anyhow::Result<()> {
        let conflict = error
            .chain()
            .filter_map(|cause| cause.downcast_ref::<surrealdb::Error>())
            .any(is_conflict);
        if !conflict || self.0 + 1 >= Self::MOST {
            return Err(error);
        }
        self.0 += 1;
        tokio::time::sleep(Duration::from_millis(10 * u64::from(self.0))).await;
        Ok(())
    }
}

fn is_conflict(error: &surrealdb::Error) -> bool {
    error.query_details() == Some(&surrealdb::types::QueryError::TransactionConflict)
}
