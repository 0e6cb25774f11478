//! One open stream: its subscription, the replay of what its client
//! missed, then live events, heartbeats, and the decisions that end it.
//!
//! A stream subscribes to the hub first and only then replays what the
//! client missed, from its resume id up to the hub's cursor at subscription;
//! live events start at that cursor. So the seam between replay and live has
//! neither a gap nor a duplicate. A snapshot is read after subscribing too
//! (see `snapshot`). The HTTP side (parsing the request, headers) is
//! `routes::realtime`.
//!
//! # Where a new stream starts
//!
//! A stream with no resume id starts when it subscribes, and sends exactly
//! the changes whose writes had not been answered then. The hub's cursor
//! trails commits by a few milliseconds, so the stream drops what lies
//! below the clock's millisecond at subscription (less the settle window),
//! and, inside that millisecond, the events the feed tagged as made by
//! writes this node had already answered (see `store::WriteTracker`).
//! Writes still running then may arrive or not; so may writes answered by
//! another node or another SurrealDB client in that same millisecond (or
//! settle window), which this node cannot tell apart.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use crate::Engine;
use crate::Error;
use crate::access::{collection_access, refusal};
use crate::clock::{Stamp, unix_now};
use crate::collection::CollectionName;
use crate::connections::{Change, Command, Registration, Requester};
use crate::event::{Audience, Delivery, Event, EventId, EventKind, Payload, sse_frame};
use crate::feed::{PageSize, events_of, read_batch};
use crate::filter::{Expr, Filter};
use crate::hub::Queued;
use crate::hub::{Interest, QueueLimit, Reader, Scope, Subscription, Topic, Topics};
use crate::identity::{Caller, claims_of};
use crate::limits::StreamPermit;
use crate::presence::PresenceGuard;
use crate::rulebook::RuleBook;
use crate::rules::{Access, Action, both};
use crate::shape::{Shape, merge_patch};
use crate::store::Unreplayable;

mod changes;

use crate::decide::{judge, replayable};

pub use changes::MAX_TOPICS;
use changes::subscription_ids;
mod snapshot;

pub use snapshot::{First, Snapshot, check_snapshot_size, snapshot_parts};

/// Live events are written in chunks of at most this many.
const EVENTS_PER_CHUNK: usize = 256;
/// Bytes past which a live chunk takes no more events (one large event
/// still goes whole).
const CHUNK_BYTES: usize = 256 * 1024;
/// How often a stream re-reads its collections' rules when they change
/// while it subscribes.
const SUBSCRIBE_ATTEMPTS: usize = 3;

pub use crate::decide::WatchedRules;

/// What a stream asked for.
#[derive(Clone)]
pub struct Plan {
    /// Every collection, with this filter (the stream of every collection
    /// when it names no collection or channel).
    pub all: Option<Option<Expr>>,
    /// Named collections, each with its filter.
    pub collections: Vec<(CollectionName, Option<Expr>)>,
    pub channels: Vec<String>,
}

