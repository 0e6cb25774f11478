//! The query parameters each route takes. A parameter no route of that
//! method and path takes is a 400 that names it and, where one is close,
//! what was meant: a misspelt `qurey=` or a list's `query=` (lists take
//! `filter=`) would otherwise be ignored, and the client would get every
//! record instead of the ones it asked for.
//!
//! The table is the contract's: a test
//! (`every_route_takes_the_parameters_openapi_lists`) checks it against
//! `openapi.yaml`.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// What one route takes.
pub(crate) struct Accepted {
    pub(crate) method: Method,
    /// The route as the router matches it (`/api/v1/collections/{name}`).
    pub(crate) path: &'static str,
    /// The route, as errors name it.
    pub(crate) what: &'static str,
    pub(crate) names: &'static [&'static str],
    /// Names that take a suffix: `filter.` for `filter.<collection>`.
    pub(crate) prefixes: &'static [&'static str],
}

/// Accepted on every route: the credentials (`ticket` is refused by the
/// authentication outside the stream routes, with its own message).
pub(crate) const CREDENTIALS: [&str; 2] = ["token", "ticket"];

/// A collection's stream.
const STREAM: [&str; 11] = [
    "query",
    "channels",
    "last_event_id",
    "presence",
    "user_id",
    "user_name",
    "snapshot",
    "snapshot_limit",
    "snapshot_sort",
    "fields",
    "diff",
];
/// The stream of every collection, which may name its collections.
const STREAM_OF_EVERY_COLLECTION: [&str; 12] = {
    let mut names = ["collections"; 12];
    let mut index = 0;
    while index < STREAM.len() {
        names[index + 1] = STREAM[index];
        index += 1;
    }
    names
};

/// Every route that takes parameters besides the credentials; the others
/// take none.
pub(crate) const ROUTES: &[Accepted] = &[
    Accepted {
        method: Method::GET,
        path: "/api/v1/collections/{name}/records",
        what: "a record list",
        names: &["limit", "cursor", "sort", "filter", "fields"],
        prefixes: &[],
    },
    Accepted {
        method: Method::POST,
        path: "/api/v1/collections/{name}/records",
        what: "a record create",
        names: &["atomic"],
        prefixes: &[],
    },
    Accepted {
        method: Method::GET,
        path: "/api/v1/collections/{name}/records/{id}",
        what: "a record",
        names: &["fields"],
        prefixes: &[],
    },
    Accepted {
        method: Method::GET,
        path: "/api/v1/realtime",
        what: "the stream of every collection",
        names: &STREAM_OF_EVERY_COLLECTION,
        prefixes: &["filter.", "fields.", "diff."],
    },
    Accepted {
        method: Method::GET,
        path: "/api/v1/realtime/{name}",
        what: "a collection's stream",
        names: &STREAM,
        prefixes: &[],
    },
    Accepted {
        method: Method::GET,
        path: "/api/v1/realtime/tickets",
        what: "a collection's stream",
        names: &STREAM,
        prefixes: &[],
    },
    Accepted {
        method: Method::GET,
        path: "/api/v1/changes",
        what: "a change page",
        names: &[
            "since",
            "collections",
            "channels",
            "query",
            "fields",
            "limit",
            "wait",
        ],
        prefixes: &["filter."],
    },
];

