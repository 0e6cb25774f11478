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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::event::{Delivery, Event, EventKind};
use crate::filter::{FieldPath, Filter, IndexKey};
use crate::revocations::{Revocation, Revocations};
use crate::rules::{Access, Action, Rules};

/// What a subscription wants to receive: one or more topics (collections
/// or channels, with their filters) on one connection, and presence.
#[derive(Clone)]
pub struct Interest {
    /// Non-empty. Events of different topics never overlap, except that
    /// an all-collections topic must not be combined with one collection.
    pub topics: Vec<Topic>,
    /// Whose read rules apply, per collection, to an all-collections topic:
    /// set for a caller who is not an admin. `None`: no rules beyond the
    /// topics' filters (a collection's or channel's rule is folded into its
    /// topic's filter).
    pub reader: Option<Arc<Reader>>,
    /// Whether `user.*` events are wanted, and which of them the presence
    /// rule lets this caller see (`None`: none wanted).
    pub presence: Option<Access>,
}

/// One source of events and its filter.
#[derive(Clone)]
pub struct Topic {
    /// A collection's name, a channel's routing key (see
    /// [`crate::event::channel_key`]), or `None` for every collection.
    pub scope: Option<Arc<str>>,
    /// Record events (and channel messages) must match it; `None` matches
    /// every one.
    pub filter: Option<Arc<Filter>>,
}

impl Topic {
    /// Whether `event` is of this topic.
    fn covers(&self, event: &Event) -> bool {
        match &self.scope {
            Some(scope) => **scope == *event.collection,
            None => !event.kind.is_channel(),
        }
    }

    fn terms(&self) -> &[(FieldPath, IndexKey)] {
        self.filter
            .as_ref()
            .map_or(&[], |filter| filter.index_terms())
    }
}

impl Interest {
    /// One topic, no reader, no presence.
    pub fn topic(scope: Option<Arc<str>>, filter: Option<Arc<Filter>>) -> Interest {
        Interest {
            topics: vec![Topic { scope, filter }],
            reader: None,
            presence: None,
        }
    }
}

/// A caller whose read rules are applied per collection at dispatch, from
/// the rules the hub holds (kept in event order, so each live event is
/// judged by the rules in force when it was committed).
pub struct Reader {
    caller: Caller,
    /// Equal for callers with equal claims, who can share a group.
    key: String,
    /// Each collection's read rule bound to this caller.
    bound: Mutex<HashMap<Arc<str>, Bound>>,
}

/// A read rule bound to a reader, with the collection it was bound from (a
/// rule change replaces the `Arc`, which invalidates it).
type Bound = (Arc<Known>, Access);

impl Reader {
    pub fn new(caller: Caller) -> Reader {
        let key = match &caller {
            Some(identity) => identity.claims.to_string(),
            None => String::new(),
        };
        Reader {
            caller,
            key,
            bound: Mutex::new(HashMap::new()),
        }
    }

    /// What this caller may read of `collection`, as `rules` know it.
    fn access(&self, collection: &Arc<str>, rules: &Arc<Known>) -> Access {
        let mut bound = self
            .bound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match bound.get(collection) {
            Some((from, access)) if Arc::ptr_eq(from, rules) => access.clone(),
            _ => {
                let access = rules.rules.access(Action::Read, &self.caller);
                bound.insert(collection.clone(), (rules.clone(), access.clone()));
                access
            }
        }
    }
}

/// What the hub knows of a collection.
#[derive(Debug, PartialEq)]
pub struct Known {
    pub rules: Rules,
    /// When this collection was created (Unix milliseconds), if known:
    /// events of the same name from before it belong to a deleted
    /// collection, and are not replayed under this one's rules.
    pub created_ms: Option<i64>,
}

impl Known {
    /// From a collection's metadata (as stored, or as a collection event's
    /// data).
    pub fn of(meta: &serde_json::Value) -> Known {
        let created_ms = meta
            .get("created")
            .and_then(serde_json::Value::as_str)
            .and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .map(crate::event::unix_ms);
        Known {
            rules: Rules::of_collection(meta),
            created_ms,
        }
    }

