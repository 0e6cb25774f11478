//! `GET /api/v1/changes`: change pages over plain HTTP (see
//! [`crate::pages`]). This module reads the request and says how the page
//! may be cached.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use super::realtime::{TopicLists, plan, query_pairs};
use super::{Client, QueryParams};
use crate::AppState;
use crate::clock::Stamp;
use crate::error::ApiError;
use crate::event::EventId;
use crate::filter::Filter;
use crate::pages::{Page, PageRequest, Read, Reader};
use crate::session::{Subscribed, subscribe};
use crate::shape::Shape;

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// The most events one page holds.
const MAX_LIMIT: usize = 10_000;
/// The longest `wait`.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// Query of the change-page route. Unknown parameters are ignored.
#[derive(Deserialize, Default)]
pub struct ChangeParams {
    /// An event id, `earliest` or `now`.
    since: Option<String>,
    collections: Option<String>,
    channels: Option<String>,
    query: Option<String>,
    fields: Option<String>,
    limit: Option<usize>,
    /// How long an empty page waits for events (`30s`, `500ms`).
    wait: Option<String>,
}

/// Where a page starts.
#[derive(Clone, Copy)]
enum Since {
    Id(EventId),
    Earliest,
    Now,
}

pub async fn page(
    State(state): State<AppState>,
    Client { caller, ip, .. }: Client,
    QueryParams(params): QueryParams<ChangeParams>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.metrics.change_page_requests.inc();
    let since = since(params.since.as_deref())?;
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(limit @ 1..=MAX_LIMIT) => limit,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`limit` must be between 1 and {MAX_LIMIT}"),
            ));
        }
    };
    let wait = wait(params.wait.as_deref())?;
    let query = match params.query.as_deref() {
        Some(text) if !text.trim().is_empty() => Some(Filter::parse(text)?),
        _ => None,
    };
    let topics = TopicLists {
        collections: params.collections.as_deref(),
        channels: params.channels.as_deref(),
    };
    let plan = plan(None, topics, &query_pairs(raw_query.as_deref())?, query)?;
    if let Some(view) = plan.collections.iter().find(|sub| sub.view.is_some()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "`{}` is a view, which only a stream carries: a change page names each collection once",
                view.key()
            ),
        ));
    }
    // Patches need the record the client holds; a page reader holds none
    // the server knows of.
    let shape = Shape::parse(params.fields.as_deref(), false)?;
    // A long poll holds a place like a stream does.
    let _permit = if wait.is_zero() {
        None
    } else {
        Some(state.limits.admit(
            caller.as_ref().map(|identity| identity.user_id.as_str()),
            ip,
        )?)
    };
    let (mut since, mut wait) = (since, wait);
    let long_poll = !wait.is_zero();
    let (page, from_stamp) = loop {
        let Subscribed {
            interest,
            mut subscription,
            watched,
            ..
        } = subscribe(&state, &caller, &plan, None).await?;
        let from = match since {
            Since::Id(id) => id,
            Since::Earliest => EventId::before_stamp(state.store.earliest_retained()),
            // From this millisecond on: a write answered before the request,
            // which the hub's cursor may still trail, is not news.
            Since::Now => {
                let now = Stamp::at(std::time::SystemTime::now());
                EventId::before_stamp(Stamp::of_millis(now.millis()).max(subscription.start))
            }
        };
        let reader = Reader {
            state: &state,
            caller: &caller,
            interest: &interest,
            watched: &watched,
            shape: &shape,
        };
        match reader
            .read(
                &mut subscription,
                PageRequest {
                    since: from,
                    limit,
                    wait,
                },
            )
            .await?
        {
            Read::Page(page) => break (page, from.stamp),
            // A rule changed while the page waited: the answer is what a
            // request made now gets, from the same cursor, without waiting
            // again.
            Read::Rebind => (since, wait) = (Since::Id(from), Duration::ZERO),
        }
    };
    let caching = Caching {
        anonymous: caller.is_none(),
        long_poll,
        replayable_for: state.store.replayable_for(from_stamp),
        shared_max_age: state.config.shared_cache_max_age,
    };
    Ok(respond(&page, caching, &headers))
}

