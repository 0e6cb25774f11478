//! `/api/v1/realtime[/{collection}]`: Server-Sent Events streams.
//!
//! A stream subscribes to the hub first and only then replays what the
//! client missed, from its resume id up to the hub's cursor at subscription;
//! live events start at that cursor. So the seam between replay and live has
//! neither a gap nor a duplicate.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{PathParams, QueryParams};
use crate::AppState;
use crate::error::ApiError;
use crate::event::{EventId, sse_frame};
use crate::feed::{events_of, read_batch};
use crate::filter::Filter;
use crate::hub::{Interest, Subscription};
use crate::store::{Store, validate_name};

/// Query of the stream routes. Unknown parameters are ignored.
#[derive(Deserialize, Default)]
pub struct StreamParams {
    /// A filter expression for record events.
    query: Option<String>,
    /// Resume after this event id (for a first connection, which cannot set
    /// the `Last-Event-ID` header).
    last_event_id: Option<String>,
}

/// Live events are written in chunks of at most this many.
const EVENTS_PER_CHUNK: usize = 256;

pub async fn stream_all(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<StreamParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    open_stream(state, None, params, &headers).await
}

pub async fn stream_collection(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
    QueryParams(params): QueryParams<StreamParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate_name(&name)?;
    if state.store.get_collection(&name).await?.is_none() {
        return Err(ApiError::NotFound(format!("no collection named `{name}`")));
    }
    open_stream(state, Some(name), params, &headers).await
}

async fn open_stream(
    state: AppState,
    collection: Option<String>,
    params: StreamParams,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // Parsed untrimmed (the grammar allows white space), so error columns
    // count from the first character the client sent.
    let filter = match params.query.as_deref() {
        Some(text) if !text.trim().is_empty() => Some(Arc::new(Filter::parse(text)?)),
        _ => None,
    };
    let resume = resume_id(headers, params.last_event_id.as_deref())?;
    let interest = Interest {
        collection: collection.as_deref().map(Arc::from),
        filter,
    };
    let subscription = state
        .hub
        .subscribe(interest.clone(), state.config.stream_buffer);
    let session = Session::open(&state, interest, subscription, resume);
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

/// The id to resume after: the `Last-Event-ID` header (sent by a browser
/// when it reconnects, so it is the freshest) or else `?last_event_id=`.
fn resume_id(headers: &HeaderMap, query: Option<&str>) -> Result<Option<EventId>, ApiError> {
    let header = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("invalid_event_id", "`Last-Event-ID` is not valid text")
        })?),
        None => None,
    };
    // An empty header means "no id yet" (as browsers send it), not "reset".
    let header = header.map(str::trim).filter(|text| !text.is_empty());
    match header.or(query).map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|error: crate::event::InvalidEventId| {
                ApiError::bad_request("invalid_event_id", error.to_string())
            }),
    }
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

/// One open stream.
struct Session {
    interest: Interest,
    subscription: Subscription,
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
}

impl Session {
    fn open(
        state: &AppState,
        interest: Interest,
        subscription: Subscription,
        resume: Option<EventId>,
    ) -> Session {
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
        let connected = json!({
            "connection_id": connection_id,
            "collection": interest.collection.as_deref(),
            "query": interest.filter.as_ref().map(|filter| filter.canonical()),
            "resumed_after": resume.filter(|_| reset.is_none()).map(|id| id.to_string()),
        });
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
        Session {
            interest,
            subscription,
            store: state.store.clone(),
            after: Some(position),
            phase,
            hello: Some(hello.freeze()),
            heartbeat,
            shutdown: state.shutdown.clone(),
            replays: state.replays.clone(),
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
            read_batch(&self.store, since, until).await
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
        let mut chunk = BytesMut::new();
        for event in batch.sets.into_iter().flat_map(events_of) {
            if self.after.is_some_and(|after| event.id <= after) {
                continue;
            }
            if let Some(delivery) = self.interest.delivery(&event) {
                chunk.extend_from_slice(&event.frame(delivery));
            }
        }
        (!chunk.is_empty()).then(|| chunk.freeze())
    }

    async fn live_chunk(&mut self) -> Option<Bytes> {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.phase = Phase::Done;
                    return None;
                }
                event = self.subscription.recv() => {
                    // `None`: the hub dropped this stream because its queue
                    // overflowed; ending it makes the client resume.
                    let queued = event?;
                    let mut chunk = BytesMut::new();
                    let mut next = Some(queued);
                    let mut count = 0;
                    while let Some((event, delivery)) = next {
                        // Never send an id twice, even if the feed published
                        // it again after a restart.
                        if self.after.is_none_or(|after| event.id > after) {
                            chunk.extend_from_slice(&event.frame(delivery));
                            self.after = Some(event.id);
                        }
                        count += 1;
                        next = if count < EVENTS_PER_CHUNK { self.subscription.try_recv() } else { None };
                    }
                    if !chunk.is_empty() {
                        return Some(chunk.freeze());
                    }
                }
                _ = self.heartbeat.tick() => {
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
            }
        }
    }
}
