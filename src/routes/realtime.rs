//! `/api/v1/realtime[/{collection}]`: Server-Sent Events streams.
//!
//! A stream subscribes to the hub first and only then replays what the
//! client missed, from its resume id up to the hub's cursor at subscription;
//! live events start at that cursor. So the seam between replay and live has
//! neither a gap nor a duplicate.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use super::collections::collection_access;
use super::extract::{redeem_ticket, refuse_revoked};
use super::presence::{presence_access, present_as};
use super::{Client, PathParams, QueryParams};
use crate::AppState;
use crate::auth::{Caller, claims_of, unix_now};
use crate::channels::validate_channel;
use crate::error::ApiError;
use crate::event::{Event, EventId, EventKind, channel_key, sse_frame};
use crate::feed::{PageSize, events_of, read_batch};
use crate::filter::{Expr, Filter};
use crate::hub::{Hub, Interest, QueueLimit, Reader, Subscription, Topic};
use crate::limits::StreamPermit;
use crate::metrics::Metrics;
use crate::presence::PresenceGuard;
use crate::revocations::Revocation;
use crate::rules::{Access, Action, Rules, both, refusal};
use crate::store::{Store, validate_name};

/// Query of the stream routes. Unknown parameters are ignored.
#[derive(Deserialize, Default)]
pub struct StreamParams {
    /// A filter expression for record events.
    query: Option<String>,
    /// Resume after this event id (for a first connection, which cannot set
    /// the `Last-Event-ID` header).
    last_event_id: Option<String>,
    /// Collections to stream, comma-separated (each may have a
    /// `filter.<name>=`); with `channels`, one connection carries several
    /// subscriptions.
    collections: Option<String>,
    /// Channels to stream, comma-separated.
    channels: Option<String>,
    /// Whether to receive `user.joined` and `user.left` (default: on the
    /// stream of every collection, off on a collection's).
    pub presence: Option<bool>,
    /// Who this stream is present as, instead of the token's user (admins,
    /// or anonymous clients with `--anonymous-presence`).
    pub user_id: Option<String>,
    pub user_name: Option<String>,
}

/// Live events are written in chunks of at most this many.
const EVENTS_PER_CHUNK: usize = 256;
/// Bytes past which a live chunk takes no more events (one large event
/// still goes whole).
const CHUNK_BYTES: usize = 256 * 1024;

pub async fn stream_all(
    State(state): State<AppState>,
    client: Client,
    QueryParams(params): QueryParams<StreamParams>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open_stream(state, client, None, params, raw, &headers).await
}

pub async fn stream_collection(
    State(state): State<AppState>,
    client: Client,
    PathParams(name): PathParams<String>,
    QueryParams(params): QueryParams<StreamParams>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open_stream(state, client, Some(name), params, raw, &headers).await
}

/// The stream of a collection named `tickets`, whose path is also the
/// ticket route's.
pub async fn stream_tickets_collection(
    State(state): State<AppState>,
    client: Client,
    QueryParams(params): QueryParams<StreamParams>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open_stream(state, client, Some("tickets".into()), params, raw, &headers).await
}

/// How often a stream re-reads its collections' rules when they change
/// while it subscribes.
const SUBSCRIBE_ATTEMPTS: usize = 3;
/// Most topics (collections and channels) on one connection.
const MAX_TOPICS: usize = 32;

/// What a stream asked for.
struct Plan {
    /// Every collection, with this filter (the stream of every collection
    /// when it names no collection or channel).
    all: Option<Option<Expr>>,
    /// Named collections, each with its filter.
    collections: Vec<(String, Option<Expr>)>,
    channels: Vec<String>,
}

