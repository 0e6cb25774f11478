//! `/api/v1/realtime[/{collection}]`: Server-Sent Events streams.
//!
//! This module is the HTTP side: it reads what a stream asks for (the
//! query, the resume id) and answers with the event stream. The stream
//! itself, from subscribing to its end, is [`crate::session`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::extract::{refuse_revoked, stream_caller};
use super::{Client, PathParams, QueryParams};
use crate::AppState;
use crate::error::ApiError;
use crate::event::EventId;
use crate::filter::Filter;
use crate::identity::claims_of;
use crate::presence::present_as;
use crate::session::{
    CollectionSub, First, Opened, Plan, Resume, Session, Snapshot, Subscribed, check_snapshot_size,
    snapshot_parts, subscribe,
};
use crate::shape::{Shape, Shapes};

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
    presence: Option<bool>,
    /// Who this stream is present as, instead of the token's user (admins,
    /// or anonymous clients with `--anonymous-presence`).
    user_id: Option<String>,
    user_name: Option<String>,
    /// Send the records that match first (`record.snapshot` events, then
    /// `snapshot.done`), then live changes.
    snapshot: Option<bool>,
    /// Only the first N records of the snapshot, by `snapshot_sort`.
    snapshot_limit: Option<u32>,
    /// The sort that picks the first N (default `-id`).
    snapshot_sort: Option<String>,
    /// Only these fields (and `id`) of each record, comma-separated.
    fields: Option<String>,
    /// Updates of a record the client holds arrive as merge patches.
    diff: Option<bool>,
}

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

/// The `collections=` and `channels=` lists of a request, as sent.
#[derive(Clone, Copy)]
pub(super) struct TopicLists<'a> {
    pub collections: Option<&'a str>,
    pub channels: Option<&'a str>,
}

/// What a stream (or a change page) asks for, from the route's collection
/// (if any) and the query: `collections=` and `channels=` (comma-separated) name topics;
/// `filter.<collection>=` filters a named collection; `query=` filters the
/// route's collection, or every collection. A collection may also be named
/// with a view (`posts.recent`, with its own `filter.posts.recent=`), which
/// the stream carries beside the collection's own subscription. A name
/// given twice counts once.
pub(super) fn plan(
    route: Option<String>,
    topics: TopicLists<'_>,
    pairs: &[(String, String)],
    query: Option<Filter>,
) -> Result<Plan, ApiError> {
    let list = |text: Option<&str>| -> Vec<String> {
        text.into_iter()
            .flat_map(|text| text.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut names = list(topics.collections);
    let channels = list(topics.channels);
    // `filter.<collection>=<filter>`.
    let mut filters = HashMap::new();
    for (key, text) in pairs {
        if let Some(name) = key.strip_prefix("filter.") {
            if filters.contains_key(name) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("`filter.{name}` is given twice"),
                ));
            }
            let filter = Filter::parse(text).map_err(|error| ApiError::InvalidFilter {
                message: format!("`filter.{name}`: {}", error.message),
                column: error.column,
            })?;
            filters.insert(name, filter);
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
    if names.is_empty() && channels.is_empty() {
        return Ok(Plan::every_collection(query));
    }
    let mut plan = Plan::named();
    for key in names {
        let (name, view) = CollectionSub::parse_key(&key)?;
        let sub = CollectionSub {
            name,
            view,
            filter: None,
        };
        let key = sub.key();
        if plan.collections.iter().any(|other| other.key() == key) {
            continue;
        }
        let filter = match filters.remove(key.as_str()) {
            Some(filter) => Some(filter.expr().clone()),
            None => query.clone(),
        };
        plan.add_collection(CollectionSub { filter, ..sub })?;
    }
    for channel in channels {
        if !plan.channels.contains(&channel) {
            plan.add_channel(&channel)?;
        }
    }
    if let Some(name) = filters.keys().next() {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`filter.{name}` names a collection this stream does not subscribe to"),
        ));
    }
    Ok(plan)
}

