//! Writes in flight, so the feed knows how far it may read, and writes
//! acknowledged, so a new stream knows what its client has already seen
//! answered.
//!
//! A transaction's versionstamp is minted before its commit becomes
//! visible, so the feed must not read past a write that is still running
//! (see `feed`'s module docs). Every write the store makes registers here
//! before it starts; the watermark is the earliest start among them.
//!
//! A write that changed something is *acknowledged* with what it wrote:
//! it gets a sequence number, and the feed, meeting its change, tags the
//! event with it. A stream opened when `n` writes had been acknowledged
//! skips the events tagged below `n`: their writers had their answer
//! before the stream began (see `session`).
//!
//! On a node sharing the database with others, a write may start only
//! under a *held* row (see `peers`): the lease is checked and the write
//! registered under one lock, so the node cannot say it is idle while a
//! write starts.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::clock::{Stamp, unix_ms_now};

/// Registers the writes livehub makes, so the feed knows how far it may read.
/// Cloning is shallow.
#[derive(Clone, Default)]
pub struct WriteTracker {
    inner: Arc<TrackerInner>,
}

#[derive(Default)]
struct TrackerInner {
    /// `(lowest possible stamp, ticket)` of every write in flight, so the
    /// first element is the one that holds the watermark back. A std mutex:
    /// it guards a few set operations and is never held across an `.await`.
    in_flight: Mutex<InFlight>,
    /// Woken when a write completes, so the feed reads at once.
    completed: Notify,
    /// Woken when a write completes, so this node shares its new low stamp
    /// with the other nodes at once (see `peers`).
    completed_for_peers: Notify,
}

#[derive(Default)]
struct InFlight {
    writes: BTreeSet<(Stamp, u64)>,
    /// Whether a write may start now (see `peers`).
    lease: Lease,
    /// When the last write completed (unix ms): a node goes idle only after
    /// a quiet spell.
    last_completed_ms: i64,
    next_ticket: u64,
    /// How many writes have been acknowledged: the next one's number.
    acknowledged: u64,
    /// Acknowledged writes whose change the feed has not met yet, by the
    /// hash of their target (see [`Target::hash`]): the feed finds the
    /// writes that may have made a change without comparing every one (a
    /// batch of a thousand writes would otherwise cost a million
    /// comparisons).
    unmatched: HashMap<u64, Vec<Acknowledged>>,
    /// How many writes `unmatched` holds, and the bytes they wrote: the
    /// backlog between the database and the hub.
    unmatched_count: usize,
    unmatched_bytes: usize,
}

/// What this node's row among the nodes sharing the database promises,
/// and so whether a write may start (see `peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lease {
    /// Alone on the database (embedded, or not sharing): writes start freely.
    #[default]
    Unshared,
    /// The row says "no write of mine below my low stamp is still to
    /// commit" until `until_ms` (unix ms): a write starts while that leaves
    /// [`LEASE_MARGIN`].
    Held { until_ms: i64 },
    /// The row says (or is being made to say) "nothing in flight, and no
    /// write before I say otherwise": a write first publishes a held row.
    Idle,
}

/// How long a held row must still be valid for a write to start under it:
/// the time a write has to commit if this node stops refreshing its row.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_millis(200);

/// Changes this node acknowledged that the feed has not yet brought to the
/// hub: what its writers got ahead of its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub events: usize,
    pub bytes: usize,
}

impl InFlight {
    /// Numbers an acknowledged write and keeps it for the feed to match.
    fn note(&mut self, written: Written, bytes: usize, begun: Stamp, answered_ms: u64) {
        let number = self.acknowledged;
        self.acknowledged += 1;
        let hash = written.target().hash();
        self.unmatched.entry(hash).or_default().push(Acknowledged {
            written,
            begun,
            answered_ms,
            number,
            bytes,
        });
        self.unmatched_count += 1;
        self.unmatched_bytes += bytes;
    }
}

/// What an acknowledged write changed, as the event it makes names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Record { collection: Arc<str>, key: String },
    Collection(Arc<str>),
    Message { channel: String, key: String },
    Announcement,
}

/// What a change was made to, borrowed: from a [`Written`], or from the
/// event the feed reads.
#[derive(Hash)]
pub enum Target<'a> {
    Record { collection: &'a str, key: &'a str },
    Collection(&'a str),
    Message { channel: &'a str, key: &'a str },
    Announcement,
}