/// Subscribes to the plan's topics. A named collection's read rule, bound
/// to `caller`, is folded into its topic's filter (so equal callers share a
/// group and its index), and so is a channel's; every collection's rules
/// apply per event through a `Reader`. A rule change committed after
/// subscribing arrives as an event and ends the stream; one committed while
/// subscribing is caught by reading the rules again, and the subscription
/// is made anew.
pub async fn subscribe(
    state: &Engine,
    caller: &Caller,
    plan: &Plan,
    presence: Option<Access>,
) -> Result<(Interest, Subscription, WatchedRules), Error> {
    let claims = claims_of(caller);
    let compiled = |expr: Option<Expr>| expr.map(|expr| Arc::new(Filter::new(expr)));
    let mut topics = Topics::new();
    if let Some(query) = &plan.all {
        topics.push(Topic {
            scope: Scope::AllCollections,
            filter: compiled(query.as_ref().map(|expr| expr.bind(claims))),
        });
    }
    for channel in &plan.channels {
        let read = state.channels.read(channel, caller);
        if read.is_nothing() {
            return Err(refusal(caller, &format!("read channel `{channel}`")));
        }
        topics.push(Topic {
            scope: Scope::Channel(Arc::from(channel.as_str())),
            filter: compiled(read.condition()),
        });
    }
    let reader = match caller {
        Some(identity) if identity.admin => None,
        _ if plan.all.is_some() => Some(Arc::new(Reader::new(caller.clone()))),
        _ => None,
    };
    'attempt: for _ in 0..SUBSCRIBE_ATTEMPTS {
        // The hub's rules, as of its cursor: no database read for the
        // collections it knows. One it does not know yet (created a moment
        // ago) is read from the database.
        let book = state.hub.rules();
        let mut read_from_database = false;
        let mut interest = Interest {
            topics: topics.clone(),
            reader: reader.clone(),
            presence: presence.clone(),
        };
        let mut watched = HashMap::new();
        for (name, filter) in &plan.collections {
            let rules = match book.get(name.as_str()) {
                Some(meta) => Some(meta.rules.clone()),
                None => {
                    read_from_database = true;
                    let meta = state.store.get_collection(name).await?;
                    meta.map(|meta| meta.rules)
                }
            };
            let read = collection_access(rules.as_ref(), name.as_str(), caller, Action::Read)?;
            let filter = filter.as_ref().map(|expr| expr.bind(claims));
            interest.topics.push(Topic {
                scope: Scope::Collection(name.shared()),
                // The rule first: the caller's filter never runs on a
                // record the caller may not read.
                filter: compiled(both(read.condition(), filter)),
            });
            if let Some(rules) = rules {
                watched.insert(name.shared(), rules);
            }
        }
        let (subscription, book_at_start) = state.hub.subscribe_with_rules(
            interest.clone(),
            QueueLimit {
                events: state.streams.buffer_events,
                bytes: state.streams.buffer_bytes,
            },
        );
        // The rules bound must be those in force at the subscription's
        // start: every change after it arrives as an event and ends the
        // stream. One committed while subscribing means binding again.
        for (name, _) in &plan.collections {
            let bound = watched.get(name.as_str());
            let at_start = if read_from_database {
                state
                    .store
                    .get_collection(name)
                    .await?
                    .map(|meta| meta.rules)
            } else if Arc::ptr_eq(&book, &book_at_start) {
                continue;
            } else {
                book_at_start
                    .get(name.as_str())
                    .map(|meta| meta.rules.clone())
            };
            if at_start.as_ref() != bound {
                continue 'attempt;
            }
        }
        return Ok((interest, subscription, watched));
    }
    Err(Error::Conflict(
        "a collection's rules kept changing while the stream opened; retry".into(),
    ))
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending the records that match now, page by page.
    Snapshot,
    /// Replaying changes with stamps in `since..until` from the changefeed.
    Replay { since: Stamp, until: Stamp },
    /// Forwarding live events from the hub.
    Live,
    /// Ended: the next poll finishes the response body.
    Done,
}

/// What a stream was opened with.
pub struct Opened {
    /// The stream's place in presence, if its caller is present.
    pub present: Option<PresenceGuard>,
    pub caller: Caller,
    pub interest: Interest,
    /// What the stream carries, for its `connected` event.
    pub described: serde_json::Value,
    /// The rules each named collection's topic was bound with. A change to
    /// a read rule ends the stream, and the client reconnects under the new
    /// ones.
    pub watched_rules: WatchedRules,
    pub subscription: Subscription,
    pub permit: StreamPermit,
    /// The snapshot to send first, if the stream asked for one. A stream
    /// that resumes skips it, unless it is reset.
    pub snapshot: Option<Snapshot>,
    pub shape: Shape,
    /// Shapes of collections that asked for their own (`fields.<name>`).
    pub shapes: HashMap<Arc<str>, Shape>,
    /// What the stream asked for: its topics change with its subscriptions.
    pub plan: Plan,
}

