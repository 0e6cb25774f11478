use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{HANG_GUARD, TestApp, key, name, test_config};

#[tokio::test]
async fn a_stream_starts_with_retry_and_connected_and_has_sse_headers() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/realtime"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());

    let mut stream = crate::helpers::SseClient::new(response);
    let connected = stream.connected().await;
    assert_eq!(connected.retry, Some(std::time::Duration::from_secs(2)));
    assert_eq!(
        connected.id.len(),
        24,
        "connected carries a resume position"
    );
    let data: Value = serde_json::from_str(&connected.data).unwrap();
    assert_eq!(data["connection_id"].as_str().unwrap().len(), 32);
    // Signed in: the user proves it owns the stream, no secret needed.
    assert!(data.get("connection_secret").is_none());
    assert_eq!(
        data["subscriptions"],
        serde_json::json!(["collections", "presence"])
    );
    assert_eq!(data["collection"], Value::Null);
}

#[tokio::test]
async fn every_event_type_reaches_the_global_stream() {
    let app = TestApp::spawn().await;
    let mut stream = app.stream("/api/v1/realtime", None).await;
    stream.connected().await;

    app.create_collection("posts").await;
    app.patch("/api/v1/collections/posts", &json!({"description": "d"}))
        .await;
    app.create_record("posts", json!({"id": "p1", "title": "one"}))
        .await;
    app.patch(
        "/api/v1/collections/posts/records/p1",
        &json!({"title": "uno"}),
    )
    .await;
    app.put(
        "/api/v1/collections/posts/records/p1",
        &json!({"title": "eins"}),
    )
    .await;
    app.delete("/api/v1/collections/posts/records/p1").await;
    app.delete("/api/v1/collections/posts").await;

    let expected = [
        ("collection.created", None, json!({"name": "posts"})),
        ("collection.updated", None, json!({"description": "d"})),
        (
            "record.created",
            Some("p1"),
            json!({"id": "p1", "title": "one"}),
        ),
        (
            "record.updated",
            Some("p1"),
            json!({"id": "p1", "title": "uno"}),
        ),
        (
            "record.updated",
            Some("p1"),
            json!({"id": "p1", "title": "eins"}),
        ),
        (
            "record.deleted",
            Some("p1"),
            json!({"id": "p1", "title": "eins"}),
        ),
        ("collection.deleted", None, json!({"name": "posts"})),
    ];
    let mut last_id = String::new();
    for (kind, record_id, data) in expected {
        let event = stream.event().await;
        assert_eq!(event.event, kind);
        let body: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(body["type"], kind);
        assert_eq!(body["id"], event.id, "the body repeats the SSE id");
        assert_eq!(body["collection"], "posts");
        assert_eq!(body["record_id"].as_str(), record_id);
        for (field, value) in data.as_object().unwrap() {
            assert_eq!(&body["data"][field], value, "{kind}: {body}");
        }
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(event.id > last_id, "ids ascend");
        last_id = event.id;
    }
}

#[tokio::test]
async fn a_collection_stream_gets_only_its_collection_and_filter() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    app.create_collection("other").await;
    let mut all = app.stream("/api/v1/realtime/posts", None).await;
    let mut published = app
        .stream("/api/v1/realtime/posts?query=status%3Dpublished", None)
        .await;
    all.connected().await;
    let connected = published.connected().await;
    let data: Value = serde_json::from_str(&connected.data).unwrap();
    assert_eq!(data["collection"], "posts");

    app.create_record("other", json!({"status": "published"}))
        .await;
    app.create_record("posts", json!({"id": "d", "status": "draft"}))
        .await;
    app.create_record("posts", json!({"id": "p", "status": "published"}))
        .await;
    app.create_record("posts", json!({"id": "last", "status": "published"}))
        .await;

    let ids: Vec<Value> = all
        .records(3)
        .await
        .iter()
        .map(|e| e["record_id"].clone())
        .collect();
    assert_eq!(ids, [json!("d"), json!("p"), json!("last")]);
    let ids: Vec<Value> = published
        .records(2)
        .await
        .iter()
        .map(|e| e["record_id"].clone())
        .collect();
    assert_eq!(ids, [json!("p"), json!("last")]);
}

