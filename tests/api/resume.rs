use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, key, name, test_config};

/// Creates records with the given ids in order.
async fn create_all(app: &TestApp, collection: &str, ids: &[&str]) {
    for id in ids {
        app.create_record(collection, json!({ "id": id })).await;
    }
}

/// Reads `count` record events and returns their record ids.
async fn record_ids(stream: &mut SseClient, count: usize) -> Vec<String> {
    stream.record_ids(count).await
}

/// Opens a stream, receives r1 and r2, and returns r1's event id.
async fn first_id_then_disconnect(app: &TestApp, path: &str) -> String {
    let mut stream = app.stream(path, None).await;
    stream.connected().await;
    create_all(app, "posts", &["r1", "r2"]).await;
    let first = stream.record_event().await;
    assert!(first.data.contains("\"r1\""));
    let second = stream.record_event().await;
    assert!(second.data.contains("\"r2\""));
    first.id
}

#[tokio::test]
async fn last_event_id_header_replays_the_gap_then_goes_live() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let r1 = first_id_then_disconnect(&app, "/api/v1/realtime/posts").await;
    create_all(&app, "posts", &["r3", "r4"]).await;

    let mut stream = app.stream("/api/v1/realtime/posts", Some(&r1)).await;
    let connected = stream.connected().await;
    assert_eq!(
        connected.id, r1,
        "a resumed stream keeps the client's position"
    );
    create_all(&app, "posts", &["r5"]).await;
    // After r1 come r2 (seen before, but after the resume point), r3 and r4
    // from the replay, then r5 live: no gap, no duplicate.
    assert_eq!(record_ids(&mut stream, 4).await, ["r2", "r3", "r4", "r5"]);
}

#[tokio::test]
async fn last_event_id_query_parameter_resumes_too() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let r1 = first_id_then_disconnect(&app, "/api/v1/realtime/posts").await;
    create_all(&app, "posts", &["r3"]).await;

    let mut stream = app
        .stream(&format!("/api/v1/realtime/posts?last_event_id={r1}"), None)
        .await;
    stream.connected().await;
    create_all(&app, "posts", &["r4"]).await;
    assert_eq!(record_ids(&mut stream, 3).await, ["r2", "r3", "r4"]);
}

#[tokio::test]
async fn the_header_wins_over_the_query_parameter() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let r1 = first_id_then_disconnect(&app, "/api/v1/realtime/posts").await;
    let mut stream = app.stream("/api/v1/realtime/posts", None).await;
    stream.connected().await;
    create_all(&app, "posts", &["r3"]).await;
    let r3 = stream.record_event().await.id;
    drop(stream);
    create_all(&app, "posts", &["r4"]).await;

    // A browser reconnecting sends the newest id as the header while the URL
    // still carries the first one.
    let mut stream = app
        .stream(
            &format!("/api/v1/realtime/posts?last_event_id={r1}"),
            Some(&r3),
        )
        .await;
    stream.connected().await;
    create_all(&app, "posts", &["r5"]).await;
    assert_eq!(record_ids(&mut stream, 2).await, ["r4", "r5"]);
}

#[tokio::test]
async fn the_connected_position_covers_a_client_that_saw_no_events() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let mut stream = app.stream("/api/v1/realtime/posts", None).await;
    let position = stream.connected().await.id;
    drop(stream);
    create_all(&app, "posts", &["while-away"]).await;

    let mut stream = app.stream("/api/v1/realtime/posts", Some(&position)).await;
    stream.connected().await;
    assert_eq!(record_ids(&mut stream, 1).await, ["while-away"]);
}