impl Plan {
    /// From the route's collection (if any) and the query: `collections=`
    /// and `channels=` (comma-separated) name topics; `filter.<collection>=`
    /// filters a named collection; `query=` filters the route's collection,
    /// or every collection.
    fn new(
        route: Option<String>,
        params: &StreamParams,
        raw_query: Option<&str>,
        query: Option<Filter>,
    ) -> Result<Plan, ApiError> {
        let list = |text: &Option<String>| -> Vec<String> {
            text.iter()
                .flat_map(|text| text.split(','))
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut names = list(&params.collections);
        let mut channels = list(&params.channels);
        let mut seen = std::collections::HashSet::new();
        channels.retain(|channel| seen.insert(channel.clone()));
        for channel in &channels {
            validate_channel(channel)?;
        }
        // `filter.<collection>=<filter>`, read from the raw query.
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw_query.unwrap_or("")).unwrap_or_default();
        let mut filters = std::collections::HashMap::new();
        for (key, text) in pairs {
            if let Some(name) = key.strip_prefix("filter.") {
                if filters.contains_key(name) {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        format!("`filter.{name}` is given twice"),
                    ));
                }
                let filter = Filter::parse(&text).map_err(|error| ApiError::InvalidFilter {
                    message: format!("`filter.{name}`: {}", error.message),
                    column: error.column,
                })?;
                filters.insert(name.to_owned(), filter);
            }
        }
        let query = query.map(|filter| filter.expr().clone());
        if let Some(name) = route {
            names.insert(0, name);
            names.dedup();
            if names.len() > 1 {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "a collection's stream carries that collection only: use /api/v1/realtime?collections=a,b",
                ));
            }
        }
        let all = (names.is_empty() && channels.is_empty()).then(|| query.clone());
        let mut collections = Vec::new();
        for name in names {
            validate_name(&name)?;
            if collections.iter().any(|(other, _)| *other == name) {
                continue;
            }
            let filter = match filters.remove(&name) {
                Some(filter) => Some(filter.expr().clone()),
                None => query.clone(),
            };
            collections.push((name, filter));
        }
        if let Some(name) = filters.keys().next() {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`filter.{name}` names a collection this stream does not subscribe to"),
            ));
        }
        if collections.len() + channels.len() > MAX_TOPICS {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("at most {MAX_TOPICS} collections and channels on one stream"),
            ));
        }
        Ok(Plan {
            all,
            collections,
            channels,
        })
    }
}

async fn open_stream(
    state: AppState,
    Client { caller, ip, ticket }: Client,
    route: Option<String>,
    params: StreamParams,
    raw_query: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // Parsed untrimmed (the grammar allows white space), so error columns
    // count from the first character the client sent.
    let query = match params.query.as_deref() {
        Some(text) if !text.trim().is_empty() => Some(Filter::parse(text)?),
        _ => None,
    };
    let resume = resume_id(headers, params.last_event_id.as_deref())?;
    let single = route.clone();
    let plan = Plan::new(route, &params, raw_query.as_deref(), query)?;
    let caller = match ticket {
        Some(ticket) => Some(Arc::new(redeem_ticket(&state, &ticket).await?)),
        None => caller,
    };
    let present_as = present_as(&state, &caller, &params)?;
    let presence = match params.presence {
        Some(true) => Some(presence_access(&state, &caller)?),
        Some(false) => None,
        // By default on the stream of every collection, if allowed.
        None if plan.all.is_some() => presence_access(&state, &caller).ok(),
        None => None,
    };
    let permit = state.limits.admit(
        caller.as_ref().map(|identity| identity.user_id.as_str()),
        ip,
    )?;
    let described = json!({
        "collection": single,
        "collections": plan.collections.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        "channels": plan.channels,
        "query": plan.all.clone().flatten().or_else(|| {
            (plan.collections.len() == 1).then(|| plan.collections[0].1.clone()).flatten()
        }).map(|expr| expr.bind(claims_of(&caller)).to_string()),
    });
    let (interest, subscription, watched_rules) =
        subscribe(&state, &caller, &plan, presence).await?;
    // A sign-out published while this stream was being set up is behind its
    // start, so it would never reach it: check again now that it is
    // subscribed (the hub notes sign-outs as it passes them).
    if let Some(identity) = &caller {
        refuse_revoked(&state, identity)?;
    }
    // Counted once the stream is open; dropped with it.
    let present = present_as.map(|user| state.presence.connect(user));
    let session = Session::open(
        &state,
        Opened {
            present,
            caller,
            interest,
            described,
            watched_rules,
            subscription,
            permit,
        },
        resume,
    );
    let body = Body::from_stream(futures::stream::unfold(session, |mut session| async move {
        let chunk = session.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), session))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Subscribes to the plan's topics. A named collection's read rule, bound
/// to `caller`, is folded into its topic's filter (so equal callers share a
/// group and its index), and so is a channel's; every collection's rules
/// apply per event through a `Reader`. A rule change committed after
/// subscribing arrives as an event and ends the stream; one committed while
/// subscribing is caught by reading the rules again, and the subscription
/// is made anew.
async fn subscribe(
    state: &AppState,
    caller: &Caller,
    plan: &Plan,
    presence: Option<Access>,
) -> Result<(Interest, Subscription, HashMap<Arc<str>, Rules>), ApiError> {
    let claims = claims_of(caller);
    let compiled = |expr: Option<Expr>| expr.map(|expr| Arc::new(Filter::new(expr)));
    let mut topics = Vec::new();
    if let Some(query) = &plan.all {
        topics.push(Topic {
            scope: None,
            filter: compiled(query.as_ref().map(|expr| expr.bind(claims))),
        });
    }
    for channel in &plan.channels {
        let read = state.channels.read(channel, caller);
        if read.is_nothing() {
            return Err(refusal(caller, &format!("read channel `{channel}`")));
        }
        topics.push(Topic {
            scope: Some(channel_key(channel)),
            filter: compiled(read.condition()),
        });
    }
    let reader = match caller {
        Some(identity) if identity.admin => None,
        _ if plan.all.is_some() => Some(Arc::new(Reader::new(caller.clone()))),
        _ => None,
    };
    'attempt: for _ in 0..SUBSCRIBE_ATTEMPTS {
        let mut interest = Interest {
            topics: topics.clone(),
            reader: reader.clone(),
            presence: presence.clone(),
        };
        let mut watched = HashMap::new();
        for (name, filter) in &plan.collections {
            let (_, rules, read) = collection_access(state, caller, name, Action::Read).await?;
            let filter = filter.as_ref().map(|expr| expr.bind(claims));
            interest.topics.push(Topic {
                scope: Some(Arc::from(name.as_str())),
                // The rule first: the caller's filter never runs on a
                // record the caller may not read.
                filter: compiled(both(read.condition(), filter)),
            });
            watched.insert(Arc::from(name.as_str()), rules);
        }
        let subscription = state.hub.subscribe(
            interest.clone(),
            QueueLimit {
                events: state.config.stream_buffer,
                bytes: usize::try_from(state.config.stream_buffer_bytes).unwrap_or(usize::MAX),
            },
        );
        for (name, rules) in &watched {
            let now = state.store.get_collection(name).await?;
            if now.as_ref().map(Rules::of_collection).as_ref() != Some(rules) {
                continue 'attempt;
            }
        }
        return Ok((interest, subscription, watched));
    }
    Err(ApiError::Conflict(
        "a collection's rules kept changing while the stream opened; retry".into(),
    ))
}

