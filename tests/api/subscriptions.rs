//! Subscriptions added to and removed from an open stream
//! (`/api/v1/realtime/connections/{id}/subscriptions`).

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp};

/// An anonymous stream of `path`: the stream, its connection id and secret.
async fn anonymous_stream(app: &TestApp, path: &str) -> (SseClient, String, String) {
    let (stream, id, secret) = stream_as(&app.anonymous, app, path).await;
    (
        stream,
        id,
        secret.expect("an anonymous stream has a secret"),
    )
}

/// A stream of `path` opened by `client`: the stream, its connection id
/// and its secret (anonymous callers only).
pub async fn stream_as(
    client: &reqwest::Client,
    app: &TestApp,
    path: &str,
) -> (SseClient, String, Option<String>) {
    let response = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::new(response);
    let connected: Value = serde_json::from_str(&stream.connected().await.data).unwrap();
    let id = connected["connection_id"].as_str().unwrap().to_owned();
    let secret = connected["connection_secret"].as_str().map(str::to_owned);
    (stream, id, secret)
}

fn subscriptions_url(app: &TestApp, id: &str) -> String {
    app.url(&format!("/api/v1/realtime/connections/{id}/subscriptions"))
}

async fn add(app: &TestApp, id: &str, secret: &str, body: Value) -> reqwest::Response {
    add_as(&app.anonymous, app, id, secret, body).await
}

