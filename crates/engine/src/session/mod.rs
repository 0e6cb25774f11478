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

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use crate::Engine;
use crate::clock::{Stamp, unix_now};
use crate::connections::{Change, Command, Registration, Requester};
pub(crate) use crate::decide::WatchedRules;
use crate::event::{Delivery, Event, EventId, sse_frame};
use crate::frame::frame_for;
use crate::hub::{Interest, Queued, Subscription};
use crate::identity::Caller;
use crate::limits::StreamPermit;
use crate::presence::PresenceGuard;
use crate::replay::{ChangeReader, Replay, in_turn};
use crate::rulebook::RuleBook;
use crate::shape::Shapes;
use crate::store::{Store, Unreplayable};

mod changes;
mod live;
mod snapshot;
mod subscribe;
mod views;

pub use snapshot::{First, Part, Snapshot, check_snapshot_size, snapshot_parts};
pub use subscribe::{Plan, Subscribed, subscribe};
pub use views::{BoundSub, CollectionSub, Views, view_name};

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
    /// Its collection subscriptions, bound (see `views`).
    pub views: Views,
    pub permit: StreamPermit,
    /// The snapshot to send first, if the stream asked for one. A stream
    /// that resumes skips it, unless it is reset.
    pub snapshot: Option<Snapshot>,
    pub shapes: Shapes,
    /// What the stream asked for: its topics change with its subscriptions.
    pub plan: Plan,
}

