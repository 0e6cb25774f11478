//! The hub: shared fan-out of events to subscriptions.
//!
//! Subscriptions with the same interest (collection and filter) form a group,
//! and a filter is evaluated once per event per group, not per subscriber.
//! Groups whose filter requires `field = value` are indexed by that pair, so
//! an event only visits the groups it can match plus the unindexed ones:
//! dispatch costs O(matching subscribers), not O(all subscribers).
//!
//! The hub never blocks the feed: each subscription has a bounded queue, and
//! a subscription whose queue is full is dropped from the hub. Its stream
//! then drains what was queued and ends cleanly, and the client resumes from
//! its last event id, so a slow client loses nothing and slows no one.

mod index;
mod interest;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::clock::Stamp;
use crate::event::{Audience, Delivery, Event};
use crate::revocations::Revocations;
use crate::rulebook::RuleBook;

use index::TopicIndex;
use interest::GroupKey;
pub use interest::{Interest, Reader, Scope};
pub(crate) use interest::{Topic, Topics};

pub(crate) type GroupId = u64;
/// What a subscription's queue holds.
pub(crate) type Queued = (Arc<Event>, Delivery);
type SubscriberId = u64;

/// A handle to the hub. Cloning is shallow.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// A std mutex: dispatch is synchronous (`try_send` only) and the lock is
    /// never held across an `.await`.
    state: Mutex<HubState>,
    stats: HubStats,
    /// Kept out of `state`, so that checking a token never waits for a
    /// batch's dispatch.
    revocations: Revocations,
    /// Connections and topics in the hub, readable without the lock (for
    /// `/metrics`).
    subscribers: AtomicUsize,
    topics: AtomicUsize,
    /// The rule book as requests read it: kept out of `state`, so a write
    /// never waits for a batch's dispatch.
    for_requests: Mutex<RequestRules>,
}

/// The rule book for requests, and whether it holds every collection change
/// this node has answered.
struct RequestRules {
    rules: Arc<RuleBook>,
    cursor: Stamp,
    /// Every collection change this node made has a stamp below this.
    changed_here_below: Stamp,
}

/// Counters, readable without the lock.
#[derive(Default)]
pub struct HubStats {
    pub events_published: AtomicU64,
    pub events_delivered: AtomicU64,
    pub lagging_closes: AtomicU64,
    /// Changes that became visible only after the feed had read past their
    /// stamp, and so were not delivered (see `feed::LateAudit`).
    pub late_changes: AtomicU64,
}

struct HubState {
    /// Every change with a stamp below this has been published.
    cursor: Stamp,
    next_id: u64,
    groups: HashMap<GroupId, Group>,
    group_ids: HashMap<GroupKey, GroupId>,
    /// Dispatch index, per scope.
    scopes: HashMap<Scope, TopicIndex>,
    /// Every collection's rules as of `cursor`: updated by each collection
    /// event just before it is dispatched. Copied on write, so a replaying
    /// stream can hold a snapshot.
    rules: Arc<RuleBook>,
    /// Shut down: no subscriber is kept (see [`Hub::close`]).
    closed: bool,
}

struct Group {
    interest: Interest,
    members: HashMap<SubscriberId, Member>,
    /// Reachable more than once per event (see
    /// [`Interest::reachable_twice`]; kept here so dispatch need not look).
    reachable_twice: bool,
}

/// One subscriber's end of its queue.
struct Member {
    sender: mpsc::Sender<Queued>,
    /// Bytes of events in the queue (see [`Event::queued_size`]), shared
    /// with the [`Subscription`], which takes off what it receives.
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// How much a subscription's queue may hold before the subscriber is
/// dropped as lagging: a count of events, and their bytes (events of large
/// records would otherwise let one stalled client hold gigabytes).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimit {
    pub events: usize,
    pub bytes: usize,
}

/// A live subscription: events arrive on [`Subscription::recv`]. Dropping it
/// leaves the hub.
pub struct Subscription {
    hub: Hub,
    group: GroupId,
    id: SubscriberId,
    receiver: mpsc::Receiver<Queued>,
    queued_bytes: Arc<AtomicUsize>,
    /// The hub's cursor when the subscription started: every change below it
    /// was published before, every change from it on arrives here.
    pub start: Stamp,
}

impl Subscription {
    /// The next event, or `None` once the hub has dropped this subscription
    /// (its queue overflowed) and the queue is drained.
    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        let queued = self.receiver.recv().await?;
        Some(self.dequeued(queued))
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Queued> {
        let queued = self.receiver.try_recv().ok()?;
        Some(self.dequeued(queued))
    }