/// Adds with `client`'s credentials, and `secret` if not empty.
async fn add_as(
    client: &reqwest::Client,
    app: &TestApp,
    id: &str,
    secret: &str,
    body: Value,
) -> reqwest::Response {
    client
        .post(subscriptions_url(app, id))
        .header("x-connection-secret", secret)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn remove(app: &TestApp, id: &str, secret: &str, subscription: &str) -> reqwest::Response {
    remove_as(&app.anonymous, app, id, secret, subscription).await
}

async fn remove_as(
    client: &reqwest::Client,
    app: &TestApp,
    id: &str,
    secret: &str,
    subscription: &str,
) -> reqwest::Response {
    client
        .delete(format!("{}/{subscription}", subscriptions_url(app, id)))
        .header("x-connection-secret", secret)
        .send()
        .await
        .unwrap()
}

/// Reads events up to the next one of `kind`; returns the record ids of
/// the record events before it (and its data).
async fn until(stream: &mut SseClient, kind: &str) -> (Vec<String>, Value) {
    let mut ids = Vec::new();
    loop {
        let (event, data) = stream.json_event().await;
        if event == kind {
            return (ids, data);
        }
        if event.starts_with("record.") {
            ids.push(data["record_id"].as_str().unwrap().to_owned());
        }
    }
}

/// Posts written while a stream's subscriptions change.
const POSTS: usize = 400;

#[tokio::test]
async fn subscriptions_added_and_removed_on_an_open_stream_lose_nothing() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    app.create_public_collection("comments").await;
    for id in ["c0", "c1"] {
        app.create_record("comments", json!({"id": id, "n": 1}))
            .await;
    }
    let ann = app.user("ann");
    let (mut stream, id, _) = stream_as(&ann, &app, "/api/v1/realtime/posts").await;
    // Posts are written all along, by 8 writers at once, while the
    // stream's subscriptions change: each change meets events in flight.
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let client = app.client.clone();
            let url = app.url("/api/v1/collections/posts/records");
            tokio::spawn(async move {
                for n in (writer..POSTS).step_by(8) {
                    let response = client
                        .post(&url)
                        .json(&json!({"id": format!("p{n:03}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                }
            })
        })
        .collect();
    for _ in 0..10 {
        let added = add_as(&ann, &app, &id, "", json!({"channel": "room.1"})).await;
        assert_eq!(added.status(), 200);
        let removed = remove_as(&ann, &app, &id, "", "channel:room.1").await;
        assert_eq!(removed.status(), 200);
    }
    let added = add_as(
        &ann,
        &app,
        &id,
        "",
        json!({"collection": "comments", "snapshot": true, "fields": "n"}),
    )
    .await;
    assert_eq!(added.status(), 200);
    let answer: Value = added.json().await.unwrap();
    assert_eq!(
        answer["subscription"],
        json!({"id": "collection:comments", "snapshot": true})
    );
    for writer in writers {
        writer.await.unwrap();
    }
    app.create_record(
        "comments",
        json!({"id": "c2", "n": 2, "text": "hidden by fields"}),
    )
    .await;
    // Read in one pass: posts, the markers of the changes, the comments'
    // snapshot (the comments as they were), then the comment written after.
    let mut posts = Vec::new();
    let mut snapshot = None;
    let mut markers = 0;
    let mut comment = None;
    while posts.len() < POSTS || comment.is_none() {
        let (event, data) = stream.json_event().await;
        match event.as_str() {
            "subscription.added" | "subscription.removed" => markers += 1,
            "record.snapshot" => snapshot
                .get_or_insert_with(Vec::new)
                .push(data["data"].clone()),
            "snapshot.done" => assert!(snapshot.is_some() || data["records"] == 0),
            kind if kind.starts_with("record.") => match data["collection"].as_str().unwrap() {
                "posts" => posts.push(data["record_id"].as_str().unwrap().to_owned()),
                _ => comment = Some(data["data"].clone()),
            },
            _ => {}
        }
    }
    assert_eq!(markers, 21, "each change marked on the stream");
    assert_eq!(
        snapshot.unwrap(),
        [json!({"id": "c0", "n": 1}), json!({"id": "c1", "n": 1})]
    );
    // Each post once (the writers race, so in commit order, not by name).
    let mut sorted = posts.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), posts.len(), "a post came twice");
    let expected: Vec<String> = (0..POSTS).map(|n| format!("p{n:03}")).collect();
    assert_eq!(sorted, expected, "every post");
    assert_eq!(
        comment.unwrap(),
        json!({"id": "c2", "n": 2}),
        "its own fields"
    );
    // Removed: posts stop, comments go on.
    assert_eq!(
        remove_as(&ann, &app, &id, "", "collection:posts")
            .await
            .status(),
        200
    );
    app.create_record("posts", json!({"id": "after"})).await;
    app.create_record("comments", json!({"id": "c3"})).await;
    let (skipped, marker) = until(&mut stream, "subscription.removed").await;
    assert_eq!(marker["id"], "collection:posts");
    assert!(skipped.is_empty(), "{skipped:?}");
    let next = stream.record_event().await;
    assert!(next.data.contains("\"c3\""), "{}", next.data);
    app.shutdown().await;
}

#[tokio::test]
async fn only_the_streams_owner_may_change_it() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    app.create_public_collection("comments").await;
    let (_stream, id, secret) = anonymous_stream(&app, "/api/v1/realtime/posts").await;
    let body = json!({"collection": "comments"});
    let status = |response: reqwest::Response| response.status().as_u16();
    // No secret, a wrong one, a signed-in stranger, an unknown stream.
    let bare = app
        .anonymous
        .post(subscriptions_url(&app, &id))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(status(bare), 401);
    assert_eq!(
        status(add(&app, &id, &"0".repeat(32), body.clone()).await),
        404
    );
    let stranger = app
        .user("bob")
        .post(subscriptions_url(&app, &id))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(status(stranger), 404);
    assert_eq!(status(add(&app, "nope", &secret, body.clone()).await), 404);
    // A signed-in user's stream is changed by that user, with no secret.
    let response = app
        .user("ann")
        .get(app.url("/api/v1/realtime/posts"))
        .send()
        .await
        .unwrap();
    let mut ann_stream = SseClient::new(response);
    let connected: Value = serde_json::from_str(&ann_stream.connected().await.data).unwrap();
    assert!(connected.get("connection_secret").is_none());
    let ann_id = connected["connection_id"].as_str().unwrap();
    let by = |client: reqwest::Client| {
        let url = subscriptions_url(&app, ann_id);
        let body = body.clone();
        async move { client.post(url).json(&body).send().await.unwrap() }
    };
    assert_eq!(status(by(app.user("bob")).await), 404);
    assert_eq!(status(by(app.user("ann")).await), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_changes_get_clear_errors_and_leave_the_stream_as_it_was() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    let response = app
        .post("/api/v1/collections", &json!({"name": "secret"}))
        .await;
    assert_eq!(response.status(), 201);
    let (mut stream, id, secret) = anonymous_stream(&app, "/api/v1/realtime/posts").await;
    let code = |body: Value| body["error"]["code"].as_str().unwrap_or("").to_owned();
    for (body, status, expected) in [
        (
            json!({"collection": "posts", "channel": "a"}),
            400,
            "invalid_body",
        ),
        (json!({}), 400, "invalid_body"),
        (
            json!({"channel": "a", "query": "x = 1"}),
            400,
            "invalid_body",
        ),
        (json!({"collection": "posts"}), 409, "conflict"),
        // As on a stream: anonymous callers cannot tell what exists.
        (json!({"collection": "nothing"}), 401, "unauthorized"),
        (json!({"collection": "secret"}), 401, "unauthorized"),
        (json!({"collection": "bad name!"}), 400, "invalid_name"),
        (
            json!({"collection": "secret", "query": "a ="}),
            400,
            "invalid_filter",
        ),
        (
            json!({"collection": "x", "colour": "red"}),
            400,
            "invalid_body",
        ),
    ] {
        let response = add(&app, &id, &secret, body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(code(response.json().await.unwrap()), expected, "{body}");
    }
    assert_eq!(
        remove(&app, &id, &secret, "channel:none").await.status(),
        404
    );
    assert_eq!(
        remove(&app, &id, &secret, "collection:posts")
            .await
            .status(),
        409,
        "the last subscription stays"
    );
    // The stream carries what it did.
    app.create_record("posts", json!({"id": "still"})).await;
    let event = stream.record_event().await;
    assert!(event.data.contains("\"still\""));
    app.shutdown().await;
}

#[tokio::test]
async fn a_change_keeps_the_events_queued_for_a_reader_that_fell_behind() {
    let mut config = crate::helpers::test_config();
    config.stream_buffer_bytes = 512 * 1024 * 1024;
    let app = TestApp::spawn_with(config).await;
    app.create_public_collection("posts").await;
    let ann = app.user("ann");
    let (mut stream, id, _) = stream_as(&ann, &app, "/api/v1/realtime/posts").await;
    // Large posts the client does not read yet: the socket fills up and the
    // rest wait in the stream's queue.
    let text = "x".repeat(64 * 1024);
    let count = 400;
    for n in 0..count {
        app.create_record("posts", json!({"id": format!("p{n:03}"), "text": text}))
            .await;
    }
    // The change is taken before the queue is (the reader is behind).
    let change = tokio::spawn({
        let url = subscriptions_url(&app, &id);
        async move {
            ann.post(url)
                .json(&json!({"channel": "room.1"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut posts = Vec::new();
    while posts.len() < count {
        let (event, data) = stream.json_event().await;
        if event == "record.created" {
            posts.push(data["record_id"].as_str().unwrap().to_owned());
        }
    }
    let expected: Vec<String> = (0..count).map(|n| format!("p{n:03}")).collect();
    assert_eq!(posts, expected, "every post once, in order");
    assert_eq!(change.await.unwrap(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn each_collection_of_a_stream_may_have_its_own_fields() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    app.create_public_collection("comments").await;
    app.create_record("posts", json!({"id": "p1", "title": "T", "body": "B"}))
        .await;
    app.create_record("comments", json!({"id": "c1", "text": "X", "n": 1}))
        .await;
    let (mut stream, _, _) = anonymous_stream(
        &app,
        "/api/v1/realtime?collections=posts,comments&fields.posts=title&snapshot=true",
    )
    .await;
    let mut seen = Vec::new();
    loop {
        let (event, data) = stream.json_event().await;
        if event == "snapshot.done" {
            break;
        }
        seen.push(data["data"].clone());
    }
    assert_eq!(
        seen,
        [
            json!({"id": "p1", "title": "T"}),
            json!({"id": "c1", "text": "X", "n": 1})
        ]
    );
    app.create_record("posts", json!({"id": "p2", "title": "U", "body": "C"}))
        .await;
    let (_, data) = stream.json_event().await;
    assert_eq!(data["data"], json!({"id": "p2", "title": "U"}));
    let refused = app
        .anonymous
        .get(app.url("/api/v1/realtime?collections=posts&fields.comments=text"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_too_large_to_add_leaves_the_stream_as_it_was() {
    let mut config = crate::helpers::test_config();
    config.max_snapshot = 2;
    let app = TestApp::spawn_with(config).await;
    app.create_public_collection("posts").await;
    app.create_public_collection("comments").await;
    for id in ["c1", "c2", "c3"] {
        app.create_record("comments", json!({"id": id})).await;
    }
    let (mut stream, id, secret) = anonymous_stream(&app, "/api/v1/realtime/posts").await;
    let refused = add(
        &app,
        &id,
        &secret,
        json!({"collection": "comments", "snapshot": true}),
    )
    .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "snapshot_too_large");
    // Not half added: it can be added (without a snapshot) as new.
    let added = add(&app, &id, &secret, json!({"collection": "comments"})).await;
    assert_eq!(added.status(), 200);
    let (_, marker) = until(&mut stream, "subscription.added").await;
    assert_eq!(marker["id"], "collection:comments");
    app.shutdown().await;
}

/// A stream holds at most 32 collections and channels, and the answer past
/// that is the same whether its URL names 33 or a change would add the 33rd.
#[tokio::test]
async fn the_topic_limit_answers_the_same_from_the_url_and_from_a_change() {
    let app = TestApp::spawn().await;
    let channels = |count: usize| {
        (0..count)
            .map(|n| format!("c{n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ann = app.user("ann");
    let too_many = ann
        .get(app.url(&format!("/api/v1/realtime?channels={}", channels(33))))
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
    let from_url: Value = too_many.json().await.unwrap();
    assert_eq!(from_url["error"]["code"], "too_many_topics", "{from_url}");

    let path = format!("/api/v1/realtime?channels={}", channels(32));
    let (_stream, id, _) = stream_as(&ann, &app, &path).await;
    let response = add_as(&ann, &app, &id, "", json!({"channel": "c32"})).await;
    assert_eq!(response.status(), 400);
    let from_change: Value = response.json().await.unwrap();
    assert_eq!(from_change, from_url);
    // Below the limit again, the same change is taken.
    let removed = remove_as(&ann, &app, &id, "", "channel:c0").await;
    assert_eq!(removed.status(), 200);
    let response = add_as(&ann, &app, &id, "", json!({"channel": "c32"})).await;
    assert_eq!(response.status(), 200);
    app.shutdown().await;
}
