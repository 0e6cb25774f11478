//! The feed: one tailer per node reads SurrealDB's changefeed in stamp order
//! and publishes every change to the hub as an [`Event`].
//!
//! # The watermark
//!
//! A transaction's versionstamp is minted before its commit becomes visible,
//! so a commit with a *lower* stamp can become visible *after* a higher one.
//! A tailer that simply advanced past the highest stamp it saw would skip it
//! for good. So the feed only delivers changes below a watermark:
//!
//! * every write livehub makes is registered in the store's
//!   [`WriteTracker`](crate::store::WriteTracker) before it starts; its stamp will be at least the clock at that moment
//!   (SurrealDB's stamps are `(unix_ms << 16) | counter`, minted from the
//!   same system clock and never below it);
//! * the watermark is the smallest start of the writes still in flight, or
//!   the current clock (minus the settle window for writers livehub cannot
//!   see) when none is;
//! * it is taken *before* each read, so every commit below it is either
//!   visible to the read or was still in flight (and then it is not below).
//!
//! Everything below the watermark that the read returns is complete, so the
//! cursor moves up to the watermark and never past a change still to come.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Stamp;
use crate::event::{Detail, Event, EventId, EventKind, Source};
use crate::hub::Hub;
use crate::peers::Peers;
use crate::store::{
    CHANGES_PER_READ, Change, ChangeOp, ChangeSet, Notice, Store, StoreError, Target, WriteTracker,
    Written,
};

/// The shortest wait before reading again after holding changes back.
const HELD_BACK_RETRY: Duration = Duration::from_millis(1);

/// Turns one committed transaction into events, in the order of its changes.
/// Live delivery and replay both use this, so an event has the same id and
/// content whichever way it reaches a client.
pub fn events_of(set: ChangeSet) -> Vec<Arc<Event>> {
    let mut events = Vec::with_capacity(set.changes.len());
    for (index, change) in set.changes.into_iter().enumerate() {
        let id = EventId {
            stamp: set.stamp,
            index: index as u32,
        };
        let event = match change {
            Change::Record {
                collection,
                key,
                op,
                data,
                before,
            } => {
                let kind = match op {
                    ChangeOp::Create => EventKind::RecordCreated,
                    ChangeOp::Update => EventKind::RecordUpdated,
                    ChangeOp::Delete => EventKind::RecordDeleted,
                };
                let source = Source::Collection(collection);
                Event::new(id, kind, source, Some(key), data, before)
            }
            Change::Collection {
                name,
                op,
                data,
                meta,
                before: _,
            } => {
                let kind = match op {
                    ChangeOp::Create => EventKind::CollectionCreated,
                    ChangeOp::Update => EventKind::CollectionUpdated,
                    ChangeOp::Delete => EventKind::CollectionDeleted,
                };
                let detail = meta.map_or(Detail::None, Detail::Collection);
                let source = Source::Collection(name);
                Event::with_detail(id, kind, source, None, data, None, detail)
            }
            Change::Message { channel, key, data } => {
                let source = Source::Channel(channel);
                let detail = Detail::Message { key };
                let kind = EventKind::ChannelMessage;
                Event::with_detail(id, kind, source, None, data, None, detail)
            }
            // Delivered live only: replays and pages skip it (`replayable`).
            Change::Relayed {
                channel, data, at, ..
            } => Event::ephemeral_message(channel, data, at),
            Change::Presence { joined, data } => {
                let kind = if joined {
                    EventKind::UserJoined
                } else {
                    EventKind::UserLeft
                };
                Event::new(id, kind, Source::Service, None, data, None)
            }
            Change::Notice(Notice::Announcement(data)) => {
                let kind = EventKind::SystemAnnouncement;
                Event::new(id, kind, Source::Service, None, data, None)
            }
            Change::Notice(Notice::SignOut { data, sign_out }) => {
                let detail = sign_out.map_or(Detail::None, Detail::SignOut);
                let kind = EventKind::ForcedLogout;
                Event::with_detail(id, kind, Source::Service, None, data, None, detail)
            }
            Change::Notice(Notice::SubscriptionChange(data)) => {
                let kind = EventKind::SubscriptionChange;
                Event::new(id, kind, Source::Service, None, data, None)
            }
            Change::Other => continue,
        };
        events.push(Arc::new(event));
    }
    events
}