impl Target<'_> {
    /// The same for a write and for the change it makes.
    pub(crate) fn hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        Hash::hash(self, &mut hasher);
        hasher.finish()
    }
}

impl Written {
    pub(crate) fn target(&self) -> Target<'_> {
        match self {
            Written::Record { collection, key } => Target::Record { collection, key },
            Written::Collection(name) => Target::Collection(name),
            Written::Message { channel, key } => Target::Message { channel, key },
            Written::Announcement => Target::Announcement,
        }
    }
}

/// An acknowledged write the feed has not matched to its change yet.
#[derive(Debug)]
struct Acknowledged {
    written: Written,
    /// Its stamp is at least this...
    begun: Stamp,
    /// ...and at most in this millisecond (it was minted before the answer).
    answered_ms: u64,
    number: u64,
    /// About how many bytes it wrote.
    bytes: usize,
}

impl Acknowledged {
    /// Whether a change to `written` with `stamp` may be this write's.
    fn may_be(&self, stamp: Stamp, made: &impl Fn(&Written) -> bool) -> bool {
        self.begun <= stamp && stamp.millis() <= self.answered_ms && made(&self.written)
    }
}

/// The acknowledged writes not matched yet, locked for the feed while it
/// tags one batch.
pub(crate) struct Unmatched<'a>(std::sync::MutexGuard<'a, InFlight>);

impl Unmatched<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.unmatched_count == 0
    }

    /// The acknowledgement number to tag a change to `target` with `stamp`
    /// with, if an acknowledged write may have made it (`made`: whether a
    /// write of that target makes this change; asked rather than compared,
    /// so the feed allocates nothing per event).
    ///
    /// Matching is by what was written and by the stamp's bounds, so two
    /// writes to one record close together may both fit: the change is then
    /// tagged with the latest of their numbers and all of them are
    /// consumed. A stream skips an event only if every write it may be
    /// was answered before the stream began; the worst a wrong match can do
    /// is deliver a change the client already had answered (a duplicate),
    /// never hide one.
    pub(crate) fn claim(
        &mut self,
        stamp: Stamp,
        target: &Target<'_>,
        made: impl Fn(&Written) -> bool,
    ) -> Option<u64> {
        let in_flight = &mut *self.0;
        let hash = target.hash();
        let bucket = in_flight.unmatched.get_mut(&hash)?;
        let mut number = None;
        let (mut count, mut bytes) = (0, 0);
        bucket.retain(|ack| {
            if ack.may_be(stamp, &made) {
                number = number.max(Some(ack.number));
                count += 1;
                bytes += ack.bytes;
                false
            } else {
                true
            }
        });
        in_flight.unmatched_count -= count;
        in_flight.unmatched_bytes -= bytes;
        if bucket.is_empty() {
            in_flight.unmatched.remove(&hash);
        }
        number
    }

    /// Forgets the writes whose change can no longer come: the feed has
    /// read every stamp up to `cursor`, past their answer's millisecond.
    pub(crate) fn forget_before(&mut self, cursor: Stamp) {
        let in_flight = &mut *self.0;
        let (mut count, mut bytes) = (0, 0);
        in_flight.unmatched.retain(|_, bucket| {
            bucket.retain(|ack| Stamp::of_millis(ack.answered_ms + 1) > cursor);
            count += bucket.len();
            bytes += bucket.iter().map(|ack| ack.bytes).sum::<usize>();
            !bucket.is_empty()
        });
        in_flight.unmatched_count = count;
        in_flight.unmatched_bytes = bytes;
    }
}

/// A write in flight; dropping it marks the write complete and wakes the
/// feed, and [`WriteGuard::acknowledge`] does so for a write that changed
/// something.
#[must_use = "the write counts as complete as soon as the guard is dropped"]
pub(super) struct WriteGuard {
    tracker: WriteTracker,
    key: (Stamp, u64),
}

impl WriteGuard {
    /// Completes a write that committed a change to `written`: the change
    /// it makes is tagged with its acknowledgement number. Only for writes
    /// that surely made that change (a no-op left unmatched could be taken
    /// for another write's change in the same millisecond).
    pub(super) fn acknowledge(self, written: Written) {
        self.acknowledge_all(vec![(written, 0)]);
    }