    /// Whether `event` (of this collection's name) is older than this
    /// collection.
    pub fn predates(&self, event: &Event) -> bool {
        let event_ms = (event.id.stamp >> 16) as i64;
        self.created_ms.is_some_and(|created| event_ms < created)
    }
}

/// Every collection, by name.
pub type RuleBook = HashMap<Arc<str>, Arc<Known>>;

impl Interest {
    /// How `event` reaches this interest, if at all, given the collections'
    /// current `rules`. Live dispatch and replay both decide with this.
    ///
    /// Collection events ignore the filter, but not the read rule. A record
    /// event matches when its record does; an update whose record matched
    /// before but not after is delivered as [`Delivery::Left`], so that a
    /// client building a view from events ends with exactly the records that
    /// match.
    pub fn delivery(&self, event: &Event, rules: &RuleBook) -> Option<Delivery> {
        // Admins' notices reach every stream (the stream decides what a
        // logout means for it).
        if event.kind.is_notice() {
            return Some(Delivery::Match);
        }
        if event.kind.is_presence() {
            return self
                .presence
                .as_ref()
                .filter(|access| access.allows(&event.data))
                .map(|_| Delivery::Match);
        }
        let topic = self.topics.iter().find(|topic| topic.covers(event))?;
        let access = match &self.reader {
            Some(reader) if topic.scope.is_none() => {
                if event.kind.is_collection() {
                    // A collection event carries the collection's rules as
                    // they are after it (before it, for a delete); in a
                    // replay, the collection's rules of now must allow it too.
                    let then =
                        Rules::of_collection(&event.data).access(Action::Read, &reader.caller);
                    let now_refuses = rules
                        .get(&event.collection)
                        .is_some_and(|known| reader.access(&event.collection, known).is_nothing());
                    if now_refuses { Access::Nothing } else { then }
                } else {
                    match rules.get(&event.collection) {
                        Some(collection_rules) => {
                            reader.access(&event.collection, collection_rules)
                        }
                        None => Access::Nothing,
                    }
                }
            }
            _ => Access::All,
        };
        if access.is_nothing() {
            return None;
        }
        if event.kind.is_collection() {
            return Some(Delivery::Match);
        }
        // The rule first: a caller's filter never runs on a record the
        // caller may not read.
        let visible = |record: &serde_json::Value| {
            access.allows(record)
                && topic
                    .filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(record))
        };
        if visible(&event.data) {
            Some(Delivery::Match)
        } else if event.kind == EventKind::RecordUpdated
            && event.before.as_ref().is_some_and(visible)
        {
            Some(Delivery::Left)
        } else {
            None
        }
    }

    fn group_key(&self) -> GroupKey {
        (
            self.topics
                .iter()
                .map(|topic| {
                    (
                        topic.scope.clone(),
                        topic
                            .filter
                            .as_ref()
                            .map(|filter| filter.canonical().to_owned()),
                    )
                })
                .collect(),
            self.reader.as_ref().map(|reader| reader.key.clone()),
            self.presence.as_ref().map(|access| match access {
                Access::All => "all".to_owned(),
                Access::Nothing => "none".to_owned(),
                Access::Matching(filter) => filter.canonical().to_owned(),
            }),
        )
    }

    /// Whether one event can reach the group through more than one index
    /// entry (several topics, or a topic filed under several terms).
    fn reachable_twice(&self) -> bool {
        self.topics.len() > 1 || self.topics.iter().any(|topic| topic.terms().len() > 1)
    }
}

/// Subscriptions with equal topics (scopes and canonical filters), reader
/// and presence share a group.
type GroupKey = (
    Vec<(Option<Arc<str>>, Option<String>)>,
    Option<String>,
    Option<String>,
);
type GroupId = u64;
/// What a subscription's queue holds.
pub type Queued = (Arc<Event>, Delivery);
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
    cursor: u64,
    next_id: u64,
    groups: HashMap<GroupId, Group>,
    group_ids: HashMap<GroupKey, GroupId>,
    /// Dispatch index, per collection scope (`None`: every collection).
    scopes: HashMap<Option<Arc<str>>, Scope>,
    /// Every collection's rules as of `cursor`: updated by each collection
    /// event just before it is dispatched. Copied on write, so a replaying
    /// stream can hold a snapshot.
    rules: Arc<RuleBook>,
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