/// Whether a write of `written` makes `event` (compared in place: this
/// runs for every event the feed publishes while writes await a match).
fn made_by(event: &Event, written: &Written) -> bool {
    use EventKind::*;
    match written {
        Written::Record { collection, key } => {
            matches!(event.kind, RecordCreated | RecordUpdated | RecordDeleted)
                && event.collection() == Some(collection)
                && event.record_id.as_deref() == Some(key.as_str())
        }
        Written::Collection(name) => {
            matches!(
                event.kind,
                CollectionCreated | CollectionUpdated | CollectionDeleted
            ) && event.collection() == Some(name)
        }
        Written::Message { channel, key } => {
            event.kind == ChannelMessage
                && matches!(&event.source, Source::Channel(to) if **to == **channel)
                && matches!(&event.detail, Detail::Message { key: made } if made == key)
        }
        Written::Announcement => event.kind == SystemAnnouncement,
    }
}

/// What `event` changed, as a write names it (see [`Written::target`]);
/// `None` for events no write through the store makes.
fn target_of(event: &Event) -> Option<Target<'_>> {
    use EventKind::*;
    match event.kind {
        RecordCreated | RecordUpdated | RecordDeleted => Some(Target::Record {
            collection: event.collection()?,
            key: event.record_id.as_deref()?,
        }),
        CollectionCreated | CollectionUpdated | CollectionDeleted => {
            Some(Target::Collection(event.collection()?))
        }
        ChannelMessage => match &event.source {
            Source::Channel(channel) => match &event.detail {
                Detail::Message { key } => Some(Target::Message { channel, key }),
                _ => None,
            },
            _ => None,
        },
        SystemAnnouncement => Some(Target::Announcement),
        ForcedLogout | UserJoined | UserLeft | SubscriptionChange => None,
    }
}

/// Tags each event made by a write this node acknowledged with that
/// write's number, before the hub publishes it; then forgets the writes
/// whose change can no longer come (the feed has read up to `cursor`).
fn tag_acknowledged(writes: &WriteTracker, events: &[Arc<Event>], cursor: Stamp) {
    let mut unmatched = writes.unmatched();
    if unmatched.is_empty() {
        return;
    }
    for event in events {
        let Some(target) = target_of(event) else {
            continue;
        };
        let made = |written: &Written| made_by(event, written);
        if let Some(number) = unmatched.claim(event.id.stamp, &target, made) {
            event.set_acknowledged(number);
        }
    }
    unmatched.forget_before(cursor);
}

/// The result of one changefeed read, cut where it is safe to deliver.
pub struct Batch {
    pub sets: Vec<ChangeSet>,
    /// Where the next read starts.
    pub next_since: Stamp,
    /// Whether the read may have left changes below its bound unread.
    pub more: bool,
    /// The first stamp at or above its bound that it saw (left for a later
    /// read), if any.
    pub held_back: Option<Stamp>,
}

/// Reads the changes with stamps in `since..until`, at most one read's worth.
///
/// SurrealDB's read limit counts changefeed entries, and a transaction that
/// wrote several tables spans several entries, so a full read may end in the
/// middle of a transaction: the last set is then left for the next read.
pub async fn read_batch(
    store: &Store,
    since: Stamp,
    until: Stamp,
    page: &PageSize,
) -> Result<Batch, StoreError> {
    let limit = page.limit();
    let mut sets = store.read_changes(since, limit).await?;
    let entries: u32 = sets.iter().map(|set| set.entries).sum();
    let full = entries >= limit;
    if full && sets.len() > 1 {
        // Possibly cut short: read it again, whole, next time. (A lone set is a
        // single transaction spanning the whole read, and is delivered.)
        sets.pop();
    }
    if let Some(beyond) = sets.iter().position(|set| set.stamp >= until) {
        // The read went past the bound, so it saw everything below it.
        let first_beyond = sets[beyond].stamp;
        sets.truncate(beyond);
        return Ok(Batch {
            sets,
            next_since: until,
            more: false,
            held_back: Some(first_beyond),
        });
    }
    match sets.last() {
        Some(last) if full => {
            let next_since = last.stamp.next();
            Ok(Batch {
                sets,
                next_since,
                more: true,
                held_back: None,
            })
        }
        _ => Ok(Batch {
            sets,
            next_since: until,
            more: false,
            held_back: None,
        }),
    }
}