#[tokio::test]
async fn stream_errors_stop_the_client() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/api/v1/realtime/nope", 404, "not_found"),
        ("/api/v1/realtime/bad-name", 400, "invalid_name"),
        (
            "/api/v1/realtime?last_event_id=garbage",
            400,
            "invalid_event_id",
        ),
    ];
    for (path, status, code) in cases {
        let response = app.get(path).await;
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    let response = app
        .client
        .get(app.url("/api/v1/realtime"))
        .header("Last-Event-ID", "0123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn changes_written_outside_the_api_are_streamed() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let mut stream = app.stream("/api/v1/realtime/posts", None).await;
    stream.connected().await;

    app.store
        .raw_query("CREATE posts:raw1 SET title = 'from outside'; UPDATE posts:raw1 SET title = 'changed'; DELETE posts:raw1;")
        .await
        .unwrap();
    let mut kinds = Vec::new();
    for body in stream.records(3).await {
        assert_eq!(body["record_id"], "raw1");
        kinds.push(body["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds,
        ["record.created", "record.updated", "record.deleted"]
    );
}

#[tokio::test]
async fn record_content_cannot_forge_events() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let mut stream = app.stream("/api/v1/realtime/posts", None).await;
    stream.connected().await;
    let hostile =
        json!({"id": "x", "a": "\n\nevent: forged\ndata: {}\n\n", "b": "\r", "c": "id: 1\r\n"});
    app.create_record("posts", hostile.clone()).await;
    app.create_record("posts", json!({"id": "after"})).await;

    let event = stream.record_event().await;
    assert_eq!(event.event, "record.created");
    let body: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(body["data"], hostile);
    let next = stream.record_event().await;
    assert_eq!(next.event, "record.created");
    assert!(next.data.contains("\"after\""));
}

#[tokio::test]
async fn concurrent_writers_lose_nothing_and_arrive_in_order() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 150;
    let app = TestApp::spawn().await;
    app.create_collection("load").await;
    let mut stream = app.stream("/api/v1/realtime/load", None).await;
    stream.connected().await;

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = app.client.clone();
        let url = app.url("/api/v1/collections/load/records");
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..PER_WRITER {
                let id = format!("w{writer}n{n}");
                let response = client
                    .post(&url)
                    .json(&json!({"id": id}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                ids.push(id);
            }
            ids
        }));
    }
    let mut written = BTreeSet::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }

    let mut received = BTreeSet::new();
    let mut last_id = String::new();
    while received.len() < written.len() {
        let event = stream.record_event().await;
        assert_eq!(event.event, "record.created");
        assert!(
            event.id > last_id,
            "ascending ids: {} after {}",
            event.id,
            last_id
        );
        last_id = event.id.clone();
        let body: Value = serde_json::from_str(&event.data).unwrap();
        let fresh = received.insert(body["record_id"].as_str().unwrap().to_owned());
        assert!(fresh, "duplicate event {body}");
    }
    assert_eq!(received, written);
}

#[tokio::test]
async fn shutdown_ends_open_streams_cleanly() {
    let app = TestApp::spawn().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = app.stream("/api/v1/realtime", None).await;
        stream.connected().await;
        streams.push(stream);
    }
    let ended = tokio::spawn(async move {
        for mut stream in streams {
            let last = stream.next().await.expect("a last message");
            assert_eq!(last.event, "node.leaving", "{last:?}");
            assert!(
                stream.next().await.is_none(),
                "the stream ends with no more events"
            );
        }
    });
    app.shutdown().await;
    tokio::time::timeout(HANG_GUARD, ended)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn heartbeats_keep_idle_streams_alive() {
    let mut config = test_config();
    config.heartbeat = std::time::Duration::from_millis(50);
    let app = TestApp::spawn_with(config).await;
    let response = app
        .client
        .get(app.url("/api/v1/realtime"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    use futures::StreamExt;
    let mut text = String::new();
    while !text.contains(": heartbeat\n\n") {
        let chunk = tokio::time::timeout(HANG_GUARD, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("retry: 2000\nid: "), "{text}");
}

/// The ordering hazard (a commit becoming visible after a later-stamped
/// one) under real parallelism: 16 writers on the API's write path without
/// HTTP in between. With the watermark's in-flight term removed, this test
/// lost events in 3 runs out of 3; with it, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_store_writers_lose_nothing() {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 400;
    // The client reads only after all writes: the queue must hold them all.
    let mut config = crate::helpers::test_config();
    config.stream_buffer = WRITERS * PER_WRITER;
    let app = TestApp::spawn_with(config).await;
    app.create_collection("hazard").await;
    let mut stream = app.stream("/api/v1/realtime/hazard", None).await;
    stream.connected().await;

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = app.store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..PER_WRITER {
                let id = format!("w{writer}n{n}");
                let data = serde_json::Map::new();
                store
                    .create_record(&name("hazard"), &key(&id), data)
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut received = BTreeSet::new();
    let mut last_id = String::new();
    while received.len() < WRITERS * PER_WRITER {
        let event = stream.record_event().await;
        assert!(event.id > last_id, "ascending ids");
        last_id = event.id.clone();
        let body: Value = serde_json::from_str(&event.data).unwrap();
        assert!(received.insert(body["record_id"].as_str().unwrap().to_owned()));
    }
}