/// Every other route, by method and path, with its name in errors: they
/// take nothing but the credentials. A method a route does not have is in
/// neither list, and is left for the router to answer 405.
const NO_PARAMETERS: &[(Method, &str, &str)] = &[
    (Method::GET, "/", "the demo page"),
    (Method::GET, "/livehub.js", "the browser library"),
    (Method::GET, "/livehub.d.ts", "the browser library's types"),
    (Method::GET, "/livehub-react.js", "the React bindings"),
    (
        Method::GET,
        "/livehub-react.d.ts",
        "the React bindings' types",
    ),
    (Method::GET, "/livehub-vue.js", "the Vue bindings"),
    (Method::GET, "/livehub-vue.d.ts", "the Vue bindings' types"),
    (Method::GET, "/healthz", "the health check"),
    (Method::GET, "/readyz", "the readiness check"),
    (Method::GET, "/metrics", "the metrics"),
    (Method::GET, "/openapi.yaml", "the API contract"),
    (Method::GET, "/api/v1/stats", "the stats"),
    (Method::GET, "/api/v1/presence", "the presence list"),
    (Method::GET, "/api/v1/collections", "the collection list"),
    (Method::POST, "/api/v1/collections", "a collection create"),
    (Method::GET, "/api/v1/collections/{name}", "a collection"),
    (
        Method::PATCH,
        "/api/v1/collections/{name}",
        "a collection change",
    ),
    (
        Method::DELETE,
        "/api/v1/collections/{name}",
        "a collection delete",
    ),
    (
        Method::PATCH,
        "/api/v1/collections/{name}/records/{id}",
        "a record merge",
    ),
    (
        Method::PUT,
        "/api/v1/collections/{name}/records/{id}",
        "a record replace",
    ),
    (
        Method::DELETE,
        "/api/v1/collections/{name}/records/{id}",
        "a record delete",
    ),
    (Method::POST, "/api/v1/realtime/tickets", "a ticket"),
    (
        Method::POST,
        "/api/v1/realtime/connections/{id}/subscriptions",
        "a subscription change",
    ),
    (
        Method::DELETE,
        "/api/v1/realtime/connections/{id}/subscriptions/{subscription}",
        "a subscription removal",
    ),
    (
        Method::POST,
        "/api/v1/channels/{name}/messages",
        "a channel message",
    ),
    (
        Method::POST,
        "/api/v1/channels/{name}/messages/batch",
        "a batch of channel messages",
    ),
    (Method::POST, "/api/v1/admin/broadcast", "a broadcast"),
    (
        Method::POST,
        "/api/v1/admin/users/{id}/disconnect",
        "a sign-out",
    ),
];

/// Names that other routes give the same thing, so that a parameter taken
/// from one route to another finds its name here.
const SAME_THING: &[(&str, &str)] = &[
    ("query", "filter"),
    ("filter", "query"),
    ("q", "query"),
    ("q", "filter"),
    ("where", "query"),
    ("where", "filter"),
    ("select", "fields"),
    ("order", "sort"),
    ("order_by", "sort"),
    ("orderby", "sort"),
    ("sort", "snapshot_sort"),
    ("limit", "snapshot_limit"),
    ("after", "since"),
    ("cursor", "since"),
    ("since", "last_event_id"),
    ("timeout", "wait"),
    ("access_token", "token"),
];

/// What a parameter that a route does not take is for, where that is
/// more useful than a close name.
const HINTS: &[(&str, &str, &str)] = &[
    ("/api/v1/realtime/{name}", "collections", ONE_COLLECTION),
    ("/api/v1/realtime/tickets", "collections", ONE_COLLECTION),
];
const ONE_COLLECTION: &str =
    "a collection's stream carries that collection only: use /api/v1/realtime?collections=a,b";

/// Refuses a request whose query has a parameter its route does not take.
/// Runs inside the router (it needs the matched route), before any handler:
/// so before a ticket is spent or a stream opened.
pub(crate) async fn refuse_unknown(request: Request, next: Next) -> Response {
    if let Some(query) = request.uri().query()
        && let Some(route) = request.extensions().get::<MatchedPath>()
        && let Err(error) = check(request.method(), route.as_str(), query)
    {
        return error.into_response();
    }
    next.run(request).await
}

fn check(method: &Method, path: &str, query: &str) -> Result<(), ApiError> {
    let (what, names, prefixes) = match ROUTES
        .iter()
        .find(|route| route.method == method && route.path == path)
    {
        Some(route) => (route.what, route.names, route.prefixes),
        None => match NO_PARAMETERS
            .iter()
            .find(|(other, route, _)| other == method && *route == path)
        {
            Some((_, _, what)) => (*what, &[][..], &[][..]),
            None => return Ok(()),
        },
    };
    // A query that does not decode is refused by the handler's own reading,
    // with its own message.
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return Ok(());
    };
    for (name, _) in &pairs {
        let known = CREDENTIALS.contains(&name.as_str())
            || names.contains(&name.as_str())
            || prefixes.iter().any(|prefix| {
                name.strip_prefix(prefix)
                    .is_some_and(|rest| !rest.is_empty())
            });
        if !known {
            if let Some((_, _, hint)) = HINTS
                .iter()
                .find(|(route, parameter, _)| *route == path && parameter == name)
            {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("unknown parameter \"{name}\" on {what}: {hint}"),
                ));
            }
            return Err(unknown(name, what, names, prefixes, query));
        }
    }
    Ok(())
}