/// The id to resume after: the `Last-Event-ID` header (sent by a browser
/// when it reconnects, so it is the freshest) or else `?last_event_id=`.
fn resume_id(headers: &HeaderMap, query: Option<&str>) -> Result<Option<EventId>, ApiError> {
    let header = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("invalid_event_id", "`Last-Event-ID` is not valid text")
        })?),
        None => None,
    };
    // Both are checked, so a malformed id is a 400 wherever it is sent; an
    // empty one means "no id yet" (as browsers send it), not "reset".
    let parse = |text: Option<&str>| -> Result<Option<EventId>, ApiError> {
        match text.map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|error: crate::event::InvalidEventId| {
                    ApiError::bad_request("invalid_event_id", error.to_string())
                }),
        }
    };
    let (header, query) = (parse(header)?, parse(query)?);
    Ok(header.or(query))
}

/// Where a stream is in its life.
enum Phase {
    /// Replaying changes with stamps in `since..until` from the changefeed.
    Replay { since: u64, until: u64 },
    /// Forwarding live events from the hub.
    Live,
    /// Ended: the next poll finishes the response body.
    Done,
}

/// What a stream was opened with.
struct Opened {
    /// The stream's place in presence, if its caller is present.
    present: Option<PresenceGuard>,
    caller: Caller,
    interest: Interest,
    /// What the stream carries, for its `connected` event.
    described: serde_json::Value,
    /// The rules each named collection's topic was bound with. A change to
    /// a read rule ends the stream, and the client reconnects under the new
    /// ones.
    watched_rules: HashMap<Arc<str>, Rules>,
    subscription: Subscription,
    permit: StreamPermit,
}

