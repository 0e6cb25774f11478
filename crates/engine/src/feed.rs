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
use crate::event::{Detail, Event, EventKind, Source};
use crate::hub::Hub;
use crate::peers::Peers;
use crate::replay::ChangeReader;
use crate::store::{CHANGES_PER_READ, Store, StoreError, Target, WriteTracker, Written};

/// The shortest wait before reading again after holding changes back.
const HELD_BACK_RETRY: Duration = Duration::from_millis(1);

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

    fn record(&mut self, stamps: &[Stamp]) {
        self.seen.extend(stamps);
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
pub(crate) struct Feed {
    pub(crate) store: Store,
    pub(crate) hub: Hub,
    pub(crate) poll_interval: Duration,
    pub(crate) settle: Duration,
    /// The other nodes sharing the database, when it is a server: the feed
    /// also stays below their low stamps (see `peers`).
    pub(crate) peers: Option<Peers>,
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

    /// Tails the changefeed until `shutdown` is cancelled: waits for a
    /// write to complete or a timer, then catches up, and again.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let cursor = self.hub.cursor();
        let mut tail = Tail {
            cursor,
            held_back: None,
            held_by_peers: false,
            peers_writing: false,
            failures: 0,
            reader: ChangeReader::default(),
        };
        let writes = self.store.writes().clone();
        let lookback = self.settle.saturating_mul(4).max(Duration::from_secs(1));
        let audit = Arc::new(Mutex::new(LateAudit::new(cursor, lookback)));
        tokio::spawn(self.clone().audit(audit.clone(), shutdown.clone()));
        loop {
            let wait = self.next_wait(&mut tail);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = writes.completed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            let caught_up = tokio::select! {
                _ = shutdown.cancelled() => return,
                caught_up = self.catch_up(&mut tail, &audit) => caught_up,
            };
            if let Err(error) = caught_up
                && !self.failed(&mut tail.failures, &error, &shutdown).await
            {
                return;
            }
        }
    }

    /// How long to wait before the next round of reads. Changes at or above
    /// the watermark wait for the next read; the watermark's clock has
    /// millisecond steps, so a commit of the current millisecond is held
    /// back and read again at the next one rather than at the next poll.
    fn next_wait(&self, tail: &mut Tail) -> Duration {
        let peers_soon = |peers: &Peers| {
            (peers.interval() / 2).clamp(HELD_BACK_RETRY, self.poll_interval.max(HELD_BACK_RETRY))
        };
        match (tail.held_back.take(), &self.peers) {
            // Held by another node's low stamp: look again once it may
            // have published a new one.
            (Some(_), Some(peers)) if tail.held_by_peers => peers_soon(peers),
            (Some(stamp), _) => self.until_deliverable(stamp),
            // Another node is writing (its row is held): its next write
            // is read as soon as its low stamp passes it, rather than at
            // the next poll, which nothing on this node would hasten.
            (None, Some(peers)) if tail.peers_writing => peers_soon(peers),
            (None, _) => self.poll_interval,
        }
    }

    /// Reads and publishes everything below the watermark, a read at a time.
    async fn catch_up(&self, tail: &mut Tail, audit: &Mutex<LateAudit>) -> Result<(), StoreError> {
        loop {
            let watermark = self.watermark(tail).await?;
            if watermark <= tail.cursor {
                // Nothing can be delivered yet; look again shortly.
                tail.held_back = Some(tail.cursor);
                return Ok(());
            }
            let read = tail
                .reader
                .read(&self.store, tail.cursor, watermark)
                .await?;
            if tail.failures > 0 {
                tracing::info!("changefeed reads recovered");
                tail.failures = 0;
            }
            lock(audit).record(&read.stamps);
            tail.cursor = read.next_since;
            tail.held_back = tail.held_back.or(read.held_back);
            tag_acknowledged(self.store.writes(), &read.events, tail.cursor);
            self.hub.publish(&read.events, tail.cursor);
            if !read.more {
                return Ok(());
            }
        }
    }

    /// What the feed may deliver below now: this node's watermark, or
    /// another node's low stamp when that is lower (taken after this
    /// node's own watermark and clock: see `peers`).
    async fn watermark(&self, tail: &mut Tail) -> Result<Stamp, StoreError> {
        let own = self.store.writes().watermark(self.settle);
        tail.held_by_peers = false;
        let Some(peers) = &self.peers else {
            return Ok(own);
        };
        let low = peers.low_stamp().await?;
        tail.peers_writing = low.is_some();
        match low {
            Some(low) if low < own => {
                tail.held_by_peers = true;
                Ok(low)
            }
            _ => Ok(own),
        }
    }
}

/// Where the tail is between reads.
struct Tail {
    /// Every change below it has been published.
    cursor: Stamp,
    /// A change at or above the last watermark, left for a later read.
    held_back: Option<Stamp>,
    /// Whether the last watermark was another node's low stamp.
    held_by_peers: bool,
    /// Whether another node's row was held at the last read (it writes).
    peers_writing: bool,
    /// Reads that failed in a row.
    failures: u32,
    reader: ChangeReader,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_reports_commits_the_feed_never_read_once() {
        let ms = Stamp::of_millis;
        let mut audit = LateAudit::new(ms(1_000), Duration::from_millis(100));
        audit.record(&[ms(1_010), ms(1_020), ms(1_040)]);
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