fn unknown(name: &str, what: &str, names: &[&str], prefixes: &[&str], query: &str) -> ApiError {
    // `query=a=1&&b~T` sent unencoded: the URL's `&` split the filter.
    let parameter_like = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !parameter_like || query.contains("&&") {
        return ApiError::bad_request(
            "unknown_parameter",
            format!(
                "unknown parameter \"{name}\" on {what}: a filter's `&` splits the URL's parameters \
                 unless it is encoded; write `&&` as `%26%26` or as `AND` \
                 (with curl: curl -G --data-urlencode 'query=a = 1 && b ~ T' URL)"
            ),
        );
    }
    let mut message = format!("unknown parameter \"{name}\" on {what}");
    if let Some(meant) = suggestion(name, names) {
        message.push_str(&format!("; did you mean \"{meant}\"?"));
    }
    if names.is_empty() && prefixes.is_empty() {
        message.push_str(" (it takes none but `token`)");
    } else {
        let listed: Vec<String> = names
            .iter()
            .map(|name| (*name).to_owned())
            .chain(
                prefixes
                    .iter()
                    .map(|prefix| format!("{prefix}<collection>")),
            )
            .collect();
        message.push_str(&format!(" (it takes {})", listed.join(", ")));
    }
    ApiError::bad_request("unknown_parameter", message)
}