/// How many changefeed entries one read asks for, so that a page of large
/// records stays within [`PAGE_BYTES`]: judged by the size of the entries
/// the last read returned (large records make small pages, small records
/// pages of [`CHANGES_PER_READ`]).
#[derive(Debug, Clone)]
pub struct PageSize {
    limit: u32,
}

/// About how many bytes of events one changefeed read may bring in.
pub const PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Entries the first read asks for, before any size is known: at the
/// largest body (`--max-body-bytes`, 1 MiB by default), a few tens of
/// megabytes.
const FIRST_PAGE_ENTRIES: u32 = 16;

impl Default for PageSize {
    fn default() -> Self {
        PageSize {
            limit: FIRST_PAGE_ENTRIES,
        }
    }
}

impl PageSize {
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Sizes the next read from what the last one returned: `entries`
    /// entries holding `events`.
    pub fn observe<'e>(&mut self, entries: u32, events: impl IntoIterator<Item = &'e Arc<Event>>) {
        if entries == 0 {
            return;
        }
        let bytes: usize = events.into_iter().map(|event| event.queued_size()).sum();
        let per_entry = (bytes / entries as usize).max(1);
        self.limit = u32::try_from(PAGE_BYTES / per_entry)
            .unwrap_or(u32::MAX)
            .clamp(1, CHANGES_PER_READ);
    }
}

/// Finds changes that became visible only after the feed had read past their
/// stamp. The watermark rules this out for writes made through livehub; for
/// other SurrealDB clients the settle window bounds it, and this counts what
/// got through anyway (into `HubStats::late_changes`, with a warning).
struct LateAudit {
    /// Stamps below this were never the feed's to read.
    floor: Stamp,
    /// How far below the cursor an audit looks.
    lookback: Duration,
    /// Stamps of the commits the feed has read, within the lookback.
    seen: BTreeSet<Stamp>,
}

impl LateAudit {
    fn new(start: Stamp, lookback: Duration) -> Self {
        LateAudit {
            floor: start,
            lookback,
            seen: BTreeSet::new(),
        }
    }

    fn record(&mut self, stamp: Stamp) {
        self.seen.insert(stamp);
    }

    /// Where an audit read starts.
    fn since(&self, cursor: Stamp) -> Stamp {
        cursor.earlier_by(self.lookback).max(self.floor)
    }

    /// Of the stamps an audit read found, those below `cursor` that the feed
    /// never read: each is reported once.
    fn late(&mut self, stamps: impl IntoIterator<Item = Stamp>, cursor: Stamp) -> Vec<Stamp> {
        let floor = self.floor;
        let late: Vec<Stamp> = stamps
            .into_iter()
            .filter(|stamp| *stamp >= floor && *stamp < cursor && !self.seen.contains(stamp))
            .collect();
        self.seen.extend(&late);
        // Forget what no later audit will look at.
        self.seen = self.seen.split_off(&self.since(cursor));
        late
    }
}

/// The audit, shared by the feed (which records what it read) and its
/// auditing task; a poisoned lock is taken as it is (the audit only counts).
fn lock(audit: &Mutex<LateAudit>) -> std::sync::MutexGuard<'_, LateAudit> {
    audit
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often the feed audits for late changes.
const AUDIT_INTERVAL: Duration = Duration::from_secs(1);

