//! Channels and several subscriptions on one connection, over real HTTP.

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, client_with_token, test_config};

async fn open(client: &reqwest::Client, url: String) -> (SseClient, Value) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::new(response);
    let connected = stream.connected().await;
    let data = serde_json::from_str(&connected.data).unwrap();
    (stream, data)
}

/// The next event that is not about a collection's creation (a new stream
/// may still see that first).
async fn next(stream: &mut SseClient) -> (String, Value) {
    loop {
        let (kind, body) = stream.json_event().await;
        if kind != "collection.created" {
            return (kind, body);
        }
    }
}

#[tokio::test]
async fn messages_reach_subscribers_with_ids_and_resume() {
    let mut config = test_config();
    config.channel_rules = r#"{"news": {"read": "true", "publish": null}}"#.into();
    let app = TestApp::spawn_with(config).await;
    let ann = client_with_token(&app.token(json!({"sub": "ann", "name": "Ann"})));
    let (mut room, _) = open(&ann, app.url("/api/v1/realtime?channels=room.1")).await;
    let (mut news, connected) =
        open(&app.anonymous, app.url("/api/v1/realtime?channels=news")).await;
    assert_eq!(connected["channels"], json!(["news"]));

    let sent = ann
        .post(app.url("/api/v1/channels/room.1/messages"))
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    let (kind, body) = next(&mut room).await;
    assert_eq!(kind, "channel.message");
    assert_eq!(body["channel"], "room.1");
    assert_eq!(body["collection"], Value::Null);
    assert_eq!(body["data"]["message"], json!({"text": "hello"}));
    assert_eq!(
        body["data"]["sender"],
        json!({"user_id": "ann", "user_name": "Ann"})
    );
    let first_id = body["id"].as_str().unwrap().to_owned();

    // `news`: everyone reads, only admins publish.
    let refused = ann
        .post(app.url("/api/v1/channels/news/messages"))
        .json(&json!("extra!"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    app.post("/api/v1/channels/news/messages", &json!("extra!"))
        .await;
    let (_, body) = next(&mut news).await;
    assert_eq!(body["data"]["message"], "extra!");

    // Resume: what was missed is replayed, in order.
    ann.post(app.url("/api/v1/channels/room.1/messages"))
        .json(&json!({"text": "again"}))
        .send()
        .await
        .unwrap();
    let (mut resumed, _) = open(
        &ann,
        app.url(&format!(
            "/api/v1/realtime?channels=room.1&last_event_id={first_id}"
        )),
    )
    .await;
    let (kind, body) = next(&mut resumed).await;
    assert_eq!(kind, "channel.message");
    assert_eq!(body["data"]["message"]["text"], "again");

    // Anonymous callers may not read or publish an unconfigured channel.
    let anonymous = app
        .anonymous
        .get(app.url("/api/v1/realtime?channels=room.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad = app
        .post("/api/v1/channels/bad%20name/messages", &json!(1))
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn private_channels_are_for_their_user_and_admins() {
    let app = TestApp::spawn().await;
    let ann = app.user("ann");
    let bob = app.user("bob");
    let refused = bob
        .get(app.url("/api/v1/realtime?channels=user:ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let (mut inbox, _) = open(&ann, app.url("/api/v1/realtime?channels=user:ann")).await;
    // By default only admins publish to a user's channel.
    let forged = bob
        .post(app.url("/api/v1/channels/user:ann/messages"))
        .json(&json!("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    app.post("/api/v1/channels/user:ann/messages", &json!({"notice": 1}))
        .await;
    let (kind, body) = next(&mut inbox).await;
    assert_eq!(
        (kind.as_str(), body["channel"].as_str()),
        ("channel.message", Some("user:ann"))
    );
}

#[tokio::test]
async fn one_connection_carries_collections_with_filters_channels_and_presence() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    app.create_collection("comments").await;
    let ann = app.user("ann");
    let url = app.url(
        "/api/v1/realtime?collections=posts,comments&filter.posts=status%3Dpublished\
         &channels=room.1&presence=true",
    );
    let response = ann.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::with_presence(response);
    let connected: Value = serde_json::from_str(&stream.connected().await.data).unwrap();
    assert_eq!(connected["collections"], json!(["posts", "comments"]));
    assert_eq!(connected["channels"], json!(["room.1"]));
    let stats: Value = app.get("/api/v1/stats").await.json().await.unwrap();
    assert_eq!(stats["total_connections"], 1, "{stats}");
    assert_eq!(stats["subscriptions"], 3, "{stats}");
    assert_eq!(stats["subscriptions_per_connection"], 3.0, "{stats}");

    app.create_record("posts", json!({"id": "draft", "status": "draft"}))
        .await;
    app.create_record("posts", json!({"id": "live", "status": "published"}))
        .await;
    app.create_record("comments", json!({"id": "c1"})).await;
    ann.post(app.url("/api/v1/channels/room.1/messages"))
        .json(&json!("hi"))
        .send()
        .await
        .unwrap();
    app.create_collection("other").await;
    app.create_record("other", json!({"id": "o1"})).await;
    app.post("/api/v1/admin/broadcast", &json!({"message": "end"}))
        .await;

    let mut seen = Vec::new();
    loop {
        let (kind, body) = next(&mut stream).await;
        if kind == "system.announcement" {
            break;
        }
        let what = body["record_id"]
            .as_str()
            .or(body["channel"].as_str())
            .or(body["data"]["user_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        seen.push(format!("{kind} {what}"));
    }
    assert_eq!(
        seen,
        [
            "user.joined ann",
            "record.created live",
            "record.created c1",
            "channel.message room.1",
        ],
        "in commit order, once each, only what was asked for"
    );

    // A bad combination is refused.
    let refused = ann
        .get(app.url("/api/v1/realtime/posts?collections=comments"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let stray = ann
        .get(app.url("/api/v1/realtime?collections=posts&filter.comments=a%3D1"))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 400);
}

#[tokio::test]
async fn a_node_past_its_backlog_slows_writers_and_loses_nothing_it_accepted() {
    let mut config = test_config();
    // The feed holds every change back for a second and a half (as it would
    // for outside writers on a slow server), so the backlog grows past its
    // bound of five within the first few publishes.
    config.settle = Some(std::time::Duration::from_millis(1500));
    config.max_backlog = 5;
    config.publish_rate = 0;
    let app = TestApp::spawn_with(config).await;
    let ann = client_with_token(&app.token(json!({"sub": "ann"})));
    let (mut room, _) = open(&ann, app.url("/api/v1/realtime?channels=load")).await;
    let (publishers, each) = (16, 40);
    let mut tasks = Vec::new();
    for publisher in 0..publishers {
        let (client, url) = (ann.clone(), app.url("/api/v1/channels/load/messages"));
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), 0);
            for n in 0..each {
                let tag = format!("{publisher}-{n}");
                let answer = client
                    .post(&url)
                    .json(&json!({ "tag": tag }))
                    .send()
                    .await
                    .unwrap();
                match answer.status().as_u16() {
                    201 => accepted.push(tag),
                    503 => {
                        assert_eq!(answer.headers()["retry-after"], "1");
                        let body: Value = answer.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "overloaded", "{body}");
                        refused += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            (accepted, refused)
        }));
    }
    let (mut accepted, mut refused) = (std::collections::BTreeSet::new(), 0);
    for task in tasks {
        let (tags, count) = task.await.unwrap();
        accepted.extend(tags);
        refused += count;
    }
    assert_eq!(accepted.len() + refused, publishers * each);
    assert!(refused > 0, "the bound was never met");
    // Every accepted message reaches the stream, once (the hang guard of
    // `json_event` is the only bound on latency here).
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < accepted.len() {
        let (kind, body) = next(&mut room).await;
        assert_eq!(kind, "channel.message");
        let tag = body["data"]["message"]["tag"].as_str().unwrap().to_owned();
        assert!(accepted.contains(&tag), "{tag} was refused yet delivered");
        assert!(seen.insert(tag), "delivered twice");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let counted = metrics
        .lines()
        .find_map(|line| line.strip_prefix("livehub_writes_overloaded_total "))
        .expect("the refusals are counted");
    assert_eq!(counted.parse::<usize>().unwrap(), refused);
    assert!(
        metrics.contains("livehub_ingest_backlog_events "),
        "{metrics}"
    );
    app.shutdown().await;
}

/// The raw text of a stream's frames, read until one holds `needle`: that
/// frame, as sent.
async fn frame_with(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    text: &mut String,
    needle: &str,
) -> String {
    use futures::StreamExt;
    loop {
        if let Some(at) = text.find(needle) {
            let start = text[..at].rfind("\n\n").map_or(0, |end| end + 2);
            let end = text[at..].find("\n\n").map_or(text.len(), |end| at + end);
            let frame = text[start..end].to_owned();
            text.drain(..end);
            return frame;
        }
        let chunk = tokio::time::timeout(crate::helpers::HANG_GUARD, body.next())
            .await
            .expect("a frame")
            .expect("the stream ended early")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn ephemeral_messages_reach_open_streams_once_without_an_id_and_are_never_replayed() {
    let mut config = test_config();
    config.channel_rules = r#"{"cursor.*": {"durable": false}}"#.into();
    let app = TestApp::spawn_with(config).await;
    let ann = app.user("ann");
    let publish = |channel: &str, message: Value| {
        ann.post(app.url(&format!("/api/v1/channels/{channel}/messages")))
            .json(&message)
            .send()
    };
    let response = ann
        .get(app.url("/api/v1/realtime?channels=room,cursor.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Box::pin(response.bytes_stream());
    let mut text = String::new();
    frame_with(&mut body, &mut text, "event: connected").await;

    assert_eq!(publish("room", json!("first")).await.unwrap().status(), 201);
    let durable = frame_with(&mut body, &mut text, "\"first\"").await;
    let first_id = durable
        .lines()
        .find_map(|line| line.strip_prefix("id: "))
        .expect("a durable message has an id")
        .to_owned();

    let sent = publish("cursor.1", json!({"x": 1})).await.unwrap();
    assert_eq!(sent.status(), 201);
    let answer: Value = sent.json().await.unwrap();
    assert_eq!(answer["message"], json!({"x": 1}));
    let ephemeral = frame_with(&mut body, &mut text, "\"x\":1").await;
    assert!(
        !ephemeral.lines().any(|line| line.starts_with("id:")),
        "no SSE id, so a browser's Last-Event-ID stays on the last durable event: {ephemeral}"
    );
    let data: Value = serde_json::from_str(
        ephemeral
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["type"], "channel.message");
    assert_eq!(data["id"], Value::Null);
    assert_eq!(data["channel"], "cursor.1");
    assert_eq!(data["data"]["sender"]["user_id"], "ann");

    // Resuming after the first message replays the durable one after it,
    // and not the ephemeral one in between.
    assert_eq!(
        publish("room", json!("second")).await.unwrap().status(),
        201
    );
    frame_with(&mut body, &mut text, "\"second\"").await;
    let (mut resumed, _) = open(
        &ann,
        app.url(&format!(
            "/api/v1/realtime?channels=room,cursor.1&last_event_id={first_id}"
        )),
    )
    .await;
    let (kind, replayed) = next(&mut resumed).await;
    assert_eq!(kind, "channel.message");
    assert_eq!(
        replayed["data"]["message"], "second",
        "the ephemeral message is not replayed"
    );
    // Live, the resumed stream gets the next one, once.
    assert_eq!(
        publish("cursor.1", json!({"x": 2})).await.unwrap().status(),
        201
    );
    assert_eq!(publish("room", json!("third")).await.unwrap().status(), 201);
    let (_, live) = next(&mut resumed).await;
    assert_eq!(live["data"]["message"], json!({"x": 2}));
    let (_, after) = next(&mut resumed).await;
    assert_eq!(after["data"]["message"], "third", "delivered once");

    // A change page, like a replay, holds only durable messages.
    let page: Value = ann
        .get(app.url(&format!(
            "/api/v1/changes?channels=room,cursor.1&since={first_id}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages: Vec<&Value> = page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(|event| &event["data"]["message"])
        .collect();
    assert_eq!(messages, [&json!("second"), &json!("third")]);

    // Ephemeral channels keep their rules: anonymous callers may not publish.
    let anonymous = app
        .anonymous
        .post(app.url("/api/v1/channels/cursor.1/messages"))
        .json(&json!({"x": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn concurrent_messages_committed_together_each_reach_a_stream_once_in_id_order() {
    let mut config = test_config();
    config.publish_rate = 0;
    let app = TestApp::spawn_with(config).await;
    let ann = app.user("ann");
    let (mut room, _) = open(&ann, app.url("/api/v1/realtime?channels=room")).await;
    let url = app.url("/api/v1/channels/room/messages");
    let sent = futures::future::join_all((0..64).map(|n| {
        let (ann, url) = (ann.clone(), url.clone());
        async move {
            ann.post(url)
                .json(&json!({"n": n}))
                .send()
                .await
                .unwrap()
                .status()
        }
    }))
    .await;
    assert!(sent.iter().all(|status| *status == 201), "{sent:?}");
    let mut seen = std::collections::BTreeSet::new();
    let mut last_id = String::new();
    while seen.len() < 64 {
        let (kind, body) = next(&mut room).await;
        assert_eq!(kind, "channel.message");
        let id = body["id"].as_str().unwrap().to_owned();
        assert!(id > last_id, "ids rise: {id} after {last_id}");
        last_id = id;
        let n = body["data"]["message"]["n"].as_u64().unwrap();
        assert!(seen.insert(n), "message {n} came twice");
    }
}

#[tokio::test]
async fn a_batch_of_messages_is_published_in_one_request_item_by_item_in_order() {
    let mut config = test_config();
    config.publish_rate = 0;
    config.max_message_bytes = 64;
    config.channel_rules =
        r#"{"room": {"publish": "message.kind != banned"}, "cursor": {"durable": false}}"#.into();
    let app = TestApp::spawn_with(config).await;
    let ann = app.user("ann");
    let (mut room, _) = open(&ann, app.url("/api/v1/realtime?channels=room,cursor")).await;

    let batch = json!([
        {"kind": "chat", "n": 1},
        {"kind": "banned", "n": 2},
        {"kind": "chat", "text": "x".repeat(100)},
        {"kind": "chat", "n": 4},
    ]);
    let answered = ann
        .post(app.url("/api/v1/channels/room/messages/batch"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 207);
    let body: Value = answered.json().await.unwrap();
    let statuses: Vec<u64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 403, 413, 201], "{body}");
    assert_eq!(body["items"][3]["message"]["message"]["n"], 4);
    let (_, first) = next(&mut room).await;
    let (_, second) = next(&mut room).await;
    assert_eq!(first["data"]["message"]["n"], 1);
    assert_eq!(
        second["data"]["message"]["n"], 4,
        "refused items are not published"
    );
    assert!(first["id"].as_str().unwrap() < second["id"].as_str().unwrap());

    // To an ephemeral channel, all passing: 201, delivered in order.
    let answered = ann
        .post(app.url("/api/v1/channels/cursor/messages/batch"))
        .json(&json!([{"x": 1}, {"x": 2}]))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 201);
    for x in [1, 2] {
        let (_, body) = next(&mut room).await;
        assert_eq!(
            (body["channel"].as_str(), &body["data"]["message"]["x"]),
            (Some("cursor"), &json!(x))
        );
    }

    // Sent to `.../messages` an array is one message; a batch must be a
    // non-empty array.
    let one = ann
        .post(app.url("/api/v1/channels/cursor/messages"))
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 201);
    let (_, body) = next(&mut room).await;
    assert_eq!(body["data"]["message"], json!([1, 2]));
    for bad in [json!({"kind": "chat"}), json!([])] {
        let refused = ann
            .post(app.url("/api/v1/channels/room/messages/batch"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{bad}");
    }
}