/// One open stream.
struct Session {
    caller: Caller,
    interest: Interest,
    watched_rules: HashMap<Arc<str>, Rules>,
    /// When the caller's token expires: the stream ends then.
    expires: Option<Instant>,
    subscription: Subscription,
    /// Held for the stream's life: its place under the stream limits.
    _permit: StreamPermit,
    /// Held for the stream's life: its user stays present.
    _present: Option<PresenceGuard>,
    store: Store,
    /// Events at or before this position were already delivered (or skipped
    /// by a reset) and are never sent again.
    after: Option<EventId>,
    phase: Phase,
    /// The first chunk: `retry:`, `connected` and perhaps `reset`.
    hello: Option<Bytes>,
    heartbeat: Interval,
    shutdown: CancellationToken,
    replays: Arc<tokio::sync::Semaphore>,
    /// How much each replay read asks for (bounded in bytes).
    page: PageSize,
    hub: Hub,
    metrics: Arc<Metrics>,
}

impl Session {
    fn open(state: &AppState, opened: Opened, resume: Option<EventId>) -> Session {
        let Opened {
            present,
            caller,
            interest,
            described,
            watched_rules,
            subscription,
            permit,
        } = opened;
        let config = &state.config;
        let start = subscription.start;
        let checkpoint = EventId::before_stamp(start);
        // `retry:` shares the first message with `connected`: some clients
        // only apply fields of a message that is dispatched.
        let mut hello = BytesMut::new();
        hello.extend_from_slice(format!("retry: {}\n", config.retry.as_millis()).as_bytes());

        let mut reset = None;
        let (position, phase) = match resume {
            None => (checkpoint, Phase::Live),
            Some(id) if let Err(reason) = state.store.replay_check(id.stamp) => {
                reset = Some((id, reason));
                (checkpoint, Phase::Live)
            }
            Some(id) if id.stamp >= start => (id, Phase::Live),
            Some(id) => (
                id,
                Phase::Replay {
                    since: id.stamp,
                    until: start,
                },
            ),
        };
        let connection_id = format!("{:016x}", rand::random::<u64>());
        let mut connected = described;
        connected["connection_id"] = json!(connection_id);
        connected["resumed_after"] =
            json!(resume.filter(|_| reset.is_none()).map(|id| id.to_string()));
        hello.extend_from_slice(&sse_frame(
            Some(&position.to_string()),
            "connected",
            &connected,
        ));
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
            caller,
            interest,
            watched_rules,
            expires,
            subscription,
            _permit: permit,
            _present: present,
            store: state.store.clone(),
            after: Some(position),
            phase,
            hello: Some(hello.freeze()),
            heartbeat,
            shutdown: state.shutdown.clone(),
            replays: state.replays.clone(),
            page: PageSize::default(),
            hub: state.hub.clone(),
            metrics: state.metrics.clone(),
        }
    }

    /// The next chunk of the response body, or `None` to end it.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(hello) = self.hello.take() {
            return Some(hello);
        }
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Replay { since, until } => {
                    if self.shutdown.is_cancelled() {
                        self.phase = Phase::Done;
                        continue;
                    }
                    if self.expires.is_some_and(|at| at <= Instant::now()) {
                        self.phase = Phase::Done;
                        return Some(expired_frame());
                    }
                    if let Some(chunk) = self.replay_page(since, until).await {
                        return Some(chunk);
                    }
                }
                Phase::Live => return self.live_chunk().await,
            }
        }
    }

    /// Reads one page of the gap; `None` if it held nothing for this stream.
    async fn replay_page(&mut self, since: u64, until: u64) -> Option<Bytes> {
        let read = async {
            // Held for one read, so long replays take turns with short ones.
            let _permit = self.replays.acquire().await;
            read_batch(&self.store, since, until, &self.page).await
        };
        let batch = tokio::select! {
            _ = self.shutdown.cancelled() => {
                self.phase = Phase::Done;
                return None;
            }
            batch = read => batch,
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
        let rules = self.hub.rules();
        let mut chunk = BytesMut::new();
        let entries = batch.sets.iter().map(|set| set.entries).sum();
        let events: Vec<Arc<Event>> = batch.sets.into_iter().flat_map(events_of).collect();
        self.page.observe(entries, &events);
        for event in events {
            if self.after.is_some_and(|after| event.id <= after) {
                continue;
            }
            // A sign-out is news only while it happens: a stream resuming
            // now was opened with a token that passed it.
            if event.kind == EventKind::ForcedLogout {
                continue;
            }
            // The history of a deleted collection is not replayed under the
            // rules of a new one with the same name (admins see it all).
            if !self.caller.as_ref().is_some_and(|identity| identity.admin)
                && rules
                    .get(&event.collection)
                    .is_some_and(|known| known.predates(&event))
            {
                continue;
            }
            // A collection event carries the collection's rules as they were
            // then: one from a time this caller could not read the
            // collection is not replayed to it (a named collection's topic
            // holds its read rule in its filter, which collection events
            // skip).
            if event.kind.is_collection()
                && Rules::of_collection(&event.data)
                    .access(Action::Read, &self.caller)
                    .is_nothing()
            {
                continue;
            }
            if let Some(delivery) = self.interest.delivery(&event, &rules) {
                chunk.extend_from_slice(&event.frame(delivery));
                self.metrics.replayed.inc();
            }
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }

    async fn live_chunk(&mut self) -> Option<Bytes> {
        let expires = self.expires;
        let expiry = async move {
            match expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.phase = Phase::Done;
                    return None;
                }
                _ = &mut expiry => {
                    self.phase = Phase::Done;
                    return Some(expired_frame());
                }
                event = self.subscription.recv() => {
                    // `None`: the hub dropped this stream because its queue
                    // overflowed; ending it makes the client resume.
                    let queued = event?;
                    let mut chunk = BytesMut::new();
                    let mut next = Some(queued);
                    let mut count = 0;
                    // One clock read per chunk: its events are sent together.
                    let now = time::OffsetDateTime::now_utc();
                    while let Some((event, delivery)) = next {
                        // Never send an id twice, even if the feed published
                        // it again after a restart.
                        if self.after.is_none_or(|after| event.id > after) {
                            let (send, end) = self.judge(&event);
                            if send {
                                chunk.extend_from_slice(&event.frame(delivery));
                                let latency = (now - event.timestamp).as_seconds_f64();
                                self.metrics.commit_to_send.observe(latency.max(0.0));
                            }
                            self.after = Some(event.id);
                            if end {
                                // A sign-out, or a rule change: reconnecting
                                // binds the new rules, and the client resumes
                                // after this event, losing nothing.
                                self.phase = Phase::Done;
                                break;
                            }
                        }
                        count += 1;
                        // Bounded in bytes too: a chunk is a copy, held until
                        // the socket takes it.
                        next = if count < EVENTS_PER_CHUNK && chunk.len() < CHUNK_BYTES {
                            self.subscription.try_recv()
                        } else {
                            None
                        };
                    }
                    if !chunk.is_empty() {
                        return Some(chunk.freeze());
                    }
                    if matches!(self.phase, Phase::Done) {
                        return None;
                    }
                }
                _ = self.heartbeat.tick() => {
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
            }
        }
    }

    /// For a live event the hub delivered: whether to send it, and whether
    /// the stream ends after it.
    fn judge(&self, event: &Event) -> (bool, bool) {
        if event.kind == EventKind::ForcedLogout {
            // Only the signed-out user's streams show it, and end.
            let ours = self.signed_out_by(event);
            return (ours, ours);
        }
        match self.rules_change(event) {
            None => (true, false),
            Some(Visibility::Shown) => (true, true),
            Some(Visibility::Hidden) => (false, true),
        }
    }

    /// Whether `event` (a `forced_logout`) signs this stream's user out: its
    /// user, with a token issued at or before the sign-out.
    fn signed_out_by(&self, event: &Event) -> bool {
        let Some(revocation) = Revocation::of_event(&event.data) else {
            return false;
        };
        self.caller
            .as_ref()
            .is_some_and(|identity| revocation.refuses(&identity.user_id, identity.issued_at))
    }

    /// Whether `event` changes the read rule a named collection's topic was
    /// opened with (or deletes the collection), and if so whether the event
    /// itself may still be shown.
    fn rules_change(&self, event: &Event) -> Option<Visibility> {
        // Checked first: record events are most of the traffic.
        if !event.kind.is_collection() {
            return None;
        }
        let watched = self.watched_rules.get(&event.collection)?;
        match event.kind {
            EventKind::CollectionDeleted => Some(Visibility::Shown),
            EventKind::CollectionUpdated => {
                let rules = Rules::of_collection(&event.data);
                if rules.read == watched.read {
                    return None;
                }
                Some(if rules.access(Action::Read, &self.caller).is_nothing() {
                    Visibility::Hidden
                } else {
                    Visibility::Shown
                })
            }
            _ => None,
        }
    }
}

/// Whether an event that ends a stream is sent before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visibility {
    Shown,
    Hidden,
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
