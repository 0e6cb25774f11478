//! Presence over real streams: joining and leaving, the grace period, the
//! presence endpoint and who may see it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, client_with_token, open_stream, test_config};

/// A server whose users leave `grace` after their last stream closes.
async fn spawn_with_grace(grace: Duration) -> TestApp {
    let mut config = test_config();
    config.presence_grace = grace;
    TestApp::spawn_with(config).await
}

/// An admin's stream of every collection, with presence events.
pub async fn observer(app: &TestApp) -> SseClient {
    let response = app
        .client
        .get(app.url("/api/v1/realtime"))
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::with_presence(response);
    stream.connected().await;
    stream
}

/// The next presence or announcement event: `(type, data)`, skipping the
/// observer's own admin joining.
async fn next_news(stream: &mut SseClient) -> (String, Value) {
    loop {
        let (kind, body) = stream.json_event().await;
        if kind == "user.joined" && body["data"]["user_id"] == "admin" {
            continue;
        }
        return (kind, body["data"].clone());
    }
}

#[tokio::test]
async fn two_tabs_join_once_and_a_reload_does_not_flap() {
    let app = spawn_with_grace(Duration::from_secs(3600)).await;
    let mut watch = observer(&app).await;
    let ann = client_with_token(&app.token(json!({"sub": "ann", "name": "Ann"})));
    let tab1 = open_stream(&ann, app.url("/api/v1/realtime")).await;
    let (kind, data) = next_news(&mut watch).await;
    assert_eq!(kind, "user.joined");
    assert_eq!(data["user_id"], "ann");
    assert_eq!(data["user_name"], "Ann");
    assert_eq!(data["connections"], 1);
    assert!(data["last_seen"].as_str().unwrap().ends_with('Z'));

    let tab2 = open_stream(&ann, app.url("/api/v1/realtime")).await;
    let listed: Value = ann
        .get(app.url("/api/v1/presence"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["user_id"] == "ann")
        .cloned()
        .expect("ann is present");
    assert_eq!(entry["connections"], 2, "{listed}");

    // Both tabs close and one reopens (a reload) within the grace period.
    drop((tab1, tab2));
    let _reloaded = open_stream(&ann, app.url("/api/v1/realtime")).await;
    // An announcement marks the end: nothing about ann came before it.
    app.post("/api/v1/admin/broadcast", &json!({"message": "mark"}))
        .await;
    let (kind, data) = next_news(&mut watch).await;
    assert_eq!(
        (kind.as_str(), data["message"].as_str()),
        ("system.announcement", Some("mark"))
    );
}

#[tokio::test]
async fn the_last_stream_closing_leaves_after_the_grace_period() {
    let app = spawn_with_grace(Duration::from_millis(200)).await;
    let mut watch = observer(&app).await;
    let bob = app.user("bob");
    let tab = open_stream(&bob, app.url("/api/v1/realtime")).await;
    assert_eq!(next_news(&mut watch).await.0, "user.joined");
    drop(tab);
    let (kind, data) = next_news(&mut watch).await;
    assert_eq!(kind, "user.left");
    assert_eq!(data["user_id"], "bob");
    assert_eq!(data["connections"], 0);
    let listed: Value = app.get("/api/v1/presence").await.json().await.unwrap();
    assert!(
        listed["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|user| user["user_id"] != "bob"),
        "{listed}"
    );
}

#[tokio::test]
async fn who_sees_presence_follows_the_rule_and_streams_ask_for_it() {
    let app = spawn_with_grace(Duration::from_secs(3600)).await;
    app.create_collection("posts").await;
    // Anonymous callers may not see presence (the default rule).
    let refused = app
        .anonymous
        .get(app.url("/api/v1/presence"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let asked = app
        .anonymous
        .get(app.url("/api/v1/realtime?presence=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 401);

    // A collection stream gets presence only when it asks.
    let carl = app.user("carl");
    let with = carl
        .get(app.url("/api/v1/realtime/posts?presence=true"))
        .send()
        .await
        .unwrap();
    let mut with = SseClient::with_presence(with);
    with.connected().await;
    let without = carl
        .get(app.url("/api/v1/realtime/posts"))
        .send()
        .await
        .unwrap();
    let mut without = SseClient::with_presence(without);
    without.connected().await;

    // Only admins say who a stream is present as.
    let forged = carl
        .get(app.url("/api/v1/realtime?user_id=dave"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let _kiosk = open_stream(
        &app.client,
        app.url("/api/v1/realtime?user_id=kiosk-7&user_name=Lobby%20screen"),
    )
    .await;
    let (kind, body) = loop {
        let (kind, body) = with.json_event().await;
        if body["data"]["user_id"] == "kiosk-7" {
            break (kind, body);
        }
    };
    assert_eq!(kind, "user.joined");
    assert_eq!(body["data"]["user_name"], "Lobby screen");
    assert_eq!(body["collection"], Value::Null);

    app.create_record("posts", json!({"id": "p1"})).await;
    // (A new stream may still see the collection's creation first.)
    let kind = loop {
        let (kind, _) = without.json_event().await;
        if kind != "collection.created" {
            break kind;
        }
    };
    assert_eq!(kind, "record.created", "no presence before it");
}

#[tokio::test]
async fn a_dead_nodes_users_are_swept_and_leave_once() {
    let app = spawn_with_grace(Duration::from_secs(3600)).await;
    let mut watch = observer(&app).await;
    // A node that wrote an entry with a 1 ms life, and then died.
    let ghost = livehub::engine::store::PresenceEntry {
        node: "dead-node",
        user_id: "ghost",
        user_name: Some("Ghost"),
        connections: 1,
        ttl: Duration::from_millis(1),
    };
    app.store.presence_set(&ghost).await.unwrap();
    let (kind, data) = next_news(&mut watch).await;
    assert_eq!(
        (kind.as_str(), data["user_id"].as_str()),
        ("user.joined", Some("ghost"))
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Any live node sweeps it.
    app.store
        .presence_maintain("live-node", Duration::from_secs(30))
        .await
        .unwrap();
    let (kind, data) = next_news(&mut watch).await;
    assert_eq!(
        (kind.as_str(), data["user_id"].as_str()),
        ("user.left", Some("ghost"))
    );
    assert_eq!(data["user_name"], "Ghost");
    // The dead node's own leave, had it come, would not say so again.
    app.store.presence_leave(&ghost).await.unwrap();
    app.store
        .presence_maintain("live-node", Duration::from_secs(30))
        .await
        .unwrap();
    app.post("/api/v1/admin/broadcast", &json!({"message": "mark"}))
        .await;
    let (kind, _) = next_news(&mut watch).await;
    assert_eq!(kind, "system.announcement", "no second `user.left`");
    let listed: Value = app.get("/api/v1/presence").await.json().await.unwrap();
    assert!(
        listed["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|user| user["user_id"] != "ghost"),
        "{listed}"
    );
}