#[tokio::test]
async fn replay_applies_the_collection_and_filter() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    app.create_collection("other").await;
    let path = "/api/v1/realtime/posts?query=kind%3Dkeep";
    let mut stream = app.stream(path, None).await;
    let position = stream.connected().await.id;
    drop(stream);
    app.create_record("posts", json!({"id": "a", "kind": "keep"}))
        .await;
    app.create_record("posts", json!({"id": "b", "kind": "drop"}))
        .await;
    app.create_record("other", json!({"id": "c", "kind": "keep"}))
        .await;
    app.create_record("posts", json!({"id": "d", "kind": "keep"}))
        .await;

    let mut stream = app.stream(path, Some(&position)).await;
    stream.connected().await;
    app.create_record("posts", json!({"id": "e", "kind": "keep"}))
        .await;
    assert_eq!(record_ids(&mut stream, 3).await, ["a", "d", "e"]);
}

#[tokio::test]
async fn ids_from_before_the_database_or_the_future_get_a_reset() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let now_ms = livehub::engine::clock::Stamp::now().millis();
    let an_hour_ago = format!("{:016x}{:08x}", (now_ms - 3_600_000) << 16, 0);
    let next_year = format!("{:016x}{:08x}", (now_ms + 365 * 86_400_000) << 16, 0);
    // The in-memory database was created just now, so an hour-old id
    // predates it.
    for (stale, reason) in [(an_hour_ago, "before_database"), (next_year, "unknown")] {
        let mut stream = app.stream("/api/v1/realtime/posts", Some(&stale)).await;
        let connected = stream.connected().await;
        assert_ne!(connected.id, stale);
        let (kind, body) = stream.json_event().await;
        assert_eq!(kind, "reset");
        assert_eq!(body["last_event_id"], stale.as_str());
        assert_eq!(body["reason"], reason);
        // Then it is live.
        let id = format!("after-{}", &stale[..4]);
        app.create_record("posts", json!({ "id": id })).await;
        assert_eq!(record_ids(&mut stream, 1).await, [id]);
    }
}

#[tokio::test]
async fn resume_survives_a_restart_with_persistent_storage() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.db = format!("surrealkv://{}", dir.path().join("data").display());

    let app = TestApp::spawn_with(config.clone()).await;
    app.create_collection("posts").await;
    let mut stream = app.stream("/api/v1/realtime/posts", None).await;
    stream.connected().await;
    create_all(&app, "posts", &["before"]).await;
    let position = stream.record_event().await.id;
    drop(stream);
    create_all(&app, "posts", &["unseen"]).await;
    app.shutdown().await;

    let app = TestApp::spawn_with(config).await;
    // Written while the client was away, after the restart.
    create_all(&app, "posts", &["after-restart"]).await;
    let mut stream = app.stream("/api/v1/realtime/posts", Some(&position)).await;
    stream.connected().await;
    create_all(&app, "posts", &["live"]).await;
    assert_eq!(
        record_ids(&mut stream, 3).await,
        ["unseen", "after-restart", "live"]
    );
    let records: Value = app
        .get("/api/v1/collections/posts/records")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(records["items"].as_array().unwrap().len(), 4);
    app.shutdown().await;
}

#[tokio::test]
async fn ids_older_than_the_retention_window_get_a_reset_even_after_it_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.db = format!("surrealkv://{}", dir.path().join("data").display());
    config.retention = std::time::Duration::from_secs(1);

    let app = TestApp::spawn_with(config.clone()).await;
    app.create_collection("posts").await;
    let mut stream = app.stream("/api/v1/realtime/posts", None).await;
    stream.connected().await;
    create_all(&app, "posts", &["old"]).await;
    let old = stream.record_event().await.id;
    drop(stream);
    app.shutdown().await;
    // Let the one-second window pass.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // A longer window does not bring back what the shorter one let go.
    config.retention = std::time::Duration::from_secs(3600);
    let app = TestApp::spawn_with(config).await;
    let mut stream = app.stream("/api/v1/realtime/posts", Some(&old)).await;
    stream.connected().await;
    let (kind, body) = stream.json_event().await;
    assert_eq!(kind, "reset");
    assert_eq!(body["reason"], "expired");
    drop(stream);
    app.shutdown().await;
}