/// One open stream.
pub struct Session {
    state: Engine,
    caller: Caller,
    interest: Interest,
    watched_rules: WatchedRules,
    expiry: Expiry,
    subscription: Subscription,
    views: Views,
    /// Held for the stream's life: its place under the stream limits, and
    /// its user's in presence.
    _held: (StreamPermit, Option<PresenceGuard>),
    /// Events at or before this position were already delivered (or skipped
    /// by a reset) and are never sent again.
    after: Option<EventId>,
    phase: Phase,
    /// The first chunk: `retry:`, `connected` and perhaps `reset`.
    hello: Option<Bytes>,
    heartbeat: Interval,
    /// Reads the gap of a resuming stream.
    reader: ChangeReader,
    snapshot: Option<Snapshot>,
    /// What a record event carries to this stream.
    shapes: Shapes,
    /// For a stream that began without a resume id: how many writes this
    /// node had answered then. Events they made are not sent.
    answered: Option<u64>,
    /// What the stream carries now (see `changes`).
    plan: Plan,
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
    pub fn open(state: Engine, opened: Opened, resume: Resume) -> Session {
        let Opened {
            present,
            caller,
            interest,
            described,
            watched_rules,
            subscription,
            views,
            permit,
            snapshot,
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
        } = Beginning::of(resume, start);
        let fresh = resume.holds_nothing();
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
        connected["subscriptions"] = json!(plan.subscription_ids(interest.presence.is_some()));
        let resumed_after = match resume {
            Resume::After(id) => Some(id.to_string()),
            Resume::Fresh | Resume::Unservable(..) => None,
        };
        connected["resumed_after"] = json!(resumed_after);
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
        Session {
            state,
            expiry: Expiry::of(&caller),
            caller,
            interest,
            watched_rules,
            subscription,
            views,
            _held: (permit, present),
            after: Some(position),
            phase,
            hello: Some(hello.freeze()),
            heartbeat,
            reader: ChangeReader::default(),
            snapshot,
            shapes,
            answered: fresh.then_some(answered),
            plan,
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
            let read = match self.phase {
                Phase::Done => return None,
                Phase::Live => return self.live_chunk().await,
                Phase::Snapshot | Phase::Replay { .. } if self.state.shutdown.is_cancelled() => {
                    self.phase = Phase::Done;
                    return Some(self.leaving_frame());
                }
                Phase::Snapshot | Phase::Replay { .. } if self.expiry.passed() => {
                    self.phase = Phase::Done;
                    return Some(expired_frame());
                }
                Phase::Snapshot => Box::pin(self.snapshot_page()).await,
                Phase::Replay { since, until } => Box::pin(self.replay_page(since, until)).await,
            };
            if let Some(chunk) = read {
                return Some(chunk);
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
        let shape = self.shapes.of(snapshot.key());
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

    /// What this stream is sent of an event the hub (or a replay) gave it
    /// as `delivery`: one frame, or, for a collection with views, one per
    /// subscription the event reaches, each judged on its own.
    fn frame_of(&self, event: &Event, delivery: Delivery, rules: &RuleBook) -> Bytes {
        if let Some(subs) = self.views.split(event) {
            let mut frames = BytesMut::new();
            for sub in subs {
                if let Some(delivery) = sub.delivery(event) {
                    let shape = self.shapes.of(Some(&sub.key));
                    frames.extend_from_slice(&sub.frame(shape, event, delivery));
                }
            }
            return frames.freeze();
        }
        let shape = self.shapes.of(event.collection().map(|name| &**name));
        frame_for(shape, &self.interest, event, delivery, rules)
    }

    /// Reads one page of the gap; `None` if it held nothing for this stream.
    async fn replay_page(&mut self, since: Stamp, until: Stamp) -> Option<Bytes> {
        let replay = Replay {
            state: &self.state,
            caller: &self.caller,
            interest: &self.interest,
        };
        let after = self.after.unwrap_or(EventId::before_stamp(since));
        let replayed = match replay.read(&mut self.reader, since, until, after).await {
            Ok(replayed) => replayed,
            Err(error) => {
                // The client reconnects and the replay starts again.
                if !self.state.shutdown.is_cancelled() {
                    tracing::warn!(%error, "replay failed; ending the stream");
                }
                self.phase = Phase::Done;
                return None;
            }
        };
        self.phase = match replayed.next {
            Some(since) => Phase::Replay { since, until },
            None => Phase::Live,
        };
        let mut chunk = BytesMut::new();
        for (event, delivery) in &replayed.events {
            chunk.extend_from_slice(&self.frame_of(event, *delivery, &replayed.rules));
            self.state.metrics.replayed.inc();
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }
}

/// When the caller's token expires: the stream ends then.
struct Expiry {
    at: Option<Instant>,
    /// The timer for `at`, made once, when the stream goes live: a timer
    /// made and dropped for every chunk would take the timer wheel's lock
    /// each time.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Expiry {
    fn of(caller: &Caller) -> Expiry {
        let at = caller
            .as_ref()
            .and_then(|identity| identity.expires_at)
            .and_then(|exp| {
                let left = exp.saturating_sub(unix_now());
                // An `exp` too far away to represent never comes.
                Instant::now().checked_add(Duration::from_secs(left))
            });
        Expiry { at, timer: None }
    }

    fn passed(&self) -> bool {
        self.at.is_some_and(|at| at <= Instant::now())
    }

    /// Resolves when the token expires; never, for one that does not.
    async fn wait(&mut self) {
        match self.at {
            Some(at) => {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                timer.as_mut().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Where a stream's client says it is, checked against the changefeed once
/// (the route's snapshot decision and the stream's beginning agree).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resume {
    /// Nowhere yet: a first connection.
    Fresh,
    /// After this event, and the changefeed still holds what followed it.
    After(EventId),
    /// After this event, but what followed it is gone: the stream is reset.
    Unservable(EventId, Unreplayable),
}

impl Resume {
    /// Checks the resume id a client sent (if any) against the changefeed.
    pub fn check(store: &Store, id: Option<EventId>) -> Resume {
        match id {
            None => Resume::Fresh,
            Some(id) => match store.replay_check(id.stamp) {
                Ok(()) => Resume::After(id),
                Err(reason) => Resume::Unservable(id, reason),
            },
        }
    }

    /// Whether the client holds nothing it can build on: it needs the
    /// current state (a snapshot, if it asked for one).
    pub fn holds_nothing(&self) -> bool {
        !matches!(self, Resume::After(_))
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
    /// For a stream resuming as `resume` says whose subscription starts at
    /// `start`.
    fn of(resume: Resume, start: Stamp) -> Beginning {
        let live = |position| Beginning {
            position,
            phase: Phase::Live,
            reset: None,
        };
        let checkpoint = EventId::before_stamp(start);
        match resume {
            Resume::Fresh => live(checkpoint),
            Resume::Unservable(id, reason) => Beginning {
                reset: Some((id, reason)),
                ..live(checkpoint)
            },
            Resume::After(id) if id.stamp >= start => live(id),
            Resume::After(id) => Beginning {
                position: id,
                phase: Phase::Replay {
                    since: id.stamp,
                    until: start,
                },
                reset: None,
            },
        }
    }
}

/// The longest a stream is told to wait before reconnecting when its
/// node shuts down: soon, and spread, so that the streams of a node do not
/// all reach the others at once.
const LEAVING_SPREAD: Duration = Duration::from_secs(1);

impl Session {
    /// The last message of a stream whose node is shutting down: a
    /// `node.leaving` event, with no `id:` (the client's last event id
    /// stays where it was), and a `retry:` of a random delay up to the
    /// smaller of `--retry` and [`LEAVING_SPREAD`], which an `EventSource`
    /// waits before reconnecting (to another node, behind a balancer).
    fn leaving_frame(&self) -> Bytes {
        let spread = self.state.streams.retry.min(LEAVING_SPREAD).as_millis() as u64;
        let delay = rand::random::<u64>() % (spread + 1);
        let mut frame = BytesMut::from(format!("retry: {delay}\n").as_bytes());
        frame.extend_from_slice(&sse_frame(
            None,
            "node.leaving",
            &json!({
                "message": "this node is shutting down; reconnect to resume",
                "reconnect_in_ms": delay,
            }),
        ));
        frame.freeze()
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

    fn id(millis: u64) -> EventId {
        EventId {
            stamp: Stamp::of_millis(millis),
            index: 0,
        }
    }

    #[test]
    fn a_stream_begins_live_replays_the_gap_or_is_reset() {
        let start = Stamp::of_millis(1_000);
        let fresh = Beginning::of(Resume::Fresh, start);
        assert_eq!(fresh.phase, Phase::Live);
        assert_eq!(fresh.position, EventId::before_stamp(start));
        // A resume id behind the start replays the gap up to it.
        let behind = Beginning::of(Resume::After(id(900)), start);
        assert_eq!(
            behind.phase,
            Phase::Replay {
                since: Stamp::of_millis(900),
                until: start
            }
        );
        assert_eq!(behind.position, id(900));
        // One at or past the start (a node that is behind) goes live from it.
        let ahead = Beginning::of(Resume::After(id(1_100)), start);
        assert_eq!((ahead.phase, ahead.position), (Phase::Live, id(1_100)));
        // One the changefeed cannot serve is reset, and starts at the start.
        let expired = Beginning::of(Resume::Unservable(id(5), Unreplayable::Expired), start);
        assert_eq!(expired.reset, Some((id(5), Unreplayable::Expired)));
        assert_eq!(
            (expired.phase, expired.position),
            (Phase::Live, EventId::before_stamp(start))
        );
    }
}
