//! Several nodes on one real SurrealDB server act as one service: one id
//! per commit, resume anywhere, one presence list, notices on every node,
//! and writes straight into the server reaching every stream.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Follower, HANG_GUARD, SseClient, TestApp, client_with_token, now_secs, open_stream,
};
use crate::presence::observer;
use crate::subscriptions::stream_as;
use crate::surreal::{SurrealServer, free_port};

/// `(event id, record id)` of the next `count` record events.
async fn record_events(stream: &mut SseClient, count: usize) -> Vec<(String, String)> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let event = stream.record_event().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        seen.push((event.id, data["record_id"].as_str().unwrap().to_owned()));
    }
    seen
}

#[tokio::test]
async fn a_commit_has_one_id_on_every_node_and_a_client_resumes_on_any() {
    let server = SurrealServer::start().await;
    let nodes = server.nodes("ids", 3).await;
    nodes[0].create_collection("posts").await;
    let mut streams = Vec::new();
    for node in &nodes {
        let mut stream = node.stream("/api/v1/realtime/posts", None).await;
        stream.connected().await;
        streams.push(stream);
    }
    // Writes through every node.
    for n in 0..9 {
        nodes[n % 3]
            .create_record("posts", json!({"id": format!("p{n}"), "n": n}))
            .await;
    }
    let on_first = record_events(&mut streams[0], 9).await;
    for stream in &mut streams[1..] {
        assert_eq!(record_events(stream, 9).await, on_first, "the same ids");
    }
    let keys: BTreeSet<&str> = on_first.iter().map(|(_, key)| key.as_str()).collect();
    assert_eq!(keys.len(), 9, "every write once: {on_first:?}");

    // A client of node 0 that saw four events resumes on node 2 while
    // writes go on through node 1: nothing missing, nothing twice.
    drop(streams);
    for n in 9..12 {
        nodes[1]
            .create_record("posts", json!({"id": format!("p{n}"), "n": n}))
            .await;
    }
    let (last_seen, _) = &on_first[3];
    let mut resumed = nodes[2]
        .stream("/api/v1/realtime/posts", Some(last_seen))
        .await;
    resumed.connected().await;
    let rest = record_events(&mut resumed, 8).await;
    assert_eq!(rest[..5], on_first[4..], "the replay, with the same ids");
    let keys: Vec<&str> = rest[5..].iter().map(|(_, key)| key.as_str()).collect();
    assert_eq!(keys, ["p9", "p10", "p11"], "then what came after");
    // Live from here: a write through node 0 comes next, nothing before it.
    nodes[0].create_record("posts", json!({"id": "live"})).await;
    let (_, key) = record_events(&mut resumed, 1).await.remove(0);
    assert_eq!(key, "live");
}

/// The next presence event about `user`: `(type, data)`.
async fn presence_of(stream: &mut SseClient, user: &str) -> (String, Value) {
    loop {
        let (kind, body) = stream.json_event().await;
        if kind.starts_with("user.") && body["data"]["user_id"] == user {
            return (kind, body["data"].clone());
        }
    }
}

/// `user`'s entry in `node`'s presence list, if present.
async fn listed(node: &TestApp, user: &str) -> Option<Value> {
    let list: Value = node.get("/api/v1/presence").await.json().await.unwrap();
    list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["user_id"] == user)
        .cloned()
}