/// The changefeed tailer. Cloning is shallow.
#[derive(Clone)]
pub struct Feed {
    pub store: Store,
    pub hub: Hub,
    pub poll_interval: Duration,
    pub settle: Duration,
    /// The other nodes sharing the database, when it is a server: the feed
    /// also stays below their low stamps (see `peers`).
    pub peers: Option<Peers>,
}

impl Feed {
    /// How long until a change with `stamp`, held back at the watermark, can
    /// be delivered: once the clock (less the settle window) has passed it.
    /// At most a poll interval (a write completing wakes the feed sooner
    /// anyway), and at least a tenth of the settle window (or a
    /// millisecond): under a steady stream of outside writes the next change
    /// is always just past the watermark, and each read returns the whole
    /// window's changes again, so reading every millisecond would cost the
    /// database hundreds of times what the writes cost. A tenth of the
    /// window adds a tenth to the latency it already imposes.
    fn until_deliverable(&self, stamp: Stamp) -> Duration {
        let stamp_ms = stamp.millis();
        let settle_ms = u64::try_from(self.settle.as_millis()).unwrap_or(u64::MAX);
        let now_ms = Stamp::now().millis();
        let wait_ms = stamp_ms
            .saturating_add(settle_ms)
            .saturating_add(1)
            .saturating_sub(now_ms);
        let least = (self.settle / 10).max(HELD_BACK_RETRY);
        Duration::from_millis(wait_ms).clamp(least, self.poll_interval.max(least))
    }

