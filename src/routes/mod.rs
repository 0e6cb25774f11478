//! The HTTP API, one module per resource. `openapi.yaml` is its contract.

mod admin;
mod batches;
mod bodies;
mod changes;
mod channels;
mod client;
mod collections;
mod connections;
mod extract;
mod health;
mod idempotency;
mod operations;
mod parameters;
mod presence;
mod realtime;
mod records;
mod tickets;

use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{delete, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::proxies::TrustedProxies;

use crate::error::{json_method_not_allowed, log_internal_errors, route_not_found};
use crate::{AppState, Config};

use extract::{Client, JsonBody, ObjectBody, PathParams, QueryParams};

/// Where the stream routes are. The front door serves a stream opened on a
/// fresh connection itself ([`is_stream_path`]), so it is named once here.
const STREAMS: &str = "/api/v1/realtime";

/// Whether a request for `path` (with its query) goes to a stream route:
/// the front door hands every other one to hyper.
pub fn is_stream_path(path: &str) -> bool {
    path.strip_prefix(STREAMS)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('?') || rest.starts_with('/'))
}

/// Every route of the service, behind `cors` (built once, at start, by
/// [`cors_layer`]).
pub fn router(state: AppState, cors: Option<CorsLayer>) -> Router {
    let max_body_bytes = state.config.max_body_bytes;
    let proxies = state.config.trusted_proxies.clone();
    let access_log = state.config.access_log;
    // `Idempotency-Key` on every write route; as a route layer of each
    // method router, so a method a route does not take is a 405 whatever
    // its key.
    let keyed = middleware::from_fn_with_state(state.clone(), idempotency::idempotent);
    let router = Router::new()
        .route("/", get(health::demo_page))
        .route("/livehub.js", get(client::library))
        .route("/livehub.d.ts", get(client::library_types))
        .route("/livehub-react.js", get(client::react))
        .route("/livehub-react.d.ts", get(client::react_types))
        .route("/livehub-vue.js", get(client::vue))
        .route("/livehub-vue.d.ts", get(client::vue_types))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/api/v1/stats", get(operations::stats))
        .route("/api/v1/presence", get(presence::list))
        .route("/api/v1/changes", get(changes::page))
        .route(
            "/api/v1/channels/{name}/messages",
            post(channels::publish).route_layer(keyed.clone()),
        )
        .route(
            "/api/v1/channels/{name}/messages/batch",
            post(channels::publish_batch).route_layer(keyed.clone()),
        )
        .route(
            "/api/v1/admin/broadcast",
            post(admin::broadcast).route_layer(keyed.clone()),
        )
        .route(
            "/api/v1/admin/users/{id}/disconnect",
            post(admin::sign_out).route_layer(keyed.clone()),
        )
        .route("/openapi.yaml", get(health::openapi))
        .route(
            "/api/v1/collections",
            get(collections::list)
                .post(collections::create)
                .route_layer(keyed.clone()),
        )
        .route(
            "/api/v1/collections/{name}",
            get(collections::show)
                .patch(collections::update)
                .delete(collections::remove)
                .route_layer(keyed.clone()),
        )
        .route(
            "/api/v1/collections/{name}/records",
            get(records::list)
                .post(records::create)
                .route_layer(keyed.clone()),
        )
        .route(
            "/api/v1/collections/{name}/records/{id}",
            get(records::show)
                .patch(records::merge)
                .put(records::replace)
                .delete(records::remove)
                .route_layer(keyed.clone()),
        )
        .route(STREAMS, get(realtime::stream_all))
        .route(
            &format!("{STREAMS}/{{name}}"),
            get(realtime::stream_collection),
        )
        // A collection may be called `tickets`: its stream is still a GET.
        .route(
            &format!("{STREAMS}/tickets"),
            post(tickets::create)
                .get(realtime::stream_tickets_collection)
                .route_layer(keyed.clone()),
        )
        .route(
            &format!("{STREAMS}/connections/{{id}}/subscriptions"),
            post(connections::add).route_layer(keyed.clone()),
        )
        .route(
            &format!("{STREAMS}/connections/{{id}}/subscriptions/{{subscription}}"),
            delete(connections::remove).route_layer(keyed),
        )
        // Outside the routes' own layers: an unknown parameter is refused
        // before anything else looks at the request.
        .route_layer(middleware::from_fn(parameters::refuse_unknown))
        .fallback(route_not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            operations::refuse_without_database,
        ))
        .layer(middleware::from_fn(json_method_not_allowed))
        .layer(middleware::from_fn(log_internal_errors))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Failures are logged once, with their cause, by `log_internal_errors`.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request<_>| request_span(request, &proxies))
                .on_request(())
                .on_response(
                    move |response: &Response, latency: Duration, _: &tracing::Span| {
                        if access_log {
                            log_answer(response, latency);
                        }
                    },
                )
                .on_failure(()),
        );
    // Outermost, so preflight requests are answered before any route logic.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// The access log's line, inside the request's span (which names the