#[tokio::test]
async fn an_empty_last_event_id_header_falls_back_to_the_query() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let r1 = first_id_then_disconnect(&app, "/api/v1/realtime/posts").await;
    let mut stream = app
        .stream(
            &format!("/api/v1/realtime/posts?last_event_id={r1}"),
            Some(""),
        )
        .await;
    assert_eq!(stream.connected().await.id, r1);
    assert_eq!(record_ids(&mut stream, 1).await, ["r2"]);
}

/// Reads record events, reconnecting with the last id whenever the server
/// ends the stream, until `count` arrived; checks order and uniqueness.
async fn read_all_resuming(
    app: &TestApp,
    path: &str,
    mut stream: SseClient,
    count: usize,
) -> (Vec<String>, usize) {
    let mut ids = Vec::with_capacity(count);
    let mut last = String::new();
    let mut reconnects = 0;
    while ids.len() < count {
        match stream.next().await {
            Some(event) if event.event.starts_with("record.") => {
                assert!(event.id > last, "ascending ids");
                last = event.id.clone();
                let body: Value = serde_json::from_str(&event.data).unwrap();
                ids.push(body["record_id"].as_str().unwrap().to_owned());
            }
            Some(_) => {}
            None => {
                reconnects += 1;
                stream = app.stream(path, Some(&last)).await;
                stream.connected().await;
            }
        }
    }
    (ids, reconnects)
}

#[tokio::test]
async fn a_client_too_slow_for_its_queue_is_closed_and_resumes_without_loss() {
    const RECORDS: usize = 600;
    let mut config = test_config();
    config.stream_buffer = 16;
    let app = TestApp::spawn_with(config).await;
    app.create_collection("posts").await;
    let path = "/api/v1/realtime/posts";
    let mut stream = app.stream(path, None).await;
    stream.connected().await;
    // Large records, written while the client reads nothing: the socket
    // fills, then the stream's queue.
    let filler = "x".repeat(32 * 1024);
    for n in 0..RECORDS {
        let mut data = serde_json::Map::new();
        data.insert("text".into(), json!(filler));
        app.store
            .create_record(&name("posts"), &key(&format!("r{n:04}")), data)
            .await
            .unwrap();
    }
    let (ids, reconnects) = read_all_resuming(&app, path, stream, RECORDS).await;
    let expected: Vec<String> = (0..RECORDS).map(|n| format!("r{n:04}")).collect();
    assert_eq!(ids, expected);
    let lagging = app
        .hub
        .stats()
        .lagging_closes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        lagging >= 1 && reconnects >= 1,
        "the overflow path ran: {lagging} closes, {reconnects} reconnects"
    );
}

#[tokio::test]
async fn replay_pages_past_the_read_limit_and_multi_table_commits() {
    const RECORDS: usize = 1150; // more changefeed entries than one read returns
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    app.create_collection("other").await;
    let path = "/api/v1/realtime";
    let mut stream = app.stream(path, None).await;
    let position = stream.connected().await.id;
    drop(stream);
    for n in 0..RECORDS {
        if n == 700 {
            // One commit, two tables: two changefeed entries, one stamp.
            app.store
                .raw_query("BEGIN; CREATE posts:multi1; CREATE other:multi2; COMMIT;")
                .await
                .unwrap();
        }
        app.store
            .create_record(
                &name("posts"),
                &key(&format!("r{n:04}")),
                serde_json::Map::new(),
            )
            .await
            .unwrap();
    }
    let stream = app.stream(path, Some(&position)).await;
    let mut stream = stream;
    stream.connected().await;
    let (ids, _) = read_all_resuming(&app, path, stream, RECORDS + 2).await;
    let mut expected: Vec<String> = (0..RECORDS).map(|n| format!("r{n:04}")).collect();
    // Inside one commit the changefeed lists changes table by table.
    expected.splice(700..700, ["multi2".to_owned(), "multi1".to_owned()]);
    assert_eq!(ids, expected);
}