/// The accepted name `name` most likely stands for: the same thing under
/// another route's name, or one a typo or two away.
fn suggestion<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    let lowered = name.to_ascii_lowercase().replace('-', "_");
    if let Some(same) = names.iter().find(|accepted| **accepted == lowered) {
        return Some(same);
    }
    if let Some((_, same)) = SAME_THING
        .iter()
        .find(|(other, same)| *other == lowered && names.contains(same))
    {
        return names.iter().copied().find(|accepted| accepted == same);
    }
    names
        .iter()
        .map(|accepted| (strsim::damerau_levenshtein(&lowered, accepted), *accepted))
        .filter(|(distance, accepted)| *distance <= 2 && *distance < accepted.len() / 2 + 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, accepted)| accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(method: Method, path: &str, query: &str) -> Option<String> {
        check(&method, path, query).err().map(|error| {
            error.body()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    }

    #[test]
    fn a_misspelt_or_misplaced_parameter_names_what_was_meant() {
        let list = "/api/v1/collections/{name}/records";
        assert!(
            message(Method::GET, list, "query=owner%3Dnobody")
                .unwrap()
                .starts_with(
                    "unknown parameter \"query\" on a record list; did you mean \"filter\"?"
                )
        );
        let stream = "/api/v1/realtime/{name}";
        assert!(
            message(Method::GET, stream, "qurey=a%3D1")
                .unwrap()
                .contains("did you mean \"query\"?")
        );
        assert!(
            message(Method::GET, stream, "filter=a%3D1")
                .unwrap()
                .contains("did you mean \"query\"?")
        );
        assert!(
            message(Method::GET, "/api/v1/changes", "collection=notes")
                .unwrap()
                .contains("did you mean \"collections\"?")
        );
        assert!(
            message(Method::GET, stream, "Last-Event-ID=x")
                .unwrap()
                .contains("did you mean \"last_event_id\"?")
        );
    }

    #[test]
    fn an_unencoded_and_is_named() {
        let text = message(Method::GET, "/api/v1/realtime/{name}", "query=a=1&&b~T").unwrap();
        assert!(text.contains("\"b~T\""), "{text}");
        assert!(text.contains("%26%26"), "{text}");
    }

    #[test]
    fn accepted_parameters_and_credentials_pass() {
        let all = "/api/v1/realtime";
        assert_eq!(
            message(
                Method::GET,
                all,
                "collections=a,b&filter.a=x%3D1&fields.b=t&diff.b=true&token=t&ticket=k"
            ),
            None
        );
        // A prefix alone names no collection.
        assert!(message(Method::GET, all, "filter.=x").is_some());
        // A method a route does not have is the router's 405, whatever its query.
        assert_eq!(message(Method::TRACE, "/api/v1/collections", "x=1"), None);
        assert_eq!(message(Method::PUT, all, "x=1"), None);
        // Routes that take nothing but credentials.
        assert_eq!(message(Method::GET, "/api/v1/presence", "token=t"), None);
        assert!(
            message(Method::GET, "/api/v1/presence", "limit=5")
                .unwrap()
                .ends_with("(it takes none but `token`)")
        );
    }

    #[test]
    fn no_suggestion_when_nothing_is_close() {
        let text = message(Method::GET, "/api/v1/changes", "colour=red").unwrap();
        assert!(!text.contains("did you mean"), "{text}");
        assert!(text.contains("(it takes since, collections"), "{text}");
    }

    /// The table and `openapi.yaml` list the same query parameters for
    /// every operation (`filter.<collection>` for the prefix `filter.`),
    /// and the credentials are its security schemes.
    #[test]
    fn every_route_takes_the_parameters_openapi_lists() {
        use std::collections::BTreeSet;

        let spec: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../../openapi.yaml")).unwrap();
        let shared = &spec["components"]["parameters"];
        let resolve = |parameter: &serde_yaml_ng::Value| match parameter["$ref"].as_str() {
            Some(reference) => shared[reference.rsplit('/').next().unwrap()].clone(),
            None => parameter.clone(),
        };
        let mut operations = 0;
        for (path, item) in spec["paths"].as_mapping().unwrap() {
            let path = path.as_str().unwrap();
            for (method, operation) in item.as_mapping().unwrap() {
                let method = method.as_str().unwrap();
                if method == "parameters" {
                    continue;
                }
                let method: Method = method.to_uppercase().parse().unwrap();
                let listed: BTreeSet<String> = item["parameters"]
                    .as_sequence()
                    .into_iter()
                    .chain(operation["parameters"].as_sequence())
                    .flatten()
                    .map(resolve)
                    .filter(|parameter| parameter["in"] == "query")
                    .map(|parameter| parameter["name"].as_str().unwrap().to_owned())
                    .collect();
                let route = ROUTES
                    .iter()
                    .find(|route| route.method == method && route.path == path);
                let elsewhere = NO_PARAMETERS
                    .iter()
                    .any(|(other, route, _)| *other == method && *route == path);
                assert!(
                    route.is_some() != elsewhere,
                    "{method} {path} must be in exactly one of ROUTES and NO_PARAMETERS"
                );
                let taken: BTreeSet<String> = route
                    .map(|route| {
                        route
                            .names
                            .iter()
                            .map(|name| (*name).to_owned())
                            .chain(
                                route
                                    .prefixes
                                    .iter()
                                    .map(|prefix| format!("{prefix}<collection>")),
                            )
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(taken, listed, "{method} {path}");
                operations += 1;
            }
        }
        assert!(operations > 30, "{operations} operations in openapi.yaml");
        // Every route of the tables is in the contract.
        let tabled = ROUTES
            .iter()
            .map(|route| (&route.method, route.path))
            .chain(
                NO_PARAMETERS
                    .iter()
                    .map(|(method, path, _)| (method, *path)),
            );
        for (method, path) in tabled {
            let item = &spec["paths"][path];
            assert!(
                !item[method.as_str().to_lowercase().as_str()].is_null(),
                "{method} {path} is not in openapi.yaml"
            );
        }
        for credential in CREDENTIALS {
            let scheme = &spec["components"]["securitySchemes"][credential];
            assert_eq!(scheme["in"], "query", "{credential}");
            assert_eq!(scheme["name"], credential);
        }
    }
}