/// One open stream.
pub struct Session {
    state: Engine,
    caller: Caller,
    interest: Interest,
    watched_rules: WatchedRules,
    /// When the caller's token expires: the stream ends then.
    expires: Option<Instant>,
    /// The timer for `expires`, set once while live: a timer made and
    /// dropped for every chunk would take the timer wheel's lock each time.
    expiry: Option<Pin<Box<Sleep>>>,
    subscription: Subscription,
    /// Held for the stream's life: its place under the stream limits.
    _permit: StreamPermit,
    /// Held for the stream's life: its user stays present.
    _present: Option<PresenceGuard>,
    /// Events at or before this position were already delivered (or skipped
    /// by a reset) and are never sent again.
    after: Option<EventId>,
    phase: Phase,
    /// The first chunk: `retry:`, `connected` and perhaps `reset`.
    hello: Option<Bytes>,
    heartbeat: Interval,
    /// How much each replay read asks for (bounded in bytes).
    page: PageSize,
    snapshot: Option<Snapshot>,
    /// What a record event carries to this stream.
    shape: Shape,
    /// For a stream that began without a resume id: how many writes this
    /// node had answered then. Events they made are not sent.
    answered: Option<u64>,
    /// What the stream carries now (see `changes`).
    plan: Plan,
    /// The shapes of collections added with shapes of their own.
    shapes: HashMap<Arc<str>, Shape>,
    /// Its place among the changeable streams, and who may change it.
    registration: Registration,
    /// Changes asked of this node.
    commands: mpsc::Receiver<Box<Command>>,
    /// Changes asked of other nodes, which reached it through the feed.
    forwarded: VecDeque<(Change, Requester)>,
    /// Events of the subscription a change replaced, still to send.
    pending: VecDeque<Queued>,
}

impl Session {
    pub fn open(state: Engine, opened: Opened, resume: Option<EventId>) -> Session {
        let Opened {
            present,
            caller,
            interest,
            described,
            watched_rules,
            subscription,
            permit,
            snapshot,
            shape,
            shapes,
            plan,
        } = opened;
        let (registration, commands) = state.connections.register(&caller);
        let config = &state.streams;
        let start = subscription.start;
        // The stream begins now, after subscribing. The clock first, then
        // the count: a write answered between the two is counted, and its
        // stamp is not below the cut, so it is skipped by its tag (it was
        // answered before the stream began); read the other way round, one
        // whose stamp fell just below a millisecond boundary would be cut
        // although not counted as answered.
        let now = std::time::SystemTime::now();
        let answered = state.store.writes().acknowledged();
        // `retry:` shares the first message with `connected`: some clients
        // only apply fields of a message that is dispatched.
        let mut hello = BytesMut::new();
        hello.extend_from_slice(format!("retry: {}\n", config.retry.as_millis()).as_bytes());

        let Beginning {
            mut position,
            mut phase,
            reset,
        } = Beginning::of(resume, start, |stamp| state.store.replay_check(stamp));
        let fresh = resume.is_none() || reset.is_some();
        // A resuming stream skips its snapshot: it holds one already.
        let snapshot = snapshot.filter(|_| fresh);
        if snapshot.is_some() {
            // Starts at the subscription: the snapshot is read after it, so
            // changes below it are in the snapshot and those above follow.
            phase = Phase::Snapshot;
        } else if fresh {
            let settled = now.checked_sub(state.streams.settle).unwrap_or(now);
            let cut = Stamp::of_millis(Stamp::at(settled).millis());
            position = position.max(EventId::before_stamp(cut));
        }
        let connection_id = registration.id.clone();
        let mut connected = described;
        connected["connection_id"] = json!(connection_id);
        if let Some(secret) = registration.owner.secret() {
            connected["connection_secret"] = json!(secret);
        }
        connected["subscriptions"] = json!(subscription_ids(&plan, interest.presence.is_some()));
        connected["resumed_after"] =
            json!(resume.filter(|_| reset.is_none()).map(|id| id.to_string()));
        connected["position"] = json!(position.to_string());
        connected["snapshot"] = json!(snapshot.is_some());
        // A snapshot stream's position comes with `snapshot.done`: a
        // reconnect before it has no id, and takes the snapshot again.
        let connected_id = snapshot.is_none().then(|| position.to_string());
        hello.extend_from_slice(&sse_frame(connected_id.as_deref(), "connected", &connected));
        if let Some((stale, reason)) = reset {
            let body = json!({
                "reason": reason.as_str(),
                "message": "the events after this id are not available; reload the current state",
                "last_event_id": stale.to_string(),
            });
            hello.extend_from_slice(&sse_frame(None, "reset", &body));
        }

        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + config.heartbeat, config.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::debug!(%connection_id, "stream opened");
        let expires = caller
            .as_ref()
            .and_then(|identity| identity.expires_at)
            .and_then(|exp| {
                let left = exp.saturating_sub(unix_now());
                // An `exp` too far away to represent never comes.
                Instant::now().checked_add(Duration::from_secs(left))
            });
        Session {
            state,
            caller,
            interest,
            watched_rules,
            expires,
            expiry: None,
            subscription,
            _permit: permit,
            _present: present,
            after: Some(position),
            phase,
            hello: Some(hello.freeze()),
            heartbeat,
            page: PageSize::default(),
            snapshot,
            shape,
            answered: fresh.then_some(answered),
            plan,
            shapes,
            registration,
            commands,
            forwarded: VecDeque::new(),
            pending: VecDeque::new(),
        }
    }

