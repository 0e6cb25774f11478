//! Operations: readiness, metrics, statistics, announcements and sign-outs,
//! over real HTTP with real streams.

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, client_with_token, now_secs, open_stream};

/// The value of an unlabelled sample in a Prometheus exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn readiness_metrics_and_stats_count_what_happens() {
    let app = TestApp::spawn().await;
    let ready = app.anonymous.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    app.create_collection("posts").await;
    let ann = app.user("ann");
    let response = ann
        .get(app.url("/api/v1/realtime/posts"))
        .send()
        .await
        .unwrap();
    let mut mine = SseClient::new(response);
    let start = mine.connected().await.id;
    let anonymous = open_stream(&app.anonymous, app.url("/api/v1/realtime")).await;
    app.create_record("posts", json!({"id": "p1"})).await;
    assert_eq!(mine.record_event().await.id.len(), 24);
    // The anonymous stream may not read posts: it gets nothing of them.

    let metrics = app.anonymous.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert_eq!(sample(&text, "livehub_streams_open"), 2.0);
    assert_eq!(sample(&text, "livehub_streams_authenticated"), 1.0);
    assert!(
        sample(&text, "livehub_events_published_total") >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "livehub_commit_to_send_seconds_count") >= 1.0,
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));

    // A resumed stream replays the record: counted as replayed.
    let resumed = ann
        .get(app.url(&format!("/api/v1/realtime/posts?last_event_id={start}")))
        .send()
        .await
        .unwrap();
    let mut resumed = SseClient::new(resumed);
    resumed.connected().await;
    resumed.record_event().await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        sample(&text, "livehub_events_replayed_total") >= 1.0,
        "{text}"
    );

    for (client, status) in [(app.anonymous.clone(), 401), (ann.clone(), 403)] {
        let refused = client.get(app.url("/api/v1/stats")).send().await.unwrap();
        assert_eq!(refused.status(), status);
    }
    let stats: Value = app.get("/api/v1/stats").await.json().await.unwrap();
    assert_eq!(stats["total_connections"], 3, "{stats}");
    assert_eq!(stats["authenticated_connections"], 2, "{stats}");
    assert_eq!(stats["anonymous_connections"], 1, "{stats}");
    assert_eq!(stats["unique_users"], 1, "{stats}");
    assert_eq!(stats["subscriptions_per_connection"], 1.0, "{stats}");
    assert!(stats["events_published"].as_u64().unwrap() >= 2, "{stats}");
    assert!(
        stats["events_per_second"]["published"].is_number(),
        "{stats}"
    );
    drop((mine, anonymous, resumed));
}

#[tokio::test]
async fn announcements_reach_every_stream_and_sign_outs_end_a_users_streams() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let ann_token = app.token(json!({"sub": "ann"}));
    let ann = client_with_token(&ann_token);
    let mut ann_all = open_stream(&ann, app.url("/api/v1/realtime")).await;
    let mut ann_posts = open_stream(&ann, app.url("/api/v1/realtime/posts")).await;
    let mut bob = open_stream(&app.user("bob"), app.url("/api/v1/realtime/posts")).await;
    let mut anonymous = open_stream(&app.anonymous, app.url("/api/v1/realtime")).await;

    let refused = ann
        .post(app.url("/api/v1/admin/broadcast"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let sent = app
        .post(
            "/api/v1/admin/broadcast",
            &json!({"message": "maintenance at noon", "data": {"at": "12:00"}}),
        )
        .await;
    assert_eq!(sent.status(), 202);
    for stream in [&mut ann_all, &mut ann_posts, &mut bob, &mut anonymous] {
        let (kind, body) = loop {
            let (kind, body) = stream.json_event().await;
            if kind != "collection.created" {
                break (kind, body);
            }
        };
        assert_eq!(kind, "system.announcement");
        assert_eq!(body["data"]["message"], "maintenance at noon");
        assert_eq!(body["collection"], Value::Null);
    }

    let signed_out = app
        .client
        .post(app.url("/api/v1/admin/users/ann/disconnect"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 202);
    for stream in [&mut ann_all, &mut ann_posts] {
        let (kind, body) = stream.json_event().await;
        assert_eq!(kind, "forced_logout");
        assert_eq!(body["data"]["user_id"], "ann");
        assert!(stream.next().await.is_none(), "then the stream ends");
    }
    // ann's token is refused from now on; a token issued later works.
    let again = ann.get(app.url("/api/v1/realtime")).send().await.unwrap();
    assert_eq!(again.status(), 401);
    let fresh = app.token(json!({"sub": "ann", "iat": now_secs() + 1}));
    let fresh = client_with_token(&fresh)
        .get(app.url("/api/v1/realtime"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    // Others never see ann's sign-out, and go on.
    app.create_record("posts", json!({"id": "after"})).await;
    let event = bob.event().await;
    assert_eq!(event.event, "record.created", "bob's next event: {event:?}");
}

/// SurrealDB's process statistics (`sysinfo`) would keep a `/proc` file open
/// for every process on the machine: file descriptors that streams need.
#[tokio::test]
async fn the_server_keeps_no_proc_files_open() {
    let app = crate::helpers::TestApp::spawn().await;
    app.create_collection("posts").await;
    let proc_files = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| {
                let target = target.to_string_lossy();
                target.starts_with("/proc/") && target.ends_with("/stat")
            })
            .count()
    };
    // SurrealDB refreshes its statistics in the background. A refresh opens
    // and closes one file at a time (other servers of this test binary may
    // be refreshing now); kept open, there is one per process (about 100).
    for _ in 0..30 {
        let open = proc_files();
        assert!(open <= 4, "{open} files of /proc held open");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