/// The groups of one collection scope, indexed for dispatch.
#[derive(Default)]
struct Scope {
    /// Groups without an equality term: visited for every event.
    unindexed: Vec<GroupId>,
    /// Groups with a `field = value` term, by field path and value.
    indexed: HashMap<FieldPath, HashMap<IndexKey, Vec<GroupId>>>,
}

impl Scope {
    fn is_empty(&self) -> bool {
        self.unindexed.is_empty() && self.indexed.is_empty()
    }

    fn add(&mut self, id: GroupId, topic: &Topic) {
        let terms = topic.terms();
        if terms.is_empty() {
            self.unindexed.push(id);
        }
        for (path, key) in terms {
            self.indexed
                .entry(path.clone())
                .or_default()
                .entry(key.clone())
                .or_default()
                .push(id);
        }
    }

    fn remove(&mut self, id: GroupId, topic: &Topic) {
        let terms = topic.terms();
        if terms.is_empty() {
            self.unindexed.retain(|other| *other != id);
        }
        for (path, key) in terms {
            if let Some(values) = self.indexed.get_mut(path) {
                if let Some(ids) = values.get_mut(key) {
                    ids.retain(|other| *other != id);
                    if ids.is_empty() {
                        values.remove(key);
                    }
                }
                if values.is_empty() {
                    self.indexed.remove(path);
                }
            }
        }
    }

    /// Calls `visit` with every group that may match `event` (a group filed
    /// under several terms may be visited more than once).
    fn candidates(&self, event: &Event, mut visit: impl FnMut(GroupId)) {
        self.unindexed.iter().copied().for_each(&mut visit);
        if event.kind.is_collection() {
            // Collection events ignore filters: every group sees them.
            for values in self.indexed.values() {
                values.values().flatten().copied().for_each(&mut visit);
            }
            return;
        }
        for (path, values) in &self.indexed {
            let after = path.get(&event.data).and_then(IndexKey::from_json);
            let before = event
                .before
                .as_ref()
                .and_then(|before| path.get(before))
                .and_then(IndexKey::from_json);
            let keys = [
                after.as_ref(),
                before.as_ref().filter(|key| Some(*key) != after.as_ref()),
            ];
            for key in keys.into_iter().flatten() {
                if let Some(ids) = values.get(key) {
                    ids.iter().copied().for_each(&mut visit);
                }
            }
        }
    }
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
    pub start: u64,
}

