//! Hostile input and slow clients: what one client sends or fails to read
//! costs bounded time and memory, so no client can stall the others.
//!
//! Time appears here only as the hang guard: "the other client's event
//! arrives at all while the hostile load is in place", which a stalled
//! server cannot meet.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::helpers::{HANG_GUARD, SseClient, TestApp, key, name, open_stream, test_config};

/// `len` letters from a simple generator: two seeds give two strings that
/// share little, which is the worst case for a string diff.
fn letters(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'a' + ((state >> 33) % 26) as u8)
        })
        .collect()
}

/// Writes to `other` and waits for its event on `stream`: an ordinary
/// client going about its business.
async fn ordinary_event_arrives(app: &TestApp, stream: &mut SseClient, marker: &str) {
    guarded(app.create_record("other", json!({ "marker": marker }))).await;
    let event = stream.record_event().await;
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["data"]["marker"], marker);
}

/// `request`, within the hang guard.
async fn guarded<T>(request: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, request)
        .await
        .expect("the server answers")
}

/// Sixteen anonymous streams with 4,000-character `~` needles and one large
/// record used to hold the hub's lock for minutes (a naive substring search
/// costs haystack x needle). The search is linear now, and a collection the
/// streams may not read is never searched at all.
#[tokio::test]
async fn substring_filters_cannot_stall_dispatch() {
    // Isolated: if the server stalls, the hang guard still fires.
    let app = TestApp::spawn_isolated(test_config()).await;
    app.create_public_collection("posts").await;
    app.create_collection("private").await;
    app.create_collection("other").await;
    let mut ordinary = app.stream("/api/v1/realtime/other", None).await;
    ordinary.connected().await;
    let mut hostile = Vec::new();
    for n in 0..16 {
        // Distinct needles, so each is its own group and is searched.
        let needle = format!("{}{n}", "a".repeat(4000));
        let query = serde_urlencoded::to_string([("query", format!("body~\"{needle}\""))]).unwrap();
        hostile.push(
            open_stream(
                &app.anonymous,
                app.url(&format!("/api/v1/realtime?{query}")),
            )
            .await,
        );
    }
    let haystack = "a".repeat(900_000);
    // Readable by the hostile streams: searched, in linear time.
    guarded(app.create_record("posts", json!({ "body": haystack }))).await;
    ordinary_event_arrives(&app, &mut ordinary, "after a readable large record").await;
    // Not readable by them: the rule refuses it before any search.
    guarded(app.create_record("private", json!({ "body": haystack }))).await;
    ordinary_event_arrives(&app, &mut ordinary, "after a private large record").await;
    let health = guarded(app.anonymous.get(app.url("/healthz")).send())
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(hostile);
}