#[tokio::test]
async fn a_user_with_tabs_on_two_nodes_joins_once_and_leaves_after_the_last() {
    let server = SurrealServer::start().await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut config = server.node_config("presence");
        config.presence_grace = Duration::ZERO;
        nodes.push(TestApp::spawn_with(config).await);
    }
    let mut watch = observer(&nodes[0]).await;
    let ann = client_with_token(&nodes[0].token(json!({"sub": "ann", "name": "Ann"})));
    let tab_a = open_stream(&ann, nodes[0].url("/api/v1/realtime")).await;
    let (kind, _) = presence_of(&mut watch, "ann").await;
    assert_eq!(kind, "user.joined");
    let tab_b = open_stream(&ann, nodes[1].url("/api/v1/realtime")).await;
    // Both nodes list ann once, with both tabs (node 1 has counted its own
    // once its list says so).
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    for node in &nodes {
        loop {
            let entry = listed(node, "ann").await.expect("ann is listed");
            if entry["connections"] == 2 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{entry}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(tab_a);
    // Closing the tab on node 0 is no leave: a marker shows nothing came.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[1]
        .post("/api/v1/admin/broadcast", &json!({"message": "mark"}))
        .await;
    loop {
        let (kind, body) = watch.json_event().await;
        assert!(
            !(kind.starts_with("user.") && body["data"]["user_id"] == "ann"),
            "{kind} {body}"
        );
        if kind == "system.announcement" {
            break;
        }
    }
    drop(tab_b);
    let (kind, data) = presence_of(&mut watch, "ann").await;
    assert_eq!(kind, "user.left");
    assert_eq!(data["connections"], 0);
    assert!(listed(&nodes[1], "ann").await.is_none());
}

/// The real binary as a node of `db` on `server`, with `extra` flags,
/// once it is ready; and its URL.
pub(crate) async fn node_binary(
    server: &SurrealServer,
    db: &str,
    extra: &[&str],
) -> (std::process::Child, String) {
    let port = free_port();
    (
        node_binary_on(server, db, port, extra).await,
        format!("http://127.0.0.1:{port}"),
    )
}

/// [`node_binary`] on `port` (a node restarted where it was).
pub(crate) async fn node_binary_on(
    server: &SurrealServer,
    db: &str,
    port: u16,
    extra: &[&str],
) -> std::process::Child {
    let mut args = server.node_args(db);
    args.extend(
        [
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--jwt-secret",
            crate::helpers::TEST_SECRET,
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|flag| flag.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !matches!(reqwest::get(format!("{url}/readyz")).await, Ok(r) if r.status() == 200) {
        assert!(tokio::time::Instant::now() < deadline, "the node starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test]
async fn a_node_killed_with_sigkill_leaves_no_ghost() {
    let server = SurrealServer::start().await;
    let mut config = server.node_config("ghosts");
    config.presence_ttl = Duration::from_secs(2);
    let survivor = TestApp::spawn_with(config).await;
    let mut watch = observer(&survivor).await;

    // The node to kill: the real binary, so that it can die mid-life.
    let (mut doomed, doomed_url) = node_binary(&server, "ghosts", &["--presence-ttl", "2s"]).await;
    let ann = client_with_token(&survivor.token(json!({"sub": "ann"})));
    let _tab = open_stream(&ann, format!("{doomed_url}/api/v1/realtime")).await;
    let (kind, _) = presence_of(&mut watch, "ann").await;
    assert_eq!(kind, "user.joined");
    assert!(listed(&survivor, "ann").await.is_some());

    doomed.kill().unwrap();
    doomed.wait().unwrap();
    // The surviving node sweeps the dead node's entry once it expires.
    let (kind, _) = presence_of(&mut watch, "ann").await;
    assert_eq!(kind, "user.left");
    assert!(listed(&survivor, "ann").await.is_none());
}

/// A node that shuts down hands its present users over: one whose stream
/// comes back on another node within the grace period never leaves; one
/// that does not come back leaves after it.
#[tokio::test]
async fn a_node_shut_down_hands_its_present_users_over_without_a_flap() {
    let server = SurrealServer::start().await;
    let mut config = server.node_config("handover");
    config.presence_ttl = Duration::from_secs(2);
    let survivor = TestApp::spawn_with(config).await;
    let mut watch = observer(&survivor).await;
    let (leaving, leaving_url) = node_binary(
        &server,
        "handover",
        &["--presence-ttl", "2s", "--presence-grace", "5s"],
    )
    .await;
    let stream_of = |user: &str| {
        let client = client_with_token(&survivor.token(json!({"sub": user})));
        let url = format!("{leaving_url}/api/v1/realtime");
        async move { (open_stream(&client, url).await, client) }
    };
    let (mut ann_there, ann) = stream_of("ann").await;
    let (_bob_there, _bob) = stream_of("bob").await;
    for user in ["ann", "bob"] {
        assert_eq!(presence_of(&mut watch, user).await.0, "user.joined");
    }

    let stopping = tokio::spawn(crate::binary::stop_binary(leaving));
    let (kind, _) = ann_there.json_event().await;
    assert_eq!(kind, "node.leaving");
    // Once the node has gone, ann comes back on the survivor (as an
    // EventSource would, after the `retry:`); bob does not.
    stopping.await.unwrap();
    let _ann_here = open_stream(&ann, survivor.url("/api/v1/realtime")).await;
    // Until bob has left, then until cid (a marker, joining after) has
    // joined: ann's presence does not change in between.
    let mut seen = Vec::new();
    let mut cid = None;
    loop {
        let (kind, body) = watch.json_event().await;
        let user = body["data"]["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !kind.starts_with("user.") {
            continue;
        }
        seen.push(format!("{kind} {user}"));
        if user == "bob" {
            assert_eq!(kind, "user.left");
            let client = client_with_token(&survivor.token(json!({"sub": "cid"})));
            cid = Some(open_stream(&client, survivor.url("/api/v1/realtime")).await);
        }
        if user == "cid" {
            break;
        }
    }
    assert!(cid.is_some());
    assert!(
        !seen.iter().any(|event| event.ends_with(" ann")),
        "ann flapped: {seen:?}"
    );
    assert!(listed(&survivor, "ann").await.is_some());
    assert!(listed(&survivor, "bob").await.is_none());
}

/// A node killed while it writes holds the others' delivery back only
/// until its row runs out (`LEASE_TTL`, 400 ms), and every write it
/// answered reaches the survivors' streams once, in order.
#[tokio::test]
async fn a_node_killed_while_writing_holds_the_others_back_briefly() {
    let server = SurrealServer::start().await;
    let mut config = server.node_config("killed");
    config.settle = Some(Duration::ZERO);
    let survivor = TestApp::spawn_with(config).await;
    survivor.create_collection("posts").await;
    let (mut doomed, doomed_url) = node_binary(&server, "killed", &["--settle", "0"]).await;
    let mut follower = Follower::open(&survivor).await;

    // Writers keep the doomed node busy until it dies; what it answered
    // is what must arrive.
    let answered = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (client, url, answered) = (
                survivor.client.clone(),
                doomed_url.clone(),
                answered.clone(),
            );
            tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("w{writer}-{n}");
                    let sent = client
                        .post(format!("{url}/api/v1/collections/posts/records"))
                        .json(&json!({"id": key}))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 201 => {
                            answered.lock().unwrap().insert(key);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    while answered.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let killed = std::time::Instant::now();
    survivor
        .create_record("posts", json!({"id": "after"}))
        .await;
    follower
        .until_seen(&BTreeSet::from(["after".to_owned()]))
        .await;
    let held = killed.elapsed();
    // For BENCHMARKS.md ("A node that dies").
    eprintln!("a write after the kill reached a survivor's stream {held:?} after it");
    // Generous: the row runs out after 400 ms; it used to take 3 s.
    assert!(held < Duration::from_millis(2_500), "held back {held:?}");
    let answered = answered.lock().unwrap().clone();
    follower.until_seen(&answered).await;
    // Every node's id order is commit order: each writer's own records in turn.
    for writer in 0..4 {
        let prefix = format!("w{writer}-");
        let mine: Vec<usize> = follower
            .seen
            .iter()
            .filter_map(|key| key.strip_prefix(&prefix)?.parse().ok())
            .collect();
        assert!(
            mine.windows(2).all(|pair| pair[0] < pair[1]),
            "writer {writer}: {mine:?}"
        );
    }
}

/// The next event on `stream` that is not a collection event.
async fn next_notice(stream: &mut SseClient) -> (String, Value) {
    loop {
        let (kind, body) = stream.json_event().await;
        if !kind.starts_with("collection.") {
            return (kind, body);
        }
    }
}

#[tokio::test]
async fn messages_announcements_sign_outs_tickets_and_rules_reach_every_node() {
    let server = SurrealServer::start().await;
    let nodes = server.nodes("notices", 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    a.create_collection("posts").await;
    let ann = client_with_token(&a.token(json!({"sub": "ann"})));
    let bob = client_with_token(&a.token(json!({"sub": "bob"})));

    // A channel message published through A reaches a subscriber on B.
    let mut room = open_stream(&bob, b.url("/api/v1/realtime?channels=room")).await;
    let sent = ann
        .post(a.url("/api/v1/channels/room/messages"))
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    let (kind, body) = next_notice(&mut room).await;
    assert_eq!(kind, "channel.message");
    assert_eq!(body["data"]["message"], json!({"text": "hi"}));

    // An announcement made on B reaches a stream on A.
    let mut ann_on_a = open_stream(&ann, a.url("/api/v1/realtime/posts")).await;
    let sent = b
        .post("/api/v1/admin/broadcast", &json!({"message": "hello all"}))
        .await;
    assert_eq!(sent.status(), 202);
    let (kind, body) = next_notice(&mut ann_on_a).await;
    assert_eq!(kind, "system.announcement");
    assert_eq!(body["data"]["message"], "hello all");

    // A ticket issued by A opens one stream on B, and is then spent on A too.
    let tickets = a.url("/api/v1/realtime/tickets");
    let issued: Value = ann
        .post(&tickets)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = issued["ticket"].as_str().unwrap();
    let on_b = b
        .anonymous
        .get(b.url(&format!("/api/v1/realtime/posts?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 200);
    let again_on_a = a
        .anonymous
        .get(a.url(&format!("/api/v1/realtime/posts?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again_on_a.status(), 401, "single use across nodes");
    drop(on_b);

    // A rule changed through A holds on B: posts become admin-only, so
    // ann's stream of posts on B ends, and B refuses her.
    let mut ann_on_b = open_stream(&ann, b.url("/api/v1/realtime/posts")).await;
    let changed = a
        .patch(
            "/api/v1/collections/posts",
            &json!({"rules": {"read": null}}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let mut next = ann_on_b.next().await;
    if next
        .as_ref()
        .is_some_and(|event| event.event == "collection.created")
    {
        next = ann_on_b.next().await;
    }
    assert!(next.is_none(), "the stream ends: {next:?}");
    let listed = ann
        .get(b.url("/api/v1/collections/posts/records"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 403, "B enforces A's rule");

    // Signing ann out on B ends her streams on A and refuses her token there.
    let mut ann_on_a = open_stream(&ann, a.url("/api/v1/realtime")).await;
    let signed_out = b
        .post("/api/v1/admin/users/ann/disconnect", &json!({}))
        .await;
    assert_eq!(signed_out.status(), 202);
    let (kind, body) = next_notice(&mut ann_on_a).await;
    assert_eq!(kind, "forced_logout");
    assert_eq!(body["data"]["user_id"], "ann");
    assert!(ann_on_a.next().await.is_none(), "then the stream ends");
    let refused = ann.get(a.url("/api/v1/realtime")).send().await.unwrap();
    assert_eq!(refused.status(), 401, "A refuses the signed-out token");
    let fresh = client_with_token(&a.token(json!({"sub": "ann", "iat": now_secs() + 1})));
    let accepted = fresh.get(a.url("/api/v1/realtime")).send().await.unwrap();
    assert_eq!(accepted.status(), 200, "a later token works");
}

/// SurrealDB clients writing straight into the server (not through
/// livehub): every change reaches every stream of every node, and
/// `/metrics` counts late changes (none at the default settle window).
#[tokio::test]
async fn writes_straight_into_the_server_reach_every_stream_of_every_node() {
    const WRITERS: usize = 8;
    const EACH: usize = 3_000;
    let server = SurrealServer::start().await;
    let nodes = server.nodes("outside", 2).await;
    nodes[0].create_collection("posts").await;
    let mut followers = Vec::new();
    for node in &nodes {
        followers.push(Follower::open(node).await);
    }

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let db = server.outside_client("outside").await;
        writers.push(tokio::spawn(async move {
            for n in 0..EACH {
                db.query("CREATE type::record('posts', $id) CONTENT { writer: $writer, n: $n }")
                    .bind(("id", format!("w{writer}-{n}")))
                    .bind(("writer", writer))
                    .bind(("n", n))
                    .await
                    .unwrap()
                    .check()
                    .unwrap();
            }
        }));
    }
    // Streams are read while the writers write (a stream that fell behind
    // would be ended and resume from its last id, as clients do).
    let expected: BTreeSet<String> = (0..WRITERS)
        .flat_map(|writer| (0..EACH).map(move |n| format!("w{writer}-{n}")))
        .collect();
    let writing = async {
        for writer in writers {
            writer.await.unwrap();
        }
    };
    let reading = futures::future::join_all(
        followers
            .iter_mut()
            .map(|follower| follower.until_seen(&expected)),
    );
    tokio::join!(writing, reading);
    for follower in &followers {
        assert_eq!(follower.seen.len(), WRITERS * EACH, "every write, once");
    }
    for node in &nodes {
        let metrics = node.get("/metrics").await.text().await.unwrap();
        assert!(
            metrics.contains("livehub_late_changes_total 0\n"),
            "no late changes at the default settle window: {}",
            metrics
                .lines()
                .find(|line| line.starts_with("livehub_late_changes_total"))
                .unwrap_or("(missing)")
        );
    }
}

/// The shipped nginx configuration balancing two nodes: streams land on
/// both, and writes through either reach every stream.
#[tokio::test]
async fn nginx_balances_streams_and_writes_over_two_nodes() {
    let server = SurrealServer::start().await;
    let nodes = server.nodes("balanced", 2).await;
    let upstreams: Vec<&str> = nodes
        .iter()
        .map(|node| node.address.trim_start_matches("http://"))
        .collect();
    let nginx = crate::nginx::nginx_in_front_of(&upstreams).await;
    let admin = nodes[0].client.clone();
    let created = admin
        .post(format!("{}/api/v1/collections", nginx.url))
        .json(&json!({"name": "public", "rules": {"read": "true"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // Four clients open streams through nginx.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/realtime/public", nginx.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = SseClient::new(response);
        stream.connected().await;
        streams.push(stream);
    }
    for node in &nodes {
        let stats: Value = node.get("/api/v1/stats").await.json().await.unwrap();
        assert!(
            stats["total_connections"].as_u64().unwrap() >= 1,
            "nginx gave each node streams: {stats}"
        );
    }
    // Writes through nginx land on either node; every stream gets each.
    for n in 0..6 {
        let response = admin
            .post(format!("{}/api/v1/collections/public/records", nginx.url))
            .json(&json!({"id": format!("r{n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let first = record_events(&mut streams[0], 6).await;
    for stream in &mut streams[1..] {
        assert_eq!(record_events(stream, 6).await, first);
    }
}

/// With only livehub writing (`--settle 0`), nodes deliver each other's
/// writes by their shared low stamps: concurrent writers through both
/// nodes, and every stream of every node gets every write.
#[tokio::test]
async fn without_a_settle_window_nodes_lose_none_of_each_others_writes() {
    const WRITERS_PER_NODE: usize = 4;
    const EACH: usize = 300;
    let server = SurrealServer::start().await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut config = server.node_config("shared");
        config.settle = Some(Duration::ZERO);
        nodes.push(TestApp::spawn_with(config).await);
    }
    nodes[0].create_collection("posts").await;
    let mut followers = Vec::new();
    for node in &nodes {
        followers.push(Follower::open(node).await);
    }
    let writing = futures::future::join_all((0..2 * WRITERS_PER_NODE).map(|writer| {
        let node = &nodes[writer % 2];
        async move {
            for n in 0..EACH {
                node.create_record("posts", json!({"id": format!("w{writer}-{n}")}))
                    .await;
            }
        }
    }));
    let expected: BTreeSet<String> = (0..2 * WRITERS_PER_NODE)
        .flat_map(|writer| (0..EACH).map(move |n| format!("w{writer}-{n}")))
        .collect();
    let reading = futures::future::join_all(
        followers
            .iter_mut()
            .map(|follower| follower.until_seen(&expected)),
    );
    tokio::join!(writing, reading);
    for node in &nodes {
        let metrics = node.get("/metrics").await.text().await.unwrap();
        assert!(
            metrics.contains("livehub_late_changes_total 0\n"),
            "no change became visible behind a node's feed"
        );
    }
}

#[tokio::test]
async fn a_subscription_change_asked_of_another_node_reaches_the_stream() {
    let server = SurrealServer::start().await;
    let nodes = server.nodes("subscriptions", 2).await;
    for name in ["posts", "comments"] {
        let response = nodes[0]
            .post(
                "/api/v1/collections",
                &json!({"name": name, "rules": {"read": "true"}}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    nodes[0]
        .create_record("comments", json!({"id": "c0"}))
        .await;
    let ann = nodes[0].user("ann");
    let (mut stream, id, _) = stream_as(&ann, &nodes[0], "/api/v1/realtime/posts").await;
    let url = nodes[1].url(&format!("/api/v1/realtime/connections/{id}/subscriptions"));
    // Asked of the other node: accepted there, applied where the stream is.
    let added = nodes[1]
        .user("ann")
        .post(&url)
        .json(&json!({"collection": "comments", "snapshot": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 202);
    let mut kinds = Vec::new();
    loop {
        let (kind, data) = stream.json_event().await;
        if kind == "snapshot.done" {
            break;
        }
        if kind == "record.snapshot" {
            kinds.push(data["record_id"].as_str().unwrap().to_owned());
        } else if kind.starts_with("subscription.") {
            assert_eq!(kind, "subscription.added");
            assert_eq!(data, json!({"id": "collection:comments", "snapshot": true}));
            kinds.push(kind);
        }
    }
    assert_eq!(kinds, ["subscription.added", "c0"]);
    nodes[1]
        .create_record("comments", json!({"id": "c1"}))
        .await;
    let event = stream.record_event().await;
    assert!(event.data.contains("\"c1\""), "{}", event.data);
    // Someone else's change is accepted by the other node, which cannot
    // tell, and ignored where the stream is; the owner's bad change is
    // refused on the stream.
    let bobs = nodes[1]
        .user("bob")
        .delete(format!("{url}/collection:posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 202);
    let bad = nodes[1]
        .user("ann")
        .post(&url)
        .json(&json!({"collection": "nothing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 202);
    let (kind, data) = stream.json_event().await;
    assert_eq!(kind, "subscription.refused", "{data}");
    assert_eq!(data["id"], "collection:nothing");
    assert_eq!(data["error"]["code"], "not_found");
    let removed = nodes[1]
        .user("ann")
        .delete(format!("{url}/collection:posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 202);
    let (kind, data) = stream.json_event().await;
    assert_eq!(
        (kind.as_str(), &data),
        ("subscription.removed", &json!({"id": "collection:posts"}))
    );
}

#[tokio::test]
async fn ephemeral_messages_reach_streams_on_every_node_once() {
    let server = SurrealServer::start().await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut config = server.node_config("ephemeral");
        config.channel_rules = r#"{"typing.*": {"durable": false}}"#.into();
        nodes.push(TestApp::spawn_with(config).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let ann = client_with_token(&a.token(json!({"sub": "ann"})));
    let bob = client_with_token(&a.token(json!({"sub": "bob"})));
    let url = "/api/v1/realtime?channels=typing.room,room";
    let mut on_a = open_stream(&ann, a.url(url)).await;
    let mut on_b = open_stream(&bob, b.url(url)).await;
    let publish_durable = |message: &'static str| {
        ann.post(a.url("/api/v1/channels/room/messages"))
            .json(&json!(message))
            .send()
    };
    assert_eq!(publish_durable("before").await.unwrap().status(), 201);
    next_notice(&mut on_a).await;
    let (_, before) = next_notice(&mut on_b).await;
    let before_id = before["id"].as_str().unwrap().to_owned();

    let sent = ann
        .post(a.url("/api/v1/channels/typing.room/messages"))
        .json(&json!({"typing": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    // Then a durable message: each stream gets the ephemeral one first,
    // once (the publishing node delivers it itself, not again from the
    // relay).
    assert_eq!(publish_durable("after").await.unwrap().status(), 201);
    for stream in [&mut on_a, &mut on_b] {
        let (kind, body) = next_notice(stream).await;
        assert_eq!(kind, "channel.message");
        assert_eq!(body["data"]["message"], json!({"typing": true}));
        assert_eq!(body["id"], Value::Null);
        let (_, body) = next_notice(stream).await;
        assert_eq!(
            body["data"]["message"], "after",
            "the ephemeral message came once"
        );
        assert!(body["id"].is_string());
    }

    // A stream resuming on B from before both gets only the durable one.
    let mut resumed = open_stream(&bob, b.url(&format!("{url}&last_event_id={before_id}"))).await;
    let (_, body) = next_notice(&mut resumed).await;
    assert_eq!(body["data"]["message"], "after");
}

/// A fleet started at once on a new database: every node prepares the same
/// tables at the same moment, and the ones whose definitions conflict with
/// another's try again instead of exiting (seen first with the README's
/// two nodes, one of which died of "Transaction write conflict").
#[tokio::test]
async fn nodes_started_together_on_a_new_database_all_come_up() {
    let server = SurrealServer::start().await;
    for round in 0..3 {
        let db = format!("together{round}");
        let nodes = futures::future::join_all(
            (0..6).map(|_| livehub::Server::build(server.node_config(&db))),
        )
        .await;
        for node in nodes {
            if let Err(error) = node {
                panic!("a node did not come up: {error:#}");
            }
        }
    }
}