    fn dequeued(&self, queued: Queued) -> Queued {
        self.queued_bytes
            .fetch_sub(queued.0.queued_size(), Ordering::Relaxed);
        queued
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(self.group, self.id);
    }
}

impl Hub {
    /// A hub whose feed starts at `cursor`, with the collections' `rules`
    /// as of then.
    pub fn new(cursor: Stamp, rules: RuleBook) -> Self {
        let rules = Arc::new(rules);
        Hub {
            inner: Arc::new(HubInner {
                state: Mutex::new(HubState {
                    cursor,
                    next_id: 0,
                    groups: HashMap::new(),
                    group_ids: HashMap::new(),
                    scopes: HashMap::new(),
                    rules: rules.clone(),
                    closed: false,
                }),
                stats: HubStats::default(),
                revocations: Revocations::default(),
                subscribers: AtomicUsize::new(0),
                topics: AtomicUsize::new(0),
                for_requests: Mutex::new(RequestRules {
                    rules,
                    cursor,
                    // The book given is as of the cursor.
                    changed_here_below: Stamp(0),
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Every critical section leaves the maps consistent before anything
        // that could panic, so a poisoned lock is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every change with a stamp below this has been published.
    pub fn cursor(&self) -> Stamp {
        self.lock().cursor
    }

    /// Users signed out by an admin (the admin's node notes it at once,
    /// every node by the `forced_logout` event).
    pub fn revocations(&self) -> &Revocations {
        &self.inner.revocations
    }

    /// Subscriptions in the hub: `(connections, topics)` (a connection may
    /// carry several collections and channels).
    pub fn subscriptions(&self) -> (usize, usize) {
        (
            self.inner.subscribers.load(Ordering::Relaxed),
            self.inner.topics.load(Ordering::Relaxed),
        )
    }

    /// The collections' rules as of the cursor.
    pub(crate) fn rules(&self) -> Arc<RuleBook> {
        self.lock().rules.clone()
    }

    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// The collections' rules for a request (a write above all), read from
    /// memory: the book as of the cursor, if it holds every collection
    /// change this node has answered. `None` while one is still to come
    /// through the feed (a few milliseconds): the caller reads the
    /// database. So a rule change takes effect for this node's requests
    /// when it is answered, and for other nodes' when their feed passes it
    /// (the moment their streams end for it).
    pub fn rules_for_requests(&self) -> Option<Arc<RuleBook>> {
        let book = self.lock_request_rules();
        (book.cursor >= book.changed_here_below).then(|| book.rules.clone())
    }

    /// Notes that this node has just changed a collection (or may have: the
    /// write failed without saying whether it committed): requests read
    /// the database until the feed has passed it.
    pub fn note_collection_change(&self) {
        let below = Stamp::of_millis(Stamp::now().millis() + 1);
        let mut book = self.lock_request_rules();
        book.changed_here_below = book.changed_here_below.max(below);
    }

    fn lock_request_rules(&self) -> MutexGuard<'_, RequestRules> {
        // Each section is one assignment or clone.
        self.inner
            .for_requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes, and returns with the subscription the collections' rules
    /// as of its start: every rule change after them reaches the
    /// subscription as an event. What `limit` allows may queue before the
    /// subscription is dropped as lagging.
    pub fn subscribe(
        &self,
        interest: Interest,
        limit: QueueLimit,
    ) -> (Subscription, Arc<RuleBook>) {
        let (sender, receiver) = mpsc::channel(limit.events.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let mut state = self.lock();
        if state.closed {
            // Its queue has no sender: it ends at once.
            drop(sender);
            let subscription = Subscription {
                hub: self.clone(),
                group: GroupId::MAX,
                id: SubscriberId::MAX,
                receiver,
                queued_bytes,
                start: state.cursor,
            };
            return (subscription, state.rules.clone());
        }
        let key = interest.group_key();
        let group_id = match state.group_ids.get(&key) {
            Some(id) => *id,
            None => {
                let id = state.next_id;
                state.next_id += 1;
                for topic in &interest.topics {
                    state
                        .scopes
                        .entry(topic.scope.clone())
                        .or_default()
                        .add(id, topic);
                }
                state.group_ids.insert(key, id);
                state.groups.insert(
                    id,
                    Group {
                        reachable_twice: interest.reachable_twice(),
                        interest,
                        members: HashMap::new(),
                    },
                );
                id
            }
        };
        let id = state.next_id;
        state.next_id += 1;
        let mut topics = 0;
        if let Some(group) = state.groups.get_mut(&group_id) {
            group.members.insert(
                id,
                Member {
                    sender,
                    queued_bytes: queued_bytes.clone(),
                    max_bytes: limit.bytes,
                },
            );
            topics = group.interest.topics.len();
        }
        self.inner.subscribers.fetch_add(1, Ordering::Relaxed);
        self.inner.topics.fetch_add(topics, Ordering::Relaxed);
        let subscription = Subscription {
            hub: self.clone(),
            group: group_id,
            id,
            receiver,
            queued_bytes,
            start: state.cursor,
        };
        (subscription, state.rules.clone())
    }

    /// Lets every subscriber go, for shutdown: each stream ends once it has
    /// taken what is queued, and one subscribing later ends at once. So
    /// streams need not watch the shutdown signal on every event (a lock
    /// every stream shares).
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let members: Vec<(GroupId, SubscriberId)> = state
            .groups
            .iter()
            .flat_map(|(group_id, group)| group.members.keys().map(|id| (*group_id, *id)))
            .collect();
        for (group_id, id) in members {
            self.remove_member(&mut state, group_id, id);
        }
    }

    fn leave(&self, group_id: GroupId, id: SubscriberId) {
        let mut state = self.lock();
        self.remove_member(&mut state, group_id, id);
    }

    /// Delivers messages of an ephemeral channel to the streams open now,
    /// in order. They have no place in the feed, so the cursor stays where
    /// it is.
    pub fn publish_ephemeral(&self, events: &[Arc<Event>]) {
        self.publish(events, Stamp(0));
    }

    /// Publishes events (in order) and moves the cursor to `cursor`, as one
    /// step, so a new subscription sees each event either live or in replay,
    /// never both and never neither.
    pub fn publish(&self, events: &[Arc<Event>], cursor: Stamp) {
        let mut state = self.lock();
        let mut lagging: HashSet<(GroupId, SubscriberId)> = HashSet::new();
        let mut delivered = 0u64;
        // Groups filed under several terms (an `OR` of equalities) can be
        // reached more than once per event; each is served once.
        let mut served: HashSet<GroupId> = HashSet::new();
        for event in events {
            served.clear();
            if let Some(sign_out) = event.sign_out() {
                self.inner.revocations.note(sign_out);
            }
            if event.kind.audience() == Audience::Collection {
                Arc::make_mut(&mut state.rules).apply(event);
            }
            let state = &*state;
            let mut visit = |group_id: GroupId| {
                let Some(group) = state.groups.get(&group_id) else {
                    return;
                };
                if group.reachable_twice && !served.insert(group_id) {
                    return;
                }
                let Some(delivery) = group.interest.delivery(event, &state.rules) else {
                    return;
                };
                let size = event.queued_size();
                for (id, member) in &group.members {
                    // Once a queue overflowed, that subscriber gets nothing more:
                    // a later event would leave a gap before its resume point.
                    if !lagging.is_empty() && lagging.contains(&(group_id, *id)) {
                        continue;
                    }
                    // Counted before sending, so the subscriber never takes
                    // off more than was added. An event larger than the whole
                    // budget still goes to an empty queue, so a reader that
                    // keeps up never lags.
                    let queued = member.queued_bytes.fetch_add(size, Ordering::Relaxed);
                    let fits = queued == 0 || queued + size <= member.max_bytes;
                    if fits && member.sender.try_send((event.clone(), delivery)).is_ok() {
                        delivered += 1;
                    } else {
                        member.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                        lagging.insert((group_id, *id));
                    }
                }
            };
            // The indexes of the scopes the event is in.
            let indexes = || {
                Scope::of(&event.source)
                    .into_iter()
                    .flatten()
                    .filter_map(|scope| state.scopes.get(&scope))
            };
            match event.kind.audience() {
                // Notices and presence events belong to no topic: every
                // group decides (they are rare).
                Audience::Everyone | Audience::Presence => {
                    state.groups.keys().copied().for_each(&mut visit);
                }
                // Collection events ignore filters.
                Audience::Collection => {
                    for index in indexes() {
                        index.every_group(&mut visit);
                    }
                }
                Audience::Channel | Audience::Record => {
                    for index in indexes() {
                        index.candidates(event, &mut visit);
                    }
                }
            }
        }
        state.cursor = state.cursor.max(cursor);
        {
            let mut book = self.lock_request_rules();
            book.cursor = state.cursor;
            if !Arc::ptr_eq(&book.rules, &state.rules) {
                book.rules = state.rules.clone();
            }
        }
        for (group_id, id) in &lagging {
            self.remove_member(&mut state, *group_id, *id);
        }
        drop(state);
        let stats = &self.inner.stats;
        stats
            .events_published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        stats
            .events_delivered
            .fetch_add(delivered, Ordering::Relaxed);
        if !lagging.is_empty() {
            stats
                .lagging_closes
                .fetch_add(lagging.len() as u64, Ordering::Relaxed);
            tracing::info!(
                count = lagging.len(),
                "closed lagging streams; they will resume"
            );
        }
    }
}

impl Hub {
    /// Removes one member; a group left empty is removed with its index
    /// entry.
    fn remove_member(&self, state: &mut HubState, group_id: GroupId, id: SubscriberId) {
        let Some(group) = state.groups.get_mut(&group_id) else {
            return;
        };
        if group.members.remove(&id).is_none() {
            return;
        }
        let topics = group.interest.topics.len();
        self.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.inner.topics.fetch_sub(topics, Ordering::Relaxed);
        if !group.members.is_empty() {
            return;
        }
        if let Some(group) = state.groups.remove(&group_id) {
            state.group_ids.remove(&group.interest.group_key());
            for topic in &group.interest.topics {
                if let Some(index) = state.scopes.get_mut(&topic.scope) {
                    index.remove(group_id, topic);
                    if index.is_empty() {
                        state.scopes.remove(&topic.scope);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, EventKind, Source};
    use crate::filter::Filter;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Filters with and without index terms, including `OR`s of equalities
    /// filed under several terms.
    const FILTERS: &[&str] = &[
        "room = 1",
        "room = 2",
        "room = 1 && kind = a",
        "room = 1 || kind = b",
        "owner = u1 || public = true",
        "owner = u2 || public = true",
        "(room = 1 || room = 2) && kind = a",
        "room >= 2",
        "kind != a",
        "room = 3 || kind > a",
    ];

    fn arb_record() -> impl Strategy<Value = Value> {
        (0i64..4, prop::sample::select(vec!["a", "b"]), prop::sample::select(vec!["u1", "u2"]), any::<bool>())
            .prop_map(|(room, kind, owner, public)| {
                json!({"room": room, "kind": kind, "owner": owner, "public": public})
            })
    }

    #[test]
    fn requests_read_rules_from_memory_only_once_the_feed_has_passed_a_local_change() {
        let hub = Hub::new(Stamp::now(), RuleBook::new());
        assert!(
            hub.rules_for_requests().is_some(),
            "the starting book is current"
        );
        hub.note_collection_change();
        assert!(hub.rules_for_requests().is_none(), "a change still to come");
        // The feed publishes up to a cursor in the same millisecond: the
        // change may still be above it.
        hub.publish(&[], Stamp(Stamp::now().0 - 1));
        assert!(hub.rules_for_requests().is_none());
        // Once the cursor is past the millisecond of the change, it is in.
        hub.publish(&[], Stamp::of_millis(Stamp::now().millis() + 1));
        assert!(hub.rules_for_requests().is_some());
    }

    fn record_event(index: u32, data: Value) -> Arc<Event> {
        Arc::new(Event::new(
            EventId {
                stamp: Stamp(1 << 20),
                index,
            },
            EventKind::RecordCreated,
            Source::Collection(Arc::from("c")),
            Some(format!("r{index}")),
            data,
            None,
        ))
    }

    #[test]
    fn checking_a_token_does_not_wait_for_dispatch() {
        let hub = Hub::new(Stamp(0), RuleBook::new());
        // Dispatch holds the state lock; a token check must not need it.
        let _dispatching = hub.lock();
        let (done, checked) = std::sync::mpsc::channel();
        let revocations = hub.revocations().clone();
        std::thread::spawn(move || {
            done.send(revocations.is_revoked("u1", Some(1))).unwrap();
        });
        assert_eq!(
            checked.recv_timeout(std::time::Duration::from_secs(20)),
            Ok(false)
        );
    }

    #[tokio::test]
    async fn closing_lets_every_subscriber_go_after_what_is_queued() {
        let hub = Hub::new(Stamp(0), RuleBook::new());
        let limit = QueueLimit {
            events: 16,
            bytes: 1 << 20,
        };
        let collection = || Interest::topic(Scope::Collection(Arc::from("c")), None);
        let (mut open, _) = hub.subscribe(collection(), limit);
        hub.publish(&[record_event(0, json!({}))], Stamp(2 << 20));
        hub.close();
        assert_eq!(hub.subscriptions(), (0, 0));
        // What was queued still arrives, then the end.
        assert!(open.recv().await.is_some());
        assert!(open.recv().await.is_none());
        // A subscription after shutdown ends at once, and leaves cleanly.
        let (mut late, _) = hub.subscribe(collection(), limit);
        assert!(late.recv().await.is_none());
        drop(late);
        hub.publish(&[record_event(1, json!({}))], Stamp(3 << 20));
        assert_eq!(hub.subscriptions(), (0, 0));
    }

    #[test]
    fn a_queue_is_bounded_in_bytes() {
        let hub = Hub::new(Stamp(0), RuleBook::new());
        let big = json!({"blob": "x".repeat(10_000)});
        let limit = QueueLimit {
            events: 1000,
            bytes: 50_000,
        };
        let (mut slow, _) = hub.subscribe(
            Interest::topic(Scope::Collection(Arc::from("c")), None),
            limit,
        );
        let (mut fast, _) = hub.subscribe(
            Interest::topic(Scope::Collection(Arc::from("c")), None),
            limit,
        );
        let mut received = 0;
        for index in 0..10 {
            hub.publish(&[record_event(index, big.clone())], Stamp(2 << 20));
            // One reader keeps up: an event larger than what is left of the
            // budget still goes to an empty queue.
            assert!(fast.try_recv().is_some());
            received += 1;
        }
        assert_eq!(received, 10);
        assert_eq!(hub.subscriptions().0, 1, "the slow one was dropped");
        let mut queued = 0;
        while slow.try_recv().is_some() {
            queued += 1;
        }
        let size = record_event(0, big.clone()).queued_size();
        assert!(
            queued >= 1 && queued * size <= 50_000,
            "{queued} events of {size} bytes"
        );
        // A single event larger than the whole budget reaches an idle reader.
        let huge = json!({"blob": "x".repeat(100_000)});
        hub.publish(&[record_event(11, huge)], Stamp(3 << 20));
        assert!(fast.try_recv().is_some());
        assert_eq!(hub.subscriptions().0, 1);
    }

    proptest! {
        /// The hub's indexed, grouped dispatch delivers to a subscriber
        /// exactly what `Interest::delivery` says, once per event.
        #[test]
        fn dispatch_equals_evaluating_every_subscriber(
            chosen in prop::collection::vec((0..FILTERS.len(), prop::option::of(0..FILTERS.len())), 1..24),
            events in prop::collection::vec((arb_record(), prop::option::of(arb_record()), any::<bool>()), 1..12),
        ) {
            let hub = Hub::new(Stamp(0), RuleBook::new());
            let filter = |n: usize| Some(Arc::new(Filter::parse(FILTERS[n]).unwrap()));
            // One topic on `c`, or a second one on `d` on the same connection.
            let mut subscribers: Vec<(Interest, Subscription)> = chosen
                .iter()
                .map(|&(n, second)| {
                    let mut interest = Interest::topic(Scope::Collection(Arc::from("c")), filter(n));
                    if let Some(m) = second {
                        interest.topics.push(Topic { scope: Scope::Collection(Arc::from("d")), filter: filter(m) });
                    }
                    let (subscription, _) = hub.subscribe(interest.clone(), QueueLimit { events: 1024, bytes: 1 << 30 });
                    (interest, subscription)
                })
                .collect();
            let events: Vec<Arc<Event>> = events
                .into_iter()
                .enumerate()
                .map(|(index, (data, before, in_d))| {
                    let kind = if before.is_some() { EventKind::RecordUpdated } else { EventKind::RecordCreated };
                    Arc::new(Event::new(
                        EventId { stamp: Stamp(1 << 20), index: index as u32 },
                        kind,
                        Source::Collection(Arc::from(if in_d { "d" } else { "c" })),
                        Some(format!("r{index}")),
                        data,
                        before,
                    ))
                })
                .collect();
            hub.publish(&events, Stamp(2 << 20));
            for (interest, subscription) in &mut subscribers {
                let expected: Vec<(EventId, Delivery)> = events
                    .iter()
                    .filter_map(|event| Some((event.id, interest.delivery(event, &RuleBook::new())?)))
                    .collect();
                let mut received = Vec::new();
                while let Some((event, delivery)) = subscription.try_recv() {
                    received.push((event.id, delivery));
                }
                prop_assert_eq!(received, expected);
            }
        }
    }
}