    /// The next chunk of the response body, or `None` to end it.
    ///
    /// Database reads (snapshot and replay pages) and subscription changes
    /// run boxed: their futures are deep, and inline they would make every
    /// idle stream's future as large as the largest of them.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(hello) = self.hello.take() {
            return Some(hello);
        }
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Snapshot => {
                    if self.state.shutdown.is_cancelled() {
                        self.phase = Phase::Done;
                        continue;
                    }
                    if self.expires.is_some_and(|at| at <= Instant::now()) {
                        self.phase = Phase::Done;
                        return Some(expired_frame());
                    }
                    if let Some(chunk) = Box::pin(self.snapshot_page()).await {
                        return Some(chunk);
                    }
                }
                Phase::Replay { since, until } => {
                    if self.state.shutdown.is_cancelled() {
                        self.phase = Phase::Done;
                        continue;
                    }
                    if self.expires.is_some_and(|at| at <= Instant::now()) {
                        self.phase = Phase::Done;
                        return Some(expired_frame());
                    }
                    if let Some(chunk) = Box::pin(self.replay_page(since, until)).await {
                        return Some(chunk);
                    }
                }
                Phase::Live => return self.live_chunk().await,
            }
        }
    }

    /// Reads one page of the snapshot, or ends it with `snapshot.done`;
    /// `None` if the page held nothing.
    async fn snapshot_page(&mut self) -> Option<Bytes> {
        let Some(snapshot) = self.snapshot.as_mut() else {
            self.phase = Phase::Live;
            return None;
        };
        let shape = match snapshot.collection() {
            Some(name) => self.shapes.get(name.as_str()).unwrap_or(&self.shape),
            None => &self.shape,
        };
        let read = snapshot.next_page(&self.state.store, shape);
        let Some(page) = in_turn(&self.state, read).await else {
            self.phase = Phase::Done;
            return None;
        };
        match page {
            Ok(Some(chunk)) => (!chunk.is_empty()).then_some(chunk),
            Ok(None) => {
                let position = self.after.map(|id| id.to_string());
                let done = json!({ "position": position, "records": snapshot.sent });
                self.snapshot = None;
                self.phase = Phase::Live;
                Some(sse_frame(position.as_deref(), "snapshot.done", &done))
            }
            Err(error) => {
                // The client reconnects, with no id yet, and the snapshot
                // starts again.
                tracing::warn!(%error, "snapshot read failed; ending the stream");
                self.phase = Phase::Done;
                None
            }
        }
    }

    fn frame_of(&self, event: &Event, delivery: Delivery, rules: &RuleBook) -> Bytes {
        frame_for(
            self.shape_of(event.collection().map(|name| &**name)),
            &self.interest,
            event,
            delivery,
            rules,
        )
    }

    /// The shape of a collection's records on this stream.
    fn shape_of(&self, collection: Option<&str>) -> &Shape {
        collection
            .and_then(|name| self.shapes.get(name))
            .unwrap_or(&self.shape)
    }

    /// Reads one page of the gap; `None` if it held nothing for this stream.
    async fn replay_page(&mut self, since: Stamp, until: Stamp) -> Option<Bytes> {
        let read = read_batch(&self.state.store, since, until, &self.page);
        let Some(batch) = in_turn(&self.state, read).await else {
            self.phase = Phase::Done;
            return None;
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                // The client reconnects and the replay starts again.
                tracing::warn!(%error, "replay failed; ending the stream");
                self.phase = Phase::Done;
                return None;
            }
        };
        self.phase = if batch.more {
            Phase::Replay {
                since: batch.next_since,
                until,
            }
        } else {
            Phase::Live
        };
        // Replayed events are judged by the rules in force now.
        let rules = self.state.hub.rules();
        let mut chunk = BytesMut::new();
        let entries = batch.sets.iter().map(|set| set.entries).sum();
        let events: Vec<Arc<Event>> = batch.sets.into_iter().flat_map(events_of).collect();
        self.page.observe(entries, &events);
        for event in events {
            if self.after.is_some_and(|after| event.id <= after)
                || !replayable(&self.caller, &rules, &event)
            {
                continue;
            }
            if let Some(delivery) = self.interest.delivery(&event, &rules) {
                chunk.extend_from_slice(&self.frame_of(&event, delivery, &rules));
                self.state.metrics.replayed.inc();
            }
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }

    async fn live_chunk(&mut self) -> Option<Bytes> {
        if let Some(at) = self.expires
            && self.expiry.is_none()
        {
            self.expiry = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        loop {
            // A change forwarded by another node, then the events of a
            // subscription a change replaced, come before anything new.
            if let Some((change, requester)) = self.forwarded.pop_front() {
                if let Some(frame) = Box::pin(self.apply_forwarded(change, &requester)).await {
                    return Some(frame);
                }
                continue;
            }
            if let Some(first) = self.pending.pop_front() {
                match self.take_chunk(first) {
                    Taken::Chunk(chunk) => return Some(chunk),
                    Taken::End => return None,
                    Taken::Nothing => continue,
                }
            }
            // Shutdown comes through the hub, which lets every subscriber
            // go (`Hub::close`): `recv` then ends the stream.
            tokio::select! {
                biased;
                _ = async {
                    match self.expiry.as_mut() {
                        Some(timer) => timer.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.phase = Phase::Done;
                    return Some(expired_frame());
                }
                Some(command) = self.commands.recv() => {
                    let outcome = Box::pin(self.apply(command.change)).await;
                    let frame = outcome.as_ref().ok().map(|(_, frame)| frame.clone());
                    // The client may have gone; the change stands either way.
                    let _ = command.reply.send(outcome.map(|(answer, _)| answer));
                    if let Some(frame) = frame {
                        return Some(frame);
                    }
                }
                event = self.subscription.recv() => {
                    // `None`: the hub dropped this stream because its queue
                    // overflowed; ending it makes the client resume.
                    match self.take_chunk(event?) {
                        Taken::Chunk(chunk) => return Some(chunk),
                        Taken::End => return None,
                        Taken::Nothing => {}
                    }
                }
                _ = self.heartbeat.tick() => {
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
            }
        }
    }

    /// The next queued event: those a change left behind first.
    fn next_queued(&mut self) -> Option<Queued> {
        self.pending
            .pop_front()
            .or_else(|| self.subscription.try_recv())
    }

    /// Frames `first` and the events queued behind it into one chunk.
    fn take_chunk(&mut self, first: Queued) -> Taken {
        let mut chunk = Chunk::default();
        let mut next = Some(first);
        let mut count = 0;
        // One clock read per chunk: its events are sent together.
        let now = time::OffsetDateTime::now_utc();
        // Rules for diffs only, which judge the record before.
        let diffs = self.shape.diff || self.shapes.values().any(|shape| shape.diff);
        let rules = diffs.then(|| self.state.hub.rules());
        let no_rules = RuleBook::new();
        while let Some((event, delivery)) = next {
            // Never send an id twice, even if the feed published it again
            // after a restart. An ephemeral message has no id to repeat.
            let ephemeral = event.is_ephemeral();
            if (ephemeral || self.after.is_none_or(|after| event.id > after))
                && !self
                    .answered
                    .is_some_and(|count| event.answered_before(count))
            {
                if event.kind == EventKind::SubscriptionChange {
                    self.after = Some(event.id);
                    if let Some(forwarded) = self.forwarded_to_me(&event) {
                        self.forwarded.push_back(forwarded);
                        break;
                    }
                    count += 1;
                    next = self.next_queued();
                    continue;
                }
                let verdict = judge(&self.caller, &self.watched_rules, &event);
                if verdict.send {
                    let rules = rules.as_deref().unwrap_or(&no_rules);
                    chunk.push(self.frame_of(&event, delivery, rules));
                    let latency = (now - event.timestamp).as_seconds_f64();
                    self.state.metrics.commit_to_send.observe(latency.max(0.0));
                }
                if !ephemeral {
                    self.after = Some(event.id);
                }
                if verdict.end {
                    // A sign-out, or a rule change: reconnecting binds the
                    // new rules, and the client resumes after this event,
                    // losing nothing.
                    self.phase = Phase::Done;
                    break;
                }
            }
            count += 1;
            // Bounded in bytes too: a chunk is a copy, held until the
            // socket takes it.
            next = if count < EVENTS_PER_CHUNK && chunk.len() < CHUNK_BYTES {
                self.next_queued()
            } else {
                None
            };
        }
        if !chunk.is_empty() {
            return Taken::Chunk(chunk.freeze());
        }
        if matches!(self.phase, Phase::Done) {
            return Taken::End;
        }
        Taken::Nothing
    }
}

/// What one pass over queued events gave.
enum Taken {
    Chunk(Bytes),
    /// The stream ends.
    End,
    Nothing,
}

/// The frame of `event` for a subscriber with `shape` and `interest`: as
/// encoded once for everyone, or projected to its fields, or as a merge
/// patch (`diff=true`) when the subscriber held the record before the
/// change.
pub(crate) fn frame_for(
    shape: &Shape,
    interest: &Interest,
    event: &Event,
    delivery: Delivery,
    rules: &RuleBook,
) -> Bytes {
    if shape.is_whole() || delivery == Delivery::Left || event.kind.audience() != Audience::Record {
        return event.frame(delivery);
    }
    let data = shape.project(&event.data);
    if shape.diff
        && event.kind == EventKind::RecordUpdated
        && let Some(before) = &event.before
        && interest.saw_before(event, rules)
    {
        let patch = merge_patch(&shape.project(before), &data);
        return event.frame_with(Payload::Patch(&patch));
    }
    event.frame_with(Payload::Data(&data))
}

/// The frames of one live chunk. A lone frame goes out as it is, shared
/// with every other stream, not copied; several are copied into one buffer,
/// so the socket takes them in one write.
#[derive(Default)]
struct Chunk {
    first: Option<Bytes>,
    more: BytesMut,
}

impl Chunk {
    fn push(&mut self, frame: Bytes) {
        match self.first.take() {
            None if self.more.is_empty() => self.first = Some(frame),
            first => {
                if let Some(first) = first {
                    self.more.extend_from_slice(&first);
                }
                self.more.extend_from_slice(&frame);
            }
        }
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.more.len(), Bytes::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn freeze(self) -> Bytes {
        self.first.unwrap_or_else(|| self.more.freeze())
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

/// Where a new stream begins: the position its `connected` event carries,
/// its first phase, and the `reset` it gets if its resume id cannot be
/// served.
#[derive(Debug, PartialEq)]
struct Beginning {
    position: EventId,
    phase: Phase,
    reset: Option<(EventId, Unreplayable)>,
}

impl Beginning {
    /// For a stream resuming after `resume` (if any) whose subscription
    /// starts at `start`; `check` says whether the changefeed still holds
    /// everything after a stamp.
    fn of(
        resume: Option<EventId>,
        start: Stamp,
        check: impl FnOnce(Stamp) -> Result<(), Unreplayable>,
    ) -> Beginning {
        let live = |position| Beginning {
            position,
            phase: Phase::Live,
            reset: None,
        };
        let checkpoint = EventId::before_stamp(start);
        match resume {
            None => live(checkpoint),
            Some(id) => match check(id.stamp) {
                Err(reason) => Beginning {
                    reset: Some((id, reason)),
                    ..live(checkpoint)
                },
                Ok(()) if id.stamp >= start => live(id),
                Ok(()) => Beginning {
                    position: id,
                    phase: Phase::Replay {
                        since: id.stamp,
                        until: start,
                    },
                    reset: None,
                },
            },
        }
    }
}

/// The last message of a stream whose token expired. It has no id, so the
/// client's `Last-Event-ID` stays where it was and a reconnect with a fresh
/// token resumes from there.
fn expired_frame() -> Bytes {
    sse_frame(
        None,
        "token.expired",
        &json!({"message": "the token has expired; reconnect with a fresh one to resume"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collection::CollectionMeta;
    use crate::decide::Verdict;
    use crate::event::{Detail, Source};
    use crate::identity::Identity;
    use crate::revocations::SignOut;
    use crate::rules::Rules;
    use serde_json::json;

    fn user(sub: &str, issued_at: Option<u64>, admin: bool) -> Caller {
        Some(Arc::new(Identity {
            user_id: sub.into(),
            name: None,
            admin,
            claims: json!({"sub": sub}),
            expires_at: None,
            issued_at,
        }))
    }

    fn id(millis: u64) -> EventId {
        EventId {
            stamp: Stamp::of_millis(millis),
            index: 0,
        }
    }

    fn meta(read: Option<&str>, created: Option<&str>) -> Arc<CollectionMeta> {
        Arc::new(CollectionMeta {
            created: created.map(str::to_owned),
            description: None,
            name: "posts".into(),
            rules: Rules {
                read: read.map(str::to_owned),
                ..Rules::ADMINS_ONLY
            },
            updated: None,
        })
    }

    fn collection_event(kind: EventKind, meta: Arc<CollectionMeta>) -> Event {
        Event::with_detail(
            id(2_000),
            kind,
            Source::Collection(Arc::from("posts")),
            None,
            json!({}),
            None,
            Detail::Collection(meta),
        )
    }

    fn sign_out_event(user_id: &str, revoked_before: u64) -> Event {
        let sign_out = SignOut {
            user_id: user_id.into(),
            revoked_before,
        };
        Event::with_detail(
            id(2_000),
            EventKind::ForcedLogout,
            Source::Service,
            None,
            json!({}),
            None,
            Detail::SignOut(sign_out),
        )
    }

    fn record_event(millis: u64) -> Event {
        Event::new(
            id(millis),
            EventKind::RecordCreated,
            Source::Collection(Arc::from("posts")),
            Some("r1".into()),
            json!({"id": "r1"}),
            None,
        )
    }

    #[test]
    fn a_lone_frame_is_sent_as_it_is_and_several_are_joined() {
        let frame = Bytes::from_static(b"id: 1\n\n");
        let mut lone = Chunk::default();
        lone.push(frame.clone());
        assert_eq!(lone.len(), frame.len());
        assert_eq!(lone.freeze().as_ptr(), frame.as_ptr(), "not copied");
        let mut several = Chunk::default();
        assert!(several.is_empty());
        for text in ["a", "b", "c"] {
            several.push(Bytes::from(text));
        }
        assert_eq!(several.len(), 3);
        assert_eq!(several.freeze(), "abc");
    }

    #[test]
    fn a_stream_begins_live_replays_the_gap_or_is_reset() {
        let start = Stamp::of_millis(1_000);
        let fresh = Beginning::of(None, start, |_| unreachable!("nothing to check"));
        assert_eq!(fresh.phase, Phase::Live);
        assert_eq!(fresh.position, EventId::before_stamp(start));
        // A resume id behind the start replays the gap up to it.
        let behind = Beginning::of(Some(id(900)), start, |_| Ok(()));
        assert_eq!(
            behind.phase,
            Phase::Replay {
                since: Stamp::of_millis(900),
                until: start
            }
        );
        assert_eq!(behind.position, id(900));
        // One at or past the start (a node that is behind) goes live from it.
        let ahead = Beginning::of(Some(id(1_100)), start, |_| Ok(()));
        assert_eq!((ahead.phase, ahead.position), (Phase::Live, id(1_100)));
        // One the changefeed cannot serve is reset, and starts at the start.
        let expired = Beginning::of(Some(id(5)), start, |_| Err(Unreplayable::Expired));
        assert_eq!(expired.reset, Some((id(5), Unreplayable::Expired)));
        assert_eq!(
            (expired.phase, expired.position),
            (Phase::Live, EventId::before_stamp(start))
        );
    }

    #[test]
    fn a_sign_out_ends_only_the_streams_of_older_tokens_of_its_user() {
        let watched = WatchedRules::new();
        let event = sign_out_event("ann", 100);
        let verdict = |caller: &Caller| judge(caller, &watched, &event);
        let ends = Verdict {
            send: true,
            end: true,
        };
        let ignores = Verdict {
            send: false,
            end: false,
        };
        assert_eq!(verdict(&user("ann", Some(100), false)), ends);
        assert_eq!(verdict(&user("ann", None, false)), ends);
        assert_eq!(verdict(&user("ann", Some(101), false)), ignores);
        assert_eq!(verdict(&user("bob", Some(1), false)), ignores);
        assert_eq!(verdict(&None), ignores);
    }

    #[test]
    fn a_change_to_a_watched_read_rule_ends_the_stream() {
        let mut watched = WatchedRules::new();
        watched.insert(Arc::from("posts"), meta(Some("true"), None).rules.clone());
        let caller = user("ann", None, false);
        let same = collection_event(EventKind::CollectionUpdated, meta(Some("true"), None));
        assert_eq!(
            judge(&caller, &watched, &same),
            Verdict {
                send: true,
                end: false
            }
        );
        // Still readable: shown, then the stream ends to rebind.
        let narrower = collection_event(
            EventKind::CollectionUpdated,
            meta(Some("owner = $auth.sub"), None),
        );
        assert_eq!(
            judge(&caller, &watched, &narrower),
            Verdict {
                send: true,
                end: true
            }
        );
        // Now hidden: not shown, and the stream ends.
        let hidden = collection_event(EventKind::CollectionUpdated, meta(None, None));
        assert_eq!(
            judge(&caller, &watched, &hidden),
            Verdict {
                send: false,
                end: true
            }
        );
        let deleted = collection_event(EventKind::CollectionDeleted, meta(Some("true"), None));
        assert!(judge(&caller, &watched, &deleted).end);
        // A stream that watches no rules (of every collection) goes on.
        assert!(!judge(&caller, &WatchedRules::new(), &hidden).end);
        assert!(!judge(&caller, &watched, &record_event(2_000)).end);
    }

    #[test]
    fn replays_skip_sign_outs_older_collections_and_hidden_collection_events() {
        let ann = user("ann", None, false);
        let mut rules = RuleBook::new();
        // Created at 1_700_000_000_000 ms.
        rules.insert((*meta(Some("true"), Some("2023-11-14T22:13:20.000Z"))).clone());
        assert!(!replayable(&ann, &rules, &sign_out_event("ann", 1)));
        assert!(!replayable(&ann, &rules, &record_event(1_699_999_999_999)));
        assert!(replayable(&ann, &rules, &record_event(1_700_000_000_000)));
        // Admins see the history of a deleted collection too.
        let admin = user("root", None, true);
        assert!(replayable(&admin, &rules, &record_event(1_699_999_999_999)));
        // A collection event from a time the caller could not read it.
        let then_hidden = collection_event(EventKind::CollectionUpdated, meta(None, None));
        let mut rules_now = RuleBook::new();
        rules_now.insert((*meta(Some("true"), None)).clone());
        assert!(!replayable(&ann, &rules_now, &then_hidden));
        let then_open = collection_event(EventKind::CollectionUpdated, meta(Some("true"), None));
        assert!(replayable(&ann, &rules_now, &then_open));
    }
}
