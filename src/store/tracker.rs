//! Writes in flight, so the feed knows how far it may read.
//!
//! A transaction's versionstamp is minted before its commit becomes
//! visible, so the feed must not read past a write that is still running
//! (see `feed`'s module docs). Every write the store makes registers here
//! before it starts; the watermark is the earliest start among them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::clock::Stamp;

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
}

#[derive(Default)]
struct InFlight {
    writes: BTreeSet<(Stamp, u64)>,
    next_ticket: u64,
}

/// A write in flight; dropping it marks the write complete and wakes the feed.
#[must_use = "the write counts as complete as soon as the guard is dropped"]
pub(super) struct WriteGuard {
    tracker: WriteTracker,
    key: (Stamp, u64),
}

impl WriteTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a write that is about to start.
    pub(super) fn begin(&self) -> WriteGuard {
        let mut in_flight = self.lock();
        // Read the clock under the lock, so that a watermark taken before this
        // registration is never above this write's stamp.
        let key = (Stamp::now(), in_flight.next_ticket);
        in_flight.next_ticket += 1;
        in_flight.writes.insert(key);
        WriteGuard {
            tracker: self.clone(),
            key,
        }
    }

    /// The stamp below which every commit is visible: see the module docs.
    pub fn watermark(&self, settle: Duration) -> Stamp {
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

    /// Resolves when a write has completed since the last call.
    pub async fn completed(&self) {
        self.inner.completed.notified().await
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
        self.tracker.lock().writes.remove(&self.key);
        self.tracker.inner.completed.notify_one();
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
    fn settle_window_lowers_the_watermark() {
        let tracker = WriteTracker::new();
        let now = tracker.watermark(Duration::ZERO);
        let settled = tracker.watermark(Duration::from_millis(250));
        assert!(now.0 - settled.0 >= 250 << 16);
    }
}