fn since(text: Option<&str>) -> Result<Since, ApiError> {
    match text.map(str::trim) {
        None | Some("") => Err(ApiError::bad_request(
            "invalid_query",
            "give `since`: the `next` of the page before, `earliest` (the oldest change kept) or `now` (only what comes next)",
        )),
        Some("earliest") => Ok(Since::Earliest),
        Some("now") => Ok(Since::Now),
        Some(id) => id
            .parse()
            .map(Since::Id)
            .map_err(|error: crate::event::InvalidEventId| {
                ApiError::bad_request("invalid_event_id", error.to_string())
            }),
    }
}

fn wait(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(Duration::ZERO);
    };
    let invalid = || {
        ApiError::bad_request(
            "invalid_query",
            format!(
                "`wait` is a duration such as `30s` or `500ms`, at most {}s",
                MAX_WAIT.as_secs()
            ),
        )
    };
    let wait = humantime::parse_duration(text).map_err(|_| invalid())?;
    if wait > MAX_WAIT {
        return Err(invalid());
    }
    Ok(wait)
}

/// How long a live-edge long poll's answer may be shared: long enough for
/// a cache holding the requests that waited with it (nginx's
/// `proxy_cache_lock`) to hand it to all of them, and short enough that a
/// client asking the same cursor later soon gets a fuller page.
const LIVE_EDGE_MAX_AGE: Duration = Duration::from_secs(1);

/// A year: the longest any cache is told to keep a page.
const YEAR: Duration = Duration::from_secs(31_536_000);

/// What decides how a page may be cached.
struct Caching {
    /// No caller: the page is what anyone may read, so shared caches may
    /// keep it.
    anonymous: bool,
    /// The request waited (or could have) for live events.
    long_poll: bool,
    /// How long the page's cursor stays replayable.
    replayable_for: Duration,
    /// `--shared-cache-max-age`.
    shared_max_age: Duration,
}

impl Caching {
    /// The `Cache-Control` of a page, or `None` for one that must not be
    /// kept.
    ///
    /// * A page of history never changes: a private cache may keep it
    ///   while its cursor is replayable (at most a year), a shared one at
    ///   most `--shared-cache-max-age`, which bounds how long a rule
    ///   tightened since (or a collection deleted) is not yet in force
    ///   there; the revalidation after that is judged anew.
    /// * An anonymous long poll at the edge is shared for a moment: every
    ///   request for the same query and cursor then gets the one answer
    ///   (and the same `next`, so their next polls collapse too).
    /// * Any other page at the edge is asked of livehub every time.
    fn cache_control(&self, page: &Page) -> Option<String> {
        let shared = self.shared_max_age.min(self.replayable_for);
        let (scope, max_age, immutable) = match (page.caught_up, self.anonymous) {
            (false, true) => ("public", shared, true),
            (false, false) => ("private", YEAR.min(self.replayable_for), true),
            (true, true) if self.long_poll => ("public", LIVE_EDGE_MAX_AGE.min(shared), false),
            (true, _) => return None,
        };
        let seconds = max_age.as_secs();
        if seconds == 0 {
            return None;
        }
        Some(if immutable {
            format!("{scope}, max-age={seconds}, immutable")
        } else {
            format!("{scope}, max-age={seconds}")
        })
    }
}

/// The page as JSON, with the headers that say how it may be cached
/// ([`Caching::cache_control`]) and, for pages a cache keeps, an ETag.
fn respond(page: &Page, caching: Caching, request: &HeaderMap) -> Response {
    let size: usize = page.events.iter().map(|event| event.len() + 1).sum();
    let mut body = BytesMut::with_capacity(size + 96);
    body.put_slice(b"{\"events\":[");
    for (index, event) in page.events.iter().enumerate() {
        if index > 0 {
            body.put_u8(b',');
        }
        body.put_slice(event);
    }
    body.put_slice(
        format!(
            "],\"next\":\"{}\",\"caught_up\":{}}}",
            page.next, page.caught_up
        )
        .as_bytes(),
    );
    let body = body.freeze();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The answer depends on who asks.
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    let Some(cache) = caching.cache_control(page) else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return (headers, Body::from(body)).into_response();
    };
    let tag = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(&body));
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    if let Ok(value) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, value);
    }
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .map(|candidate| candidate.trim().trim_start_matches("W/"))
                .any(|candidate| candidate == tag || candidate == "*")
        });
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, Body::from(body)).into_response()
}