/// The query's pairs, for the parameters that carry a name in their key
/// (`filter.<collection>`, `fields.<collection>`, `diff.<collection>`).
pub(super) fn query_pairs(raw_query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw_query.unwrap_or("")).map_err(|error| {
        ApiError::bad_request("invalid_query", format!("the query string: {error}"))
    })
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
    let topics = TopicLists {
        collections: params.collections.as_deref(),
        channels: params.channels.as_deref(),
    };
    let pairs = query_pairs(raw_query.as_deref())?;
    let plan = plan(route, topics, &pairs, query)?;
    let shapes = Shapes {
        stream: Shape::parse(params.fields.as_deref(), params.diff.unwrap_or(false))?,
        own: shapes_by_collection(
            &pairs,
            &plan,
            params.fields.as_deref(),
            params.diff.unwrap_or(false),
        )?,
    };
    let first = First::parse(
        params.snapshot_limit,
        params.snapshot_sort.as_deref(),
        shapes.any_diff(),
    )?;
    let wants_snapshot = params.snapshot.unwrap_or(false);
    if wants_snapshot && plan.all.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "a snapshot needs named collections: use /api/v1/realtime/{collection}?snapshot=true or ?collections=a,b&snapshot=true",
        ));
    }
    if !wants_snapshot && first.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`snapshot_limit` and `snapshot_sort` need `snapshot=true`",
        ));
    }
    let caller = stream_caller(&state, caller, ticket.as_deref()).await?;
    let present_as = present_as(
        &caller,
        params.user_id.as_deref(),
        params.user_name.as_deref(),
        state.config.anonymous_presence,
    )?;
    let presence = match params.presence {
        Some(true) => Some(state.presence_rule.access(&caller)?),
        Some(false) => None,
        // By default on the stream of every collection, if allowed.
        None if plan.all.is_some() => state.presence_rule.access(&caller).ok(),
        None => None,
    };
    let permit = state.limits.admit(
        caller.as_ref().map(|identity| identity.user_id.as_str()),
        ip,
    )?;
    let described = json!({
        "collection": single,
        "collections": plan.collections.iter().map(CollectionSub::key).collect::<Vec<_>>(),
        "channels": plan.channels,
        "query": plan.all.clone().flatten().or_else(|| {
            (plan.collections.len() == 1).then(|| plan.collections[0].filter.clone()).flatten()
        }).map(|expr| expr.bind(claims_of(&caller)).to_string()),
    });
    let Subscribed {
        interest,
        subscription,
        watched: watched_rules,
        views,
    } = subscribe(&state, &caller, &plan, presence).await?;
    // A sign-out published while this stream was being set up is behind its
    // start, so it would never reach it: check again now that it is
    // subscribed (the hub notes sign-outs as it passes them).
    if let Some(identity) = &caller {
        refuse_revoked(&state, identity)?;
    }
    // A snapshot is taken by a stream that holds none: one with no resume
    // id, or one whose id can no longer be served (it is reset).
    let resume = Resume::check(&state.store, resume);
    let takes_snapshot = wants_snapshot && resume.holds_nothing();
    let snapshot = if takes_snapshot {
        let parts = snapshot_parts(&views, |_| true);
        if first.is_none() {
            check_snapshot_size(&state, &parts).await?;
        }
        Some(Snapshot::new(parts, first))
    } else {
        None
    };
    // Counted once the stream is open; dropped with it.
    let present = present_as.map(|user| state.presence.connect(user));
    let session = Session::open(
        state.engine.clone(),
        Opened {
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
        },
        resume,
    );
    let body = Body::from_stream(futures::stream::unfold(session, |mut session| async move {
        let chunk = session.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), session))
    }));
    Ok(event_stream(body))
}

/// A `text/event-stream` response, uncached and unbuffered by proxies.
fn event_stream(body: Body) -> Response {
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
    response
}

/// The answer to a stream request while the database does not answer: an
/// empty stream that asks the client to come back in `retry`. Any status
/// but 200 would make a browser's `EventSource` give up for good; a stream
/// that ends makes it reconnect, with its `Last-Event-ID`.
pub(super) fn come_back_later(retry: std::time::Duration) -> Response {
    let text = format!(
        ": the database is unavailable; reconnect later\nretry: {}\n\n",
        retry.as_millis()
    );
    event_stream(Body::from(text))
}

/// `fields.<collection>=a,b` and `diff.<collection>=true`: the shape of one
/// collection's records, for a stream whose collections want different
/// ones (over `fields` and `diff`).
fn shapes_by_collection(
    pairs: &[(String, String)],
    plan: &Plan,
    fields: Option<&str>,
    diff: bool,
) -> Result<HashMap<Arc<str>, Shape>, ApiError> {
    let mut own_fields: HashMap<Arc<str>, &String> = HashMap::new();
    let mut own_diff: HashMap<Arc<str>, bool> = HashMap::new();
    for (key, text) in pairs {
        let (parameter, name) = match (key.strip_prefix("fields."), key.strip_prefix("diff.")) {
            (Some(name), _) => ("fields", name),
            (_, Some(name)) => ("diff", name),
            _ => continue,
        };
        let Some(key) = plan
            .collections
            .iter()
            .map(CollectionSub::key)
            .find(|key| key == name)
        else {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "`{parameter}.{name}` names a collection this stream does not subscribe to"
                ),
            ));
        };
        let twice = || {
            ApiError::bad_request(
                "invalid_query",
                format!("`{parameter}.{name}` is given twice"),
            )
        };
        if parameter == "fields" {
            if own_fields.insert(Arc::from(key), text).is_some() {
                return Err(twice());
            }
        } else {
            let on = match text.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        format!("`diff.{name}` is `true` or `false`"),
                    ));
                }
            };
            if own_diff.insert(Arc::from(key), on).is_some() {
                return Err(twice());
            }
        }
    }
    let mut shapes = HashMap::new();
    for name in own_fields.keys().chain(own_diff.keys()) {
        let text = own_fields.get(name).map(|text| text.as_str()).or(fields);
        let shape =
            Shape::parse(text, own_diff.get(name).copied().unwrap_or(diff)).map_err(|error| {
                ApiError::bad_request("invalid_query", format!("`fields.{name}`: {error}"))
            })?;
        shapes.insert(name.clone(), shape);
    }
    Ok(shapes)
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
