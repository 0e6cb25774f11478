//! A random-input fuzzer over real HTTP: requests built from the API's own
//! routes, parameters and bodies, then mutated (wrong types, arrays for
//! objects, huge and deep values, broken escapes, random bytes), sent to a
//! real server with the real embedded database.
//!
//! Every answer must be a well-formed response: no 5xx, a JSON error body
//! for every 4xx, streams that open and can be dropped, and no request left
//! unanswered (the hang guard). It runs for `LIVEHUB_FUZZ_SECS` seconds (a
//! short run by default; `LIVEHUB_FUZZ_SECS=600` for the long run in
//! RELIABILITY.md), from seed `LIVEHUB_FUZZ_SEED` (random by default; the
//! seed is printed so a failure can be replayed).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{HANG_GUARD, TestApp};

const METHODS: &[&str] = &["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"];

/// Paths as the API names them, with `{c}`, `{r}` and `{ch}` filled in, and
/// the methods each has (most requests use one of them).
const PATHS: &[(&str, &[&str])] = &[
    ("/api/v1/collections", &["GET", "POST"]),
    ("/api/v1/collections/{c}", &["GET", "PATCH", "DELETE"]),
    ("/api/v1/collections/{c}/records", &["GET", "POST"]),
    (
        "/api/v1/collections/{c}/records/{r}",
        &["GET", "PATCH", "PUT", "DELETE"],
    ),
    ("/api/v1/realtime", &["GET"]),
    ("/api/v1/realtime/{c}", &["GET"]),
    ("/api/v1/realtime/tickets", &["GET", "POST"]),
    ("/api/v1/channels/{ch}/messages", &["POST"]),
    ("/api/v1/presence", &["GET"]),
    ("/api/v1/stats", &["GET"]),
    ("/api/v1/admin/broadcast", &["POST"]),
    ("/api/v1/admin/users/{r}/disconnect", &["POST"]),
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.yaml", &["GET"]),
    ("/", &["GET"]),
];

const PARAMS: &[&str] = &[
    "query",
    "filter",
    "sort",
    "limit",
    "cursor",
    "last_event_id",
    "token",
    "ticket",
    "collections",
    "channels",
    "presence",
    "user_id",
    "user_name",
    "filter.posts",
];

const FILTERS: &[&str] = &[
    "title = 'x'",
    "n > 3 && (a ~ \"b\" || c != null)",
    "tags IN [1, 'two', true]",
    "owner = $auth.sub",
    "a.b.c <= -1.5e3",
    "!(x = 1)",
];

fn name(random: &mut StdRng) -> String {
    match random.random_range(0..6) {
        0 => "posts".into(),
        1 => "tickets".into(),
        2 => String::new(),
        3 => "x".repeat(random.random_range(60..300)),
        4 => "%00%ff%2F..%2F⟨⟩`".into(),
        _ => text(random, 12),
    }
}

/// Short text of every kind of character: ASCII, controls, quotes,
/// multi-byte, SurrealQL and URL specials.
fn text(random: &mut StdRng, max: usize) -> String {
    const PIECES: &[&str] = &[
        "a", "Z", "0", "9", " ", "'", "\"", "`", "\\", "/", "%", "&", "=", "?", "#", "$", ";",
        "\n", "\r", "\u{0}", "⟨", "⟩", "é", "ς", "😀", "(", ")", "[", "]", "{", "}", "~", "!",
        "||", "&&", "<", ">", ".", ",", "*", "-", "+", "e9", "NONE", "null",
    ];
    let len = random.random_range(0..=max);
    (0..len).map(|_| *PIECES.choose(random).unwrap()).collect()
}

fn value(random: &mut StdRng, depth: u32) -> Value {
    match random.random_range(0..if depth > 4 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(random.random::<bool>()),
        2 => json!(random.random::<i64>()),
        3 => json!(random.random::<f64>() * 1e300),
        4 => json!(text(random, 20)),
        5 => json!("y".repeat(random.random_range(0..5000))),
        6 => Value::Array(
            (0..random.random_range(0..4))
                .map(|_| value(random, depth + 1))
                .collect(),
        ),
        7 => {
            let mut object = serde_json::Map::new();
            for _ in 0..random.random_range(0..5) {
                let key = if random.random_bool(0.5) {
                    [
                        "name",
                        "rules",
                        "read",
                        "description",
                        "id",
                        "title",
                        "n",
                        "kind",
                    ]
                    .choose(random)
                    .unwrap()
                    .to_string()
                } else {
                    text(random, 8)
                };
                object.insert(key, value(random, depth + 1));
            }
            Value::Object(object)
        }
        _ => {
            // Deep nesting.
            let mut nested = json!(1);
            for _ in 0..random.random_range(1..200) {
                nested = json!([nested]);
            }
            nested
        }
    }
}

fn body(random: &mut StdRng) -> Option<Vec<u8>> {
    match random.random_range(0..8) {
        0 => None,
        1 => Some(text(random, 40).into_bytes()),
        2 => Some(
            (0..random.random_range(0..200))
                .map(|_| random.random())
                .collect(),
        ),
        3 => Some(b"[null, null]".to_vec()),
        4 => Some(
            json!({"name": name(random), "rules": value(random, 2)})
                .to_string()
                .into_bytes(),
        ),
        5 => Some(
            json!({"rules": {"read": FILTERS.choose(random).unwrap()}})
                .to_string()
                .into_bytes(),
        ),
        _ => Some(value(random, 0).to_string().into_bytes()),
    }
}

