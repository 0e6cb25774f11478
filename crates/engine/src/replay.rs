//! Reading the changefeed back, in stamp order: the feed's live tail and
//! every replay (a stream's gap, a change page's history) read through
//! [`ChangeReader`], so an event has the same id and content whichever way
//! it reaches a client; and [`Replay`], the one replay loop, which keeps of
//! each read what one reader may be sent.
//!
//! A replay's events are judged by the rules in force when they are read
//! (a stream resuming now sees what it may see now), and its reads take
//! turns under `--max-replays` ([`in_turn`]), so many streams catching up
//! at once share the database with everything else.

use std::sync::Arc;

use crate::Engine;
use crate::Error;
use crate::clock::Stamp;
use crate::decide::replayable;
use crate::event::{Delivery, Detail, Event, EventId, EventKind, Source};
use crate::hub::Interest;
use crate::identity::Caller;
use crate::rulebook::RuleBook;
use crate::store::{CHANGES_PER_READ, Change, ChangeOp, ChangeSet, Notice, Store, StoreError};

/// Reads the changefeed in batches sized by the bytes of the last one.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeReader {
    size: PageSize,
}

/// One read's events, cut where it is safe to deliver them.
pub(crate) struct Read {
    pub(crate) events: Vec<Arc<Event>>,
    /// The stamp of each transaction read (some may have made no event).
    pub(crate) stamps: Vec<Stamp>,
    /// Where the next read starts.
    pub(crate) next_since: Stamp,
    /// Whether changes below the read's bound may be left unread.
    pub(crate) more: bool,
    /// The first stamp at or above the bound that the read saw (left for a
    /// later read), if any.
    pub(crate) held_back: Option<Stamp>,
}

impl ChangeReader {
    /// Reads the changes with stamps in `since..until`, at most one read's
    /// worth, leaving out the ephemeral messages `node` relayed itself (it
    /// delivered them when they were sent).
    pub async fn read(
        &mut self,
        store: &Store,
        since: Stamp,
        until: Stamp,
    ) -> Result<Read, StoreError> {
        let batch = read_batch(store, since, until, &self.size).await?;
        let entries = batch.sets.iter().map(|set| set.entries).sum();
        let stamps = batch.sets.iter().map(|set| set.stamp).collect();
        let node = store.node();
        let events: Vec<Arc<Event>> = batch
            .sets
            .into_iter()
            .map(|set| set.without_relays_from(node))
            .flat_map(events_of)
            .collect();
        self.size.observe(entries, &events);
        Ok(Read {
            events,
            stamps,
            next_since: batch.next_since,
            more: batch.more,
            held_back: batch.held_back,
        })
    }
}

/// Replays the changes of `since..until` for one reader: `caller`, with
/// the `interest` its subscription was made with.
pub(crate) struct Replay<'a> {
    pub(crate) state: &'a Engine,
    pub(crate) caller: &'a Caller,
    pub(crate) interest: &'a Interest,
}

/// What one replay read gave a reader.
pub(crate) struct Replayed {
    /// The events it may be sent, after the replay's `after`, in order.
    pub(crate) events: Vec<(Arc<Event>, Delivery)>,
    /// The rules they were judged by (a frame's diff judges by them too).
    pub(crate) rules: Arc<RuleBook>,
    /// Where the next read starts, or `None` if the gap is read.
    pub(crate) next: Option<Stamp>,
}

impl Replay<'_> {
    /// Reads the next part of the gap `since..until`, in its turn, keeping
    /// the events after `after` that the reader may be sent. A shutdown
    /// meanwhile is [`Error::Unavailable`].
    pub async fn read(
        &self,
        reader: &mut ChangeReader,
        since: Stamp,
        until: Stamp,
        after: EventId,
    ) -> Result<Replayed, Error> {
        let state = self.state;
        let read = in_turn(state, reader.read(&state.store, since, until))
            .await
            .ok_or(Error::Unavailable)??;
        // Judged by the rules in force now.
        let rules = state.hub.rules();
        let events = read
            .events
            .into_iter()
            .filter(|event| event.id > after && replayable(self.caller, &rules, event))
            .filter_map(|event| {
                let delivery = self.interest.delivery(&event, &rules)?;
                Some((event, delivery))
            })
            .collect();
        Ok(Replayed {
            events,
            rules,
            next: read.more.then_some(read.next_since),
        })
    }
}

/// Runs one database read of a replay or a snapshot in its turn: holding
/// one of `--max-replays` permits for that read only, so many streams
/// catching up at once take turns and long reads interleave with short
/// ones. `None` if the server shuts down first.
pub(crate) async fn in_turn<T>(state: &Engine, read: impl Future<Output = T>) -> Option<T> {
    let turn = async {
        let _permit = state.replays.acquire().await;
        read.await
    };
    tokio::select! {
        _ = state.shutdown.cancelled() => None,
        done = turn => Some(done),
    }
}

/// Turns one committed transaction into events, in the order of its changes.
/// Live delivery and replay both use this, so an event has the same id and
/// content whichever way it reaches a client.
fn events_of(set: ChangeSet) -> Vec<Arc<Event>> {
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

/// The result of one changefeed read, cut where it is safe to deliver.
struct Batch {
    sets: Vec<ChangeSet>,
    /// Where the next read starts.
    next_since: Stamp,
    /// Whether the read may have left changes below its bound unread.
    more: bool,
    /// The first stamp at or above its bound that it saw (left for a later
    /// read), if any.
    held_back: Option<Stamp>,
}

/// Reads the changes with stamps in `since..until`, at most one read's worth.
///
/// SurrealDB's read limit counts changefeed entries, and a transaction that
/// wrote several tables spans several entries, so a full read may end in the
/// middle of a transaction: the last set is then left for the next read.
async fn read_batch(
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
struct PageSize {
    limit: u32,
}

/// About how many bytes of events one changefeed read may bring in.
const PAGE_BYTES: usize = 8 * 1024 * 1024;

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
    fn limit(&self) -> u32 {
        self.limit
    }

    /// Sizes the next read from what the last one returned: `entries`
    /// entries holding `events`.
    fn observe<'e>(&mut self, entries: u32, events: impl IntoIterator<Item = &'e Arc<Event>>) {
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
}