/// Replacing a long string with a different one used to make SurrealDB diff
/// the two inside the write (quadratic, seconds at 30,000 characters), which
/// held back every live event on the node. Livehub's writes now store such
/// strings whole; the change still carries its before-image, so a record
/// leaving a filter is still told.
#[tokio::test]
async fn updating_long_strings_does_not_hold_back_other_clients() {
    // Isolated: if the server stalls, the hang guard still fires.
    let app = TestApp::spawn_isolated(test_config()).await;
    app.create_collection("images").await;
    app.create_collection("other").await;
    let created = app
        .create_record(
            "images",
            json!({ "kind": "a", "image": letters(1, 100_000), "meta": { "caption": letters(2, 50_000), "n": 1 } }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let mut ordinary = app.stream("/api/v1/realtime/other", None).await;
    ordinary.connected().await;
    let mut kind_a = app
        .stream("/api/v1/realtime/images?query=kind%3Da", None)
        .await;
    kind_a.connected().await;
    let mut all = app.stream("/api/v1/realtime/images", None).await;
    all.connected().await;

    let patch = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/collections/images/records/{id}"));
        let body = json!({ "kind": "b", "image": letters(3, 100_000), "meta": { "caption": letters(4, 50_000) } });
        tokio::spawn(async move { client.patch(url).json(&body).send().await.unwrap() })
    };
    ordinary_event_arrives(&app, &mut ordinary, "during a long-string update").await;
    let patched = tokio::time::timeout(HANG_GUARD, patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        patched["meta"]["n"], 1,
        "a merge keeps the fields it does not name"
    );

    // One change, not two: the write's steps are merged by the feed.
    let (kind, event) = all.json_event().await;
    assert_eq!(kind, "record.updated");
    assert_eq!(event["data"]["kind"], "b");
    assert_eq!(event["data"]["image"].as_str().unwrap().len(), 100_000);
    assert_eq!(event["data"]["meta"]["n"], 1);
    // The before-image was rebuilt: the record left `kind = a`.
    let (kind, left) = kind_a.json_event().await;
    assert_eq!(kind, "record.updated");
    assert_eq!(left["left"], true);
    assert_eq!(left["record_id"], id.as_str());
    // Nothing else came: the next event on `all` is the next change.
    guarded(app.create_record("images", json!({ "kind": "c" }))).await;
    let (kind, next) = all.json_event().await;
    assert_eq!(kind, "record.created");
    assert_eq!(next["data"]["kind"], "c");
}

/// A client that stops reading (a zero TCP window) used to keep its stream,
/// its queue and its connection for ever. Its queue is now bounded in bytes,
/// and its connection is closed once the socket takes nothing for
/// `--write-timeout`.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let mut config = test_config();
    config.write_timeout = Duration::from_secs(1);
    config.stream_buffer_bytes = 2 * 1024 * 1024;
    let app = TestApp::spawn_with(config).await;
    app.create_collection("blobs").await;
    let open_streams = || async {
        let text = app
            .anonymous
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("livehub_streams_open "))
            .expect("livehub_streams_open in /metrics")
            .trim()
            .to_owned()
    };
    // A raw socket with a small receive buffer that is never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(address).await.unwrap();
    let token = app.token(json!({"sub": "admin", "role": "admin"}));
    stalled
        .write_all(
            format!(
                "GET /api/v1/realtime/blobs?token={token} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Wait until the stream is open.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while open_streams().await != "1" {
        assert!(tokio::time::Instant::now() < deadline, "the stream opens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Far more than the socket buffers and the stream's queue can hold.
    let blob = "x".repeat(500_000);
    for n in 0..40 {
        app.create_record("blobs", json!({ "n": n, "blob": blob }))
            .await;
    }
    // The server gives up on the stalled client on its own.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while open_streams().await != "0" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled stream is closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Others are served as usual.
    let mut reader = app.stream("/api/v1/realtime/blobs", None).await;
    reader.connected().await;
    app.create_record("blobs", json!({ "n": "last" })).await;
    let (_, event) = reader.json_event().await;
    assert_eq!(event["data"]["n"], "last");
    drop(stalled);
}

/// Channel messages are bounded in size and in rate per publisher.
#[tokio::test]
async fn channel_publishing_is_bounded() {
    let mut config = test_config();
    config.publish_rate = 5;
    config.max_message_bytes = 1000;
    let app = TestApp::spawn_with(config).await;
    let ann = app.user("ann");
    let publish = |client: &reqwest::Client, body: Value| {
        let request = client
            .post(app.url("/api/v1/channels/room.1/messages"))
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let too_large = publish(&ann, json!({ "text": "x".repeat(2000) })).await;
    assert_eq!(too_large.status(), 413);
    let error: Value = too_large.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-message-bytes"),
        "{error}"
    );
    let mut statuses = Vec::new();
    for n in 0..12 {
        statuses.push(publish(&ann, json!({ "n": n })).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|status| **status == 201).count() >= 5,
        "a burst of the rate goes through: {statuses:?}"
    );
    // Another user has an allowance of its own.
    assert_eq!(
        publish(&app.user("bob"), json!({ "hi": 1 })).await.status(),
        201
    );
}

/// Fractional `exp` (as common JWT libraries issue it) is honoured: the
/// stream ends at expiry. Tokens without `exp` are refused unless the
/// deployment allows them.
#[tokio::test]
async fn token_lifetimes_mean_what_they_say() {
    let app = TestApp::spawn().await;
    app.create_collection("notes").await;
    let expires = crate::helpers::now_secs() as f64 + 2.5;
    let token = app.token(json!({ "sub": "ann", "exp": expires }));
    let mut stream = open_stream(
        &reqwest::Client::new(),
        app.url(&format!("/api/v1/realtime/notes?token={token}")),
    )
    .await;
    loop {
        match stream.next().await {
            Some(event) if event.event == "token.expired" => break,
            Some(event) => assert!(event.event.starts_with("collection."), "{event:?}"),
            None => panic!("the stream ended without token.expired"),
        }
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after expiry"
    );

    // No usable `exp`: refused (a token with no `exp` claim at all is
    // refused too; see the unit tests of `auth`).
    let forever = app.token(json!({ "sub": "ann", "exp": Value::Null }));
    let response = app
        .anonymous
        .get(app.url(&format!(
            "/api/v1/collections/notes/records?token={forever}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Another `Authorization` scheme is a 401, not an anonymous caller.
#[tokio::test]
async fn an_authorization_header_of_another_scheme_is_refused() {
    let app = TestApp::spawn().await;
    app.create_public_collection("open").await;
    let anonymous = app
        .anonymous
        .get(app.url("/api/v1/collections/open/records"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 200, "anonymous may read `open`");
    let basic = app
        .anonymous
        .get(app.url("/api/v1/collections/open/records"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let error: Value = basic.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer"),
        "{error}"
    );
}

/// An anonymous caller cannot tell a collection that does not exist from one
/// it may not read.
#[tokio::test]
async fn anonymous_callers_cannot_probe_collection_names() {
    let app = TestApp::spawn().await;
    app.create_collection("secret").await;
    for path in [
        "/api/v1/collections/secret/records",
        "/api/v1/collections/nothing/records",
        "/api/v1/realtime/secret",
        "/api/v1/realtime/nothing",
    ] {
        let response = app.anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    // A signed-in user, whom the default rule lets read, learns of a missing
    // collection as before.
    let response = app
        .user("ann")
        .get(app.url("/api/v1/collections/nothing/records"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// A resumed stream of a named collection does not replay the collection's
/// metadata from a time the caller could not read it.
#[tokio::test]
async fn replays_do_not_show_metadata_from_a_time_it_was_hidden() {
    let app = TestApp::spawn().await;
    app.create_public_collection("board").await;
    let mut stream = open_stream(&app.anonymous, app.url("/api/v1/realtime/board")).await;
    app.create_record("board", json!({ "n": 1 })).await;
    let resume_from = stream.record_event().await.id;
    // Hidden from anonymous callers, described while hidden, then public again.
    let hide = app
        .patch(
            "/api/v1/collections/board",
            &json!({ "rules": { "read": null } }),
        )
        .await;
    assert_eq!(hide.status(), 200);
    let describe = app
        .patch(
            "/api/v1/collections/board",
            &json!({ "description": "written while hidden" }),
        )
        .await;
    assert_eq!(describe.status(), 200);
    let show = app
        .patch(
            "/api/v1/collections/board",
            &json!({ "rules": { "read": "true" } }),
        )
        .await;
    assert_eq!(show.status(), 200);
    app.create_record("board", json!({ "n": 2 })).await;

    let response = app
        .anonymous
        .get(app.url("/api/v1/realtime/board"))
        .header("Last-Event-ID", resume_from)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut resumed = SseClient::new(response);
    resumed.connected().await;
    let mut shown = 0;
    loop {
        let (kind, event) = resumed.json_event().await;
        // The metadata as it was while anonymous callers could not read
        // the collection (its read rule `null`) is not theirs to see.
        if kind.starts_with("collection.") {
            assert_eq!(event["data"]["rules"]["read"], "true", "{kind}: {event}");
            shown += 1;
        }
        if kind == "record.created" {
            assert_eq!(event["data"]["n"], 2);
            break;
        }
    }
    assert_eq!(shown, 1, "the change that made it public again is replayed");
}

/// Chaos: clients that disconnect at random moments (before, during and
/// after replays, between and inside chunks) and resume by `Last-Event-ID`
/// while writers write; 1,000 disconnects in all. Every client ends with
/// every event exactly once, in order.
#[tokio::test]
async fn a_thousand_random_disconnects_lose_nothing() {
    use rand::{Rng, SeedableRng};
    const CLIENTS: usize = 20;
    const DISCONNECTS_PER_CLIENT: usize = 50;
    const RECORDS: usize = 1500;
    let app = std::sync::Arc::new(TestApp::spawn().await);
    app.create_collection("chaos").await;
    let path = "/api/v1/realtime/chaos";
    // Every client starts before the first write, from one position.
    let start = {
        let mut first = app.stream(path, None).await;
        first.connected().await.id
    };
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in (writer..RECORDS).step_by(4) {
                    let mut data = serde_json::Map::new();
                    data.insert("n".into(), json!(n));
                    app.store
                        .create_record(&name("chaos"), &key(&format!("r{n:05}")), data)
                        .await
                        .unwrap();
                    if n % 16 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let app = app.clone();
            let start = start.clone();
            tokio::spawn(async move {
                let mut random = rand::rngs::StdRng::seed_from_u64(client as u64);
                let mut last = start;
                let mut ids: Vec<String> = Vec::with_capacity(RECORDS);
                let mut disconnects = 0;
                while ids.len() < RECORDS {
                    let mut stream = app.stream(path, Some(&last)).await;
                    // Until the quota is spent, leave after a random number
                    // of events or a random time, whichever comes first.
                    let (events, leave_after) = if disconnects < DISCONNECTS_PER_CLIENT {
                        (
                            random.random_range(0..60),
                            Duration::from_micros(random.random_range(0..20_000)),
                        )
                    } else {
                        (usize::MAX, HANG_GUARD)
                    };
                    let deadline = tokio::time::Instant::now() + leave_after;
                    let mut read = 0;
                    while read < events && ids.len() < RECORDS {
                        let next = tokio::time::timeout_at(deadline, stream.next()).await;
                        let Ok(Some(event)) = next else { break };
                        if event.event.starts_with("record.") {
                            assert!(event.id > last, "ids ascend");
                            let body: Value = serde_json::from_str(&event.data).unwrap();
                            ids.push(body["record_id"].as_str().unwrap().to_owned());
                            read += 1;
                        }
                        if !event.id.is_empty() {
                            last = event.id.clone();
                        }
                    }
                    if ids.len() < RECORDS {
                        disconnects += 1;
                    }
                    drop(stream);
                }
                (ids, disconnects)
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let mut total_disconnects = 0;
    for client in clients {
        let (mut ids, disconnects) = tokio::time::timeout(Duration::from_secs(300), client)
            .await
            .expect("the client finishes")
            .unwrap();
        total_disconnects += disconnects;
        // Every event once: as many as written, none twice, none missing.
        // (Order across writers is the commit order, which ascending ids
        // already checked; here the set.)
        assert_eq!(ids.len(), RECORDS);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RECORDS, "no duplicates");
    }
    assert!(
        total_disconnects >= CLIENTS * DISCONNECTS_PER_CLIENT,
        "{total_disconnects} disconnects"
    );
}

/// serde reads a struct from a JSON array, filling its fields in order: a
/// body (or its `rules`) given as `[null, null]` used to reset rules with a
/// 200 or 201. Objects are required where the contract says object.
#[tokio::test]
async fn arrays_are_not_read_as_objects() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    for (method, path, body) in [
        ("PATCH", "/api/v1/collections/posts", json!([null, null])),
        (
            "PATCH",
            "/api/v1/collections/posts",
            json!({"rules": [null, null]}),
        ),
        (
            "POST",
            "/api/v1/collections",
            json!({"name": "other", "rules": [null, null]}),
        ),
        ("POST", "/api/v1/collections", json!(["other"])),
        ("POST", "/api/v1/admin/broadcast", json!(["hello"])),
    ] {
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{method} {path} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_body", "{error}");
    }
    let collection: Value = app
        .get("/api/v1/collections/posts")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        collection["rules"]["read"], "$auth.sub != null",
        "the rules are untouched"
    );
}