impl Subscription {
    /// The next event, or `None` once the hub has dropped this subscription
    /// (its queue overflowed) and the queue is drained.
    pub async fn recv(&mut self) -> Option<Queued> {
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
    pub fn new(cursor: u64, rules: RuleBook) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                state: Mutex::new(HubState {
                    cursor,
                    next_id: 0,
                    groups: HashMap::new(),
                    group_ids: HashMap::new(),
                    scopes: HashMap::new(),
                    rules: Arc::new(rules),
                }),
                stats: HubStats::default(),
                revocations: Revocations::default(),
                subscribers: AtomicUsize::new(0),
                topics: AtomicUsize::new(0),
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
    pub fn cursor(&self) -> u64 {
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
    pub fn rules(&self) -> Arc<RuleBook> {
        self.lock().rules.clone()
    }

    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// Subscribes; what `limit` allows may queue before the subscription is
    /// dropped as lagging.
    pub fn subscribe(&self, interest: Interest, limit: QueueLimit) -> Subscription {
        let (sender, receiver) = mpsc::channel(limit.events.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let mut state = self.lock();
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
        Subscription {
            hub: self.clone(),
            group: group_id,
            id,
            receiver,
            queued_bytes,
            start: state.cursor,
        }
    }

    fn leave(&self, group_id: GroupId, id: SubscriberId) {
        let mut state = self.lock();
        self.remove_member(&mut state, group_id, id);
    }

    /// Publishes events (in order) and moves the cursor to `cursor`, as one
    /// step, so a new subscription sees each event either live or in replay,
    /// never both and never neither.
    pub fn publish(&self, events: &[Arc<Event>], cursor: u64) {
        let mut state = self.lock();
        let mut lagging: HashSet<(GroupId, SubscriberId)> = HashSet::new();
        let mut delivered = 0u64;
        // Groups filed under several terms (an `OR` of equalities) can be
        // reached more than once per event; each is served once.
        let mut served: HashSet<GroupId> = HashSet::new();
        for event in events {
            served.clear();
            if event.kind == EventKind::ForcedLogout
                && let Some(revocation) = Revocation::of_event(&event.data)
            {
                self.inner.revocations.note(&revocation);
            }
            if event.kind.is_collection() {
                let rules = Arc::make_mut(&mut state.rules);
                if event.kind == EventKind::CollectionDeleted {
                    rules.remove(&event.collection);
                } else {
                    rules.insert(event.collection.clone(), Arc::new(Known::of(&event.data)));
                }
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
            // Notices and presence events belong to no collection: every
            // group decides (they are rare).
            if event.kind.is_notice() || event.kind.is_presence() {
                state.groups.keys().copied().for_each(&mut visit);
                continue;
            }
            // Channel messages are of no collection.
            if !event.kind.is_channel()
                && let Some(scope) = state.scopes.get(&None)
            {
                scope.candidates(event, &mut visit);
            }
            if let Some(scope) = state.scopes.get(&Some(event.collection.clone())) {
                scope.candidates(event, &mut visit);
            }
        }
        state.cursor = state.cursor.max(cursor);
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
                if let Some(scope) = state.scopes.get_mut(&topic.scope) {
                    scope.remove(group_id, topic);
                    if scope.is_empty() {
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
    use crate::event::EventId;
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

    fn record_event(index: u32, data: Value) -> Arc<Event> {
        Arc::new(Event::new(
            EventId {
                stamp: 1 << 20,
                index,
            },
            EventKind::RecordCreated,
            Arc::from("c"),
            Some(format!("r{index}")),
            data,
            None,
        ))
    }

    #[test]
    fn checking_a_token_does_not_wait_for_dispatch() {
        let hub = Hub::new(0, RuleBook::new());
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

    #[test]
    fn a_queue_is_bounded_in_bytes() {
        let hub = Hub::new(0, RuleBook::new());
        let big = json!({"blob": "x".repeat(10_000)});
        let limit = QueueLimit {
            events: 1000,
            bytes: 50_000,
        };
        let mut slow = hub.subscribe(Interest::topic(Some(Arc::from("c")), None), limit);
        let mut fast = hub.subscribe(Interest::topic(Some(Arc::from("c")), None), limit);
        let mut received = 0;
        for index in 0..10 {
            hub.publish(&[record_event(index, big.clone())], 2 << 20);
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
        hub.publish(&[record_event(11, huge)], 3 << 20);
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
            let hub = Hub::new(0, RuleBook::new());
            let filter = |n: usize| Some(Arc::new(Filter::parse(FILTERS[n]).unwrap()));
            // One topic on `c`, or a second one on `d` on the same connection.
            let mut subscribers: Vec<(Interest, Subscription)> = chosen
                .iter()
                .map(|&(n, second)| {
                    let mut interest = Interest::topic(Some(Arc::from("c")), filter(n));
                    if let Some(m) = second {
                        interest.topics.push(Topic { scope: Some(Arc::from("d")), filter: filter(m) });
                    }
                    let subscription = hub.subscribe(interest.clone(), QueueLimit { events: 1024, bytes: 1 << 30 });
                    (interest, subscription)
                })
                .collect();
            let events: Vec<Arc<Event>> = events
                .into_iter()
                .enumerate()
                .map(|(index, (data, before, in_d))| {
                    let kind = if before.is_some() { EventKind::RecordUpdated } else { EventKind::RecordCreated };
                    Arc::new(Event::new(
                        EventId { stamp: 1 << 20, index: index as u32 },
                        kind,
                        Arc::from(if in_d { "d" } else { "c" }),
                        Some(format!("r{index}")),
                        data,
                        before,
                    ))
                })
                .collect();
            hub.publish(&events, 2 << 20);
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