/// client, method, path and query). A stream is logged when it opens.
fn log_answer(response: &Response, latency: Duration) {
    tracing::info!(
        target: "livehub::access",
        status = response.status().as_u16(),
        ms = format_args!("{:.1}", latency.as_secs_f64() * 1000.0),
        "answered"
    );
}

/// The span of a request: its client's address (behind a trusted proxy,
/// the one it forwarded for), method and path, and its query with any
/// credential blanked, so tokens and tickets never reach the logs.
fn request_span<B>(request: &Request<B>, proxies: &TrustedProxies) -> tracing::Span {
    let query = request.uri().query().map(redact_credentials);
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| proxies.client(info.0.ip(), request.headers()).to_string());
    tracing::info_span!(
        "request",
        client = %client.as_deref().unwrap_or(""),
        method = %request.method(),
        path = %request.uri().path(),
        query = %query.as_deref().unwrap_or(""),
    )
}

/// `query` with the values of `token` and `ticket` replaced (their names
/// compared as the server decodes them, so `%74oken` is blanked too).
fn redact_credentials(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let decoded: Vec<(String, String)> =
                serde_urlencoded::from_str(pair).unwrap_or_default();
            match decoded.first() {
                Some((name, _)) if matches!(name.as_str(), "token" | "ticket") => {
                    format!("{name}=[redacted]")
                }
                _ => pair.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The CORS layer `--cors-origins` and `--cors-credentials` ask for, if any.
pub fn cors_layer(config: &Config) -> anyhow::Result<Option<CorsLayer>> {
    if config.cors_origins.is_empty() {
        return Ok(None);
    }
    let any = config
        .cors_origins
        .iter()
        .any(|origin| origin.trim() == "*");
    let origins = if any {
        if config.cors_credentials {
            bail!("--cors-credentials needs a list of origins, not `*`");
        }
        AllowOrigin::any()
    } else {
        let list = config
            .cors_origins
            .iter()
            .map(|origin| {
                let origin = origin.trim().trim_end_matches('/');
                if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                    bail!(
                        "--cors-origins: `{origin}` is not an origin like https://app.example.com"
                    );
                }
                HeaderValue::from_str(origin).with_context(|| format!("--cors-origins: `{origin}`"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("x-connection-secret"),
                HeaderName::from_static(idempotency::HEADER),
            ])
            .allow_credentials(config.cors_credentials)
            .max_age(Duration::from_secs(3600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_from_queries() {
        assert_eq!(
            redact_credentials("query=a%3D1&token=eyJ.x.y&ticket=abc&tokens=1"),
            "query=a%3D1&token=[redacted]&ticket=[redacted]&tokens=1"
        );
        assert_eq!(
            redact_credentials("%74oken=eyJ.x.y&q"),
            "token=[redacted]&q"
        );
    }

    #[test]
    fn cors_settings_are_checked() {
        let mut config = Config::defaults();
        assert!(cors_layer(&config).unwrap().is_none());
        config.cors_origins = vec!["*".into()];
        assert!(cors_layer(&config).unwrap().is_some());
        config.cors_credentials = true;
        assert!(cors_layer(&config).is_err());
        config.cors_origins = vec!["https://app.example.com".into(), "localhost:3000".into()];
        assert!(cors_layer(&config).is_err());
        config.cors_origins.pop();
        assert!(cors_layer(&config).unwrap().is_some());
    }
}