fn query(random: &mut StdRng) -> String {
    let mut pairs = Vec::new();
    for _ in 0..random.random_range(0..4) {
        let key = if random.random_bool(0.9) {
            PARAMS.choose(random).unwrap().to_string()
        } else {
            text(random, 6)
        };
        let value = match random.random_range(0..5) {
            0 => FILTERS.choose(random).unwrap().to_string(),
            1 => random.random::<u64>().to_string(),
            2 => format!("{:024x}", random.random::<u128>()),
            3 => "-1".into(),
            _ => text(random, 30),
        };
        pairs.push((key, value));
    }
    let encoded = serde_urlencoded::to_string(&pairs).unwrap();
    if random.random_bool(0.1) {
        // Raw, undecodable pieces.
        format!("{encoded}&%zz=%&query=%E0%A4%A")
    } else {
        encoded
    }
}

#[tokio::test]
async fn random_requests_get_well_formed_answers() {
    let seconds: u64 = std::env::var("LIVEHUB_FUZZ_SECS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("LIVEHUB_FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random);
    println!("http fuzz: seed {seed}, {seconds} s (LIVEHUB_FUZZ_SEED, LIVEHUB_FUZZ_SECS)");
    let mut config = crate::helpers::test_config();
    // Many requests from one address, by many users.
    config.max_streams_per_ip = 0;
    config.max_streams_per_user = 0;
    config.publish_rate = 0;
    let app = TestApp::spawn_with(config).await;
    app.create_collection("posts").await;
    app.create_record("posts", json!({"title": "x", "n": 4}))
        .await;
    let mut random = StdRng::seed_from_u64(seed);
    let admin = app.token(json!({"sub": "admin", "role": "admin"}));
    let user = app.token(json!({"sub": "u1"}));
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut by_status = std::collections::BTreeMap::new();
    while tokio::time::Instant::now() < deadline {
        let (path, methods) = *PATHS.choose(&mut random).unwrap();
        let method = *if random.random_bool(0.85) {
            methods
        } else {
            METHODS
        }
        .choose(&mut random)
        .unwrap();
        let path = path
            .replace("{c}", &urlencode(&name(&mut random)))
            .replace("{r}", &urlencode(&text(&mut random, 10)))
            .replace("{ch}", &urlencode(&name(&mut random)));
        let query = query(&mut random);
        let url = if query.is_empty() {
            app.url(&path)
        } else {
            app.url(&format!("{path}?{query}"))
        };
        let mut request = http.request(method.parse().unwrap(), &url);
        match random.random_range(0..4) {
            0 => request = request.bearer_auth(&admin),
            1 => request = request.bearer_auth(&user),
            2 => {
                request = request.header(
                    "Authorization",
                    text(&mut random, 20).replace(['\n', '\r', '\0'], ""),
                )
            }
            _ => {}
        }
        if let Some(bytes) = body(&mut random) {
            request = request
                .header("Content-Type", "application/json")
                .body(bytes);
        }
        if random.random_bool(0.2) {
            request = request.header(
                "Last-Event-ID",
                text(&mut random, 30).replace(['\n', '\r', '\0'], ""),
            );
        }
        let described = format!("{method} {url} (seed {seed}, request {sent})");
        let response = match tokio::time::timeout(HANG_GUARD, request.send()).await {
            Err(_) => panic!("no answer: {described}"),
            // The client refused to build the request (an invalid header).
            Ok(Err(error)) if error.is_builder() => continue,
            Ok(result) => result.unwrap_or_else(|error| panic!("{described}: {error}")),
        };
        sent += 1;
        let status = response.status();
        *by_status.entry(status.as_u16()).or_insert(0u64) += 1;
        assert!(!status.is_server_error(), "{status}: {described}");
        let event_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
        if status.is_client_error() && method != "HEAD" {
            let text = tokio::time::timeout(HANG_GUARD, response.text())
                .await
                .unwrap_or_else(|_| panic!("the error body ends: {described}"))
                .unwrap();
            let error: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("a JSON error body, got {text:?}: {described}"));
            assert!(
                error["error"]["code"].is_string() && error["error"]["message"].is_string(),
                "{error}: {described}"
            );
        } else if event_stream && method != "HEAD" {
            // The first bytes come at once; then the client goes away.
            let mut body = response.bytes_stream();
            use futures::StreamExt;
            let first = tokio::time::timeout(HANG_GUARD, body.next()).await;
            assert!(
                matches!(first, Ok(Some(Ok(_)))),
                "a stream's first bytes: {described}"
            );
        }
    }
    println!("http fuzz: {sent} requests, by status {by_status:?}");
    assert!(sent > 0);
    // The server still serves (the fuzzer may have deleted `posts`).
    app.create_collection("after_fuzzing").await;
    app.create_record("after_fuzzing", json!({"ok": true}))
        .await;
    assert_eq!(
        app.get("/api/v1/collections/after_fuzzing/records")
            .await
            .status(),
        200
    );
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .unwrap()
        .trim_start_matches('=')
        .to_owned()
}