    /// Counts a failed read, says so (less often as failures go on) and
    /// backs off before the next. False if shutdown came meanwhile.
    async fn failed(
        &self,
        failures: &mut u32,
        error: &StoreError,
        shutdown: &CancellationToken,
    ) -> bool {
        *failures += 1;
        if *failures == 1 || failures.is_power_of_two() {
            tracing::warn!(%error, failures, "reading the changefeed failed; retrying");
        }
        let backoff = Duration::from_millis(50 * u64::from((*failures).min(40)));
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(backoff) => true,
        }
    }

    /// Every [`AUDIT_INTERVAL`], reads the changefeed behind the cursor
    /// again and counts the commits the feed never read, until `shutdown`.
    /// A task of its own: a read of up to a thousand changes, decoded, took
    /// tens of milliseconds under load, and every live event waited for it
    /// while the feed ran it (the p99 of channel delivery).
    async fn audit(self, audit: Arc<Mutex<LateAudit>>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(AUDIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Every commit below the hub's cursor was recorded before the
            // cursor passed it.
            let cursor = self.hub.cursor();
            let since = lock(&audit).since(cursor);
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = self.store.read_changes(since, CHANGES_PER_READ) => read,
            };
            // A failed audit read is retried at the next audit.
            let Ok(sets) = read else { continue };
            let late = lock(&audit).late(sets.iter().map(|set| set.stamp), cursor);
            if let Some(first) = late.first() {
                self.hub
                    .stats()
                    .late_changes
                    .fetch_add(late.len() as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    count = late.len(),
                    first_stamp = first.0,
                    "changes became visible after the feed had passed them (written outside livehub?); raise --settle"
                );
            }
        }
    }

    /// Tails the changefeed until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut cursor = self.hub.cursor();
        let mut failures: u32 = 0;
        // Changes at or above the watermark wait for the next read. The
        // watermark's clock has millisecond steps, so a commit of the current
        // millisecond is held back: read again at the next one rather than
        // at the next poll.
        let mut held_back: Option<Stamp> = None;
        let writes = self.store.writes().clone();
        let lookback = self.settle.saturating_mul(4).max(Duration::from_secs(1));
        let audit = Arc::new(Mutex::new(LateAudit::new(cursor, lookback)));
        tokio::spawn(self.clone().audit(audit.clone(), shutdown.clone()));
        let mut page = PageSize::default();
        // Whether the last watermark was another node's low stamp: then
        // look again once it may have published a new one.
        let mut held_by_peers = false;
        loop {
            let wait = match (held_back.take(), &self.peers) {
                (Some(_), Some(peers)) if held_by_peers => (peers.interval() / 2)
                    .clamp(HELD_BACK_RETRY, self.poll_interval.max(HELD_BACK_RETRY)),
                (Some(stamp), _) => self.until_deliverable(stamp),
                (None, _) => self.poll_interval,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = writes.completed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            loop {
                let mut watermark = writes.watermark(self.settle);
                held_by_peers = false;
                if let Some(peers) = &self.peers {
                    // After this node's own watermark (and its clock): see `peers`.
                    let low = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        low = peers.low_stamp() => low,
                    };
                    match low {
                        Ok(Some(low)) if low < watermark => {
                            watermark = low;
                            held_by_peers = true;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            if !self.failed(&mut failures, &error, &shutdown).await {
                                return;
                            }
                            break;
                        }
                    }
                }
                if watermark <= cursor {
                    // Nothing can be delivered yet; look again shortly.
                    held_back = Some(cursor);
                    break;
                }
                let batch = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    batch = read_batch(&self.store, cursor, watermark, &page) => batch,
                };
                match batch {
                    Ok(batch) => {
                        if failures > 0 {
                            tracing::info!("changefeed reads recovered");
                            failures = 0;
                        }
                        {
                            let mut audit = lock(&audit);
                            for set in &batch.sets {
                                audit.record(set.stamp);
                            }
                        }
                        let entries = batch.sets.iter().map(|set| set.entries).sum();
                        let node = self.store.node();
                        let events: Vec<Arc<Event>> = batch
                            .sets
                            .into_iter()
                            .map(|set| set.without_relays_from(node))
                            .flat_map(events_of)
                            .collect();
                        page.observe(entries, &events);
                        cursor = batch.next_since;
                        held_back = held_back.or(batch.held_back);
                        tag_acknowledged(&writes, &events, cursor);
                        self.hub.publish(&events, cursor);
                        if !batch.more {
                            break;
                        }
                    }
                    Err(error) => {
                        if !self.failed(&mut failures, &error, &shutdown).await {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_sized_by_the_bytes_of_the_last_one() {
        let event = |bytes: usize| {
            Arc::new(Event::new(
                EventId {
                    stamp: Stamp(1),
                    index: 0,
                },
                EventKind::RecordCreated,
                Source::Collection(Arc::from("c")),
                Some("r".into()),
                serde_json::json!({ "blob": "x".repeat(bytes) }),
                None,
            ))
        };
        let mut page = PageSize::default();
        assert_eq!(page.limit(), FIRST_PAGE_ENTRIES);
        // Small records: full pages.
        page.observe(10, &vec![event(100); 10]);
        assert_eq!(page.limit(), CHANGES_PER_READ);
        // 1 MB records: a page stays within its byte budget.
        let large = event(1_000_000);
        page.observe(4, &vec![large.clone(); 4]);
        assert!(page.limit() >= 1);
        assert!(page.limit() as usize * large.queued_size() <= PAGE_BYTES);
        // Nothing read: the size stands.
        let limit = page.limit();
        page.observe(0, &[]);
        assert_eq!(page.limit(), limit);
    }

    #[test]
    fn the_audit_reports_commits_the_feed_never_read_once() {
        let ms = Stamp::of_millis;
        let mut audit = LateAudit::new(ms(1_000), Duration::from_millis(100));
        for stamp in [ms(1_010), ms(1_020), ms(1_040)] {
            audit.record(stamp);
        }
        // 1_030 appeared below the cursor after the feed passed it; 1_060 is
        // above the cursor (not read yet); 990 predates the feed.
        let found = [
            ms(990),
            ms(1_010),
            ms(1_020),
            ms(1_030),
            ms(1_040),
            ms(1_060),
        ];
        assert_eq!(audit.late(found, ms(1_050)), [ms(1_030)]);
        assert!(audit.late(found, ms(1_050)).is_empty(), "reported once");
        // Old stamps are forgotten once outside the lookback.
        assert_eq!(audit.since(ms(2_000)), ms(1_900));
        audit.late([], ms(2_000));
        assert!(audit.seen.is_empty());
    }
}