    /// Like [`WriteGuard::acknowledge`], for a write that committed one or
    /// more changes (a batch), numbered in their order, each with about how
    /// many bytes it wrote (which count in the [`Backlog`]).
    pub(super) fn acknowledge_all(self, written: Vec<(Written, usize)>) {
        {
            let mut in_flight = self.tracker.lock();
            let answered_ms = Stamp::now().millis();
            for (written, bytes) in written {
                in_flight.note(written, bytes, self.key.0, answered_ms);
            }
        }
        // Dropping removes it from the writes in flight.
        drop(self);
    }
}

fn margin_ms() -> i64 {
    LEASE_MARGIN.as_millis() as i64
}

impl WriteTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a write that is about to start.
    #[cfg(test)]
    fn begin(&self) -> WriteGuard {
        self.try_begin().expect("unshared")
    }

    /// Registers a write that is about to start, if this node's row lets
    /// it start now; `None` when the row must be published first (see
    /// `peers`). Checked and registered under one lock, so that the node
    /// cannot go idle between the two.
    pub(super) fn try_begin(&self) -> Option<WriteGuard> {
        let mut in_flight = self.lock();
        match in_flight.lease {
            Lease::Unshared => {}
            Lease::Held { until_ms } if until_ms >= unix_ms_now() + margin_ms() => {}
            Lease::Held { .. } | Lease::Idle => return None,
        }
        // Read the clock under the lock, so that a watermark taken before this
        // registration is never above this write's stamp.
        let key = (Stamp::now(), in_flight.next_ticket);
        in_flight.next_ticket += 1;
        in_flight.writes.insert(key);
        Some(WriteGuard {
            tracker: self.clone(),
            key,
        })
    }

    /// This node's row now promises writes from its low stamp on until
    /// `until_ms`. Returns when the previous promise ran out (unix ms) if
    /// it ran out with writes in flight: the others may have read past them.
    pub(crate) fn hold_lease(&self, until_ms: i64) -> Option<i64> {
        let mut in_flight = self.lock();
        let lapsed = match in_flight.lease {
            Lease::Held { until_ms: before }
                if before < unix_ms_now() && !in_flight.writes.is_empty() =>
            {
                Some(before)
            }
            _ => None,
        };
        in_flight.lease = Lease::Held { until_ms };
        lapsed
    }

    /// Stops writes from starting until a held row is published again, if
    /// no write is in flight and none has completed for `quiet`: the
    /// caller then publishes an idle row. False if the node is busy (or
    /// already idle).
    pub(crate) fn go_idle(&self, quiet: Duration) -> bool {
        let mut in_flight = self.lock();
        let quiet_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
        if !matches!(in_flight.lease, Lease::Held { .. })
            || !in_flight.writes.is_empty()
            || in_flight.last_completed_ms.saturating_add(quiet_ms) > unix_ms_now()
        {
            return false;
        }
        in_flight.lease = Lease::Idle;
        true
    }

    /// Whether this node's row says it is idle (writes wait for a held row).
    pub(crate) fn is_leased_idle(&self) -> bool {
        self.lock().lease == Lease::Idle
    }

    /// From now on writes wait for a held row: for a node that joins the
    /// others on the database.
    pub(crate) fn share(&self) {
        self.lock().lease = Lease::Idle;
    }

    /// The stamp below which every commit is visible: see the module docs.
    pub(crate) fn watermark(&self, settle: Duration) -> Stamp {
        let in_flight = self.lock();
        let now = SystemTime::now()
            .checked_sub(settle)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let clock = Stamp::at(now);
        match in_flight.writes.first() {
            Some((oldest_start, _)) => clock.min(*oldest_start),
            None => clock,
        }
    }

    /// Whether no write is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.lock().writes.is_empty()
    }

    /// The changes acknowledged that the feed has not brought to the hub.
    pub fn backlog(&self) -> Backlog {
        let in_flight = self.lock();
        Backlog {
            events: in_flight.unmatched_count,
            bytes: in_flight.unmatched_bytes,
        }
    }

    /// How many writes have been acknowledged so far.
    pub(crate) fn acknowledged(&self) -> u64 {
        self.lock().acknowledged
    }

    /// The acknowledged writes the feed has not matched yet.
    pub(crate) fn unmatched(&self) -> Unmatched<'_> {
        Unmatched(self.lock())
    }

    /// Resolves when a write has completed since the last call.
    pub(crate) async fn completed(&self) {
        self.inner.completed.notified().await
    }

    /// Like [`Self::completed`], for the task that shares the low stamp.
    pub(crate) async fn completed_for_peers(&self) {
        self.inner.completed_for_peers.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        // A panic while holding this lock leaves the set consistent (each
        // operation is a single insert or remove), so poisoning is ignored.
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        {
            let mut in_flight = self.tracker.lock();
            in_flight.writes.remove(&self.key);
            in_flight.last_completed_ms = unix_ms_now();
        }
        self.tracker.inner.completed.notify_one();
        self.tracker.inner.completed_for_peers.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_held_back_by_writes_in_flight() {
        let tracker = WriteTracker::new();
        let before = tracker.watermark(Duration::ZERO);
        let write = tracker.begin();
        std::thread::sleep(Duration::from_millis(3));
        let held = tracker.watermark(Duration::ZERO);
        assert!(held >= before);
        assert_eq!(held, write.key.0);
        drop(write);
        assert!(tracker.watermark(Duration::ZERO) > held);
    }

    #[test]
    fn acknowledged_writes_tag_their_change_once() {
        let tracker = WriteTracker::new();
        let post = |key: &str| Written::Record {
            collection: Arc::from("posts"),
            key: key.into(),
        };
        let begun = Stamp::now();
        tracker.begin().acknowledge(post("a"));
        tracker.begin().acknowledge(post("b"));
        // A failed write is not acknowledged.
        drop(tracker.begin());
        assert_eq!(tracker.acknowledged(), 2);
        let stamp = Stamp(begun.0 + 1);
        let mut unmatched = tracker.unmatched();
        let claim = |unmatched: &mut Unmatched, stamp, target: Written| {
            unmatched.claim(stamp, &target.target(), |written| *written == target)
        };
        assert_eq!(claim(&mut unmatched, stamp, post("b")), Some(1));
        assert_eq!(claim(&mut unmatched, stamp, post("b")), None, "consumed");
        // A stamp before the write began cannot be its change.
        assert_eq!(claim(&mut unmatched, Stamp(begun.0 - 1), post("a")), None);
        // Nor one from after its answer's millisecond.
        let later = Stamp::of_millis(Stamp::now().millis() + 1);
        assert_eq!(claim(&mut unmatched, later, post("a")), None);
        assert!(!unmatched.is_empty());
        unmatched.forget_before(later);
        assert!(unmatched.is_empty());
    }

    #[test]
    fn a_sharing_node_writes_only_under_a_held_row_with_time_left() {
        let tracker = WriteTracker::new();
        tracker.share();
        assert!(
            tracker.try_begin().is_none(),
            "idle: publish a held row first"
        );
        tracker.hold_lease(unix_ms_now() + margin_ms() - 1);
        assert!(tracker.try_begin().is_none(), "too little left of the row");
        tracker.hold_lease(unix_ms_now() + 400);
        let write = tracker.try_begin().expect("held");
        // Busy, then not quiet long enough: it stays held.
        assert!(!tracker.go_idle(Duration::ZERO));
        drop(write);
        assert!(!tracker.go_idle(Duration::from_secs(60)));
        assert!(tracker.go_idle(Duration::ZERO));
        assert!(tracker.is_leased_idle());
        assert!(tracker.try_begin().is_none(), "idle again");
    }

    #[test]
    fn a_row_that_ran_out_under_a_write_in_flight_is_reported() {
        let tracker = WriteTracker::new();
        tracker.share();
        tracker.hold_lease(unix_ms_now() + 400);
        assert_eq!(tracker.hold_lease(unix_ms_now() + 400), None);
        let write = tracker.try_begin().unwrap();
        let ran_out = unix_ms_now() - 5;
        tracker.lock().lease = Lease::Held { until_ms: ran_out };
        assert_eq!(tracker.hold_lease(unix_ms_now() + 400), Some(ran_out));
        drop(write);
        tracker.lock().lease = Lease::Held { until_ms: ran_out };
        assert_eq!(
            tracker.hold_lease(unix_ms_now() + 400),
            None,
            "nothing was in flight"
        );
    }

    #[test]
    fn settle_window_lowers_the_watermark() {
        let tracker = WriteTracker::new();
        let now = tracker.watermark(Duration::ZERO);
        let settled = tracker.watermark(Duration::from_millis(250));
        assert!(now.0 - settled.0 >= 250 << 16);
    }
}
