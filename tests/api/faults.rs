//! The database's faults, with the real server: killed and restarted on
//! its data, paused, and connections cut in the middle of reads. Nodes
//! recover by themselves, and no committed change is missing for a client.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Follower, HANG_GUARD, TestApp};
use crate::surreal::SurrealServer;

/// Polls `node`'s `/readyz` until it answers `status`.
async fn ready_becomes(node: &TestApp, status: u16) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let response = node
            .anonymous
            .get(node.url("/readyz"))
            .send()
            .await
            .unwrap();
        if response.status() == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writing `posts/{id}` through `node` while its database does not answer
/// gets a clear 503 at once: not after the write timeout (30 s), which the
/// guard is shorter than.
async fn refused_at_once(node: &TestApp, id: &str) {
    let body = json!({ "id": id });
    let write = node.post("/api/v1/collections/posts/records", &body);
    let response = tokio::time::timeout(HANG_GUARD, write)
        .await
        .expect("a write while the database is away does not hang");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(body["error"]["message"], "the database is unavailable");
}

/// Creates `posts/{id}` through `node`, retrying while the node answers 503
/// (it is reconnecting): for after a fault.
async fn create_when_back(node: &TestApp, id: &str) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let response = node
            .post("/api/v1/collections/posts/records", &json!({ "id": id }))
            .await;
        match response.status().as_u16() {
            201 => return,
            503 => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "writes never came back"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            status => panic!("{status}: {}", response.text().await.unwrap()),
        }
    }
}

#[tokio::test]
async fn a_database_killed_and_restarted_loses_no_committed_change() {
    let mut server = SurrealServer::start().await;
    let nodes = server.nodes("crash", 2).await;
    nodes[0].create_collection("posts").await;
    let mut followers = Vec::new();
    for node in &nodes {
        followers.push(Follower::open(node).await);
    }
    let mut committed = BTreeSet::new();
    for n in 0..6 {
        let id = format!("before{n}");
        nodes[n % 2]
            .create_record("posts", json!({ "id": id }))
            .await;
        committed.insert(id);
    }

    server.kill();
    for node in &nodes {
        ready_becomes(node, 503).await;
        refused_at_once(node, "down").await;
        // A new stream is asked to come back later, with a status a browser
        // retries (200 and an ended stream), not one it gives up on.
        let request = node.client.get(node.url("/api/v1/realtime/posts")).send();
        let response = tokio::time::timeout(HANG_GUARD, request)
            .await
            .expect("a stream request while the database is down does not hang")
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let body = tokio::time::timeout(HANG_GUARD, response.text())
            .await
            .expect("the stream ends")
            .unwrap();
        assert!(body.contains("\nretry: 2000\n"), "{body}");
        // A change page is asked to come back later too: a 503, like a
        // write, not a 500 (the page's changefeed read fails).
        let page = node
            .client
            .get(node.url("/api/v1/changes?collections=posts&since=earliest"))
            .send();
        let response = tokio::time::timeout(HANG_GUARD, page)
            .await
            .expect("a change page while the database is down does not hang")
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }

    server.restart().await;
    for node in &nodes {
        ready_becomes(node, 200).await;
    }
    for n in 0..6 {
        let id = format!("after{n}");
        create_when_back(&nodes[n % 2], &id).await;
        committed.insert(id);
    }
    for follower in &mut followers {
        follower.until_seen(&committed).await;
        assert!(!follower.seen.contains(&"down".to_owned()));
    }
}

#[tokio::test]
async fn nodes_recover_from_a_paused_database_without_a_restart() {
    let server = SurrealServer::start().await;
    let nodes = server.nodes("pause", 2).await;
    nodes[0].create_collection("posts").await;
    let mut followers = Vec::new();
    for node in &nodes {
        followers.push(Follower::open(node).await);
    }
    let mut committed = BTreeSet::from(["first".to_owned()]);
    nodes[0]
        .create_record("posts", json!({"id": "first"}))
        .await;

    let paused_at = tokio::time::Instant::now();
    server.pause();
    // A write sent as the database stops: answered once it is back (or
    // refused after the write timeout); either way the answer is true.
    let in_flight = tokio::spawn(
        nodes[1]
            .client
            .post(nodes[1].url("/api/v1/collections/posts/records"))
            .json(&json!({"id": "in_flight"}))
            .send(),
    );
    for node in &nodes {
        ready_becomes(node, 503).await;
        refused_at_once(node, "refused").await;
    }
    tokio::time::sleep_until(paused_at + Duration::from_secs(5)).await;
    server.resume();
    let in_flight = tokio::time::timeout(Duration::from_secs(60), in_flight)
        .await
        .expect("the write in flight is answered")
        .unwrap()
        .unwrap();
    match in_flight.status().as_u16() {
        201 => {
            committed.insert("in_flight".to_owned());
        }
        503 => {}
        status => panic!("the write in flight during the pause: {status}"),
    }

    for n in 0..6 {
        let id = format!("after{n}");
        create_when_back(&nodes[n % 2], &id).await;
        committed.insert(id);
    }
    for follower in &mut followers {
        follower.until_seen(&committed).await;
        assert!(!follower.seen.contains(&"refused".to_owned()));
    }
    for node in &nodes {
        ready_becomes(node, 200).await;
    }
}

/// A TCP relay between nodes and the server whose connections the test
/// can cut, as a network failure would.
struct Relay {
    port: u16,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Relay {
    async fn to(port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
                        continue;
                    };
                    let relay = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                    connections.lock().unwrap().push(relay);
                }
            }
        });
        Relay {
            port: relay_port,
            connections,
            accept,
        }
    }

    /// Drops every open connection (both ends see it closed).
    fn cut(&self) -> usize {
        let cut: Vec<JoinHandle<()>> = self.connections.lock().unwrap().drain(..).collect();
        let count = cut.iter().filter(|relay| !relay.is_finished()).count();
        for relay in cut {
            relay.abort();
        }
        count
    }
}

#[tokio::test]
async fn a_node_whose_connection_breaks_mid_read_neither_skips_nor_repeats() {
    const RECORDS: usize = 3_000;
    let server = SurrealServer::start().await;
    let relay = Relay::to(server.port).await;
    let mut config = server.node_config("cuts");
    config.db = format!("ws://127.0.0.1:{}", relay.port);
    let node = TestApp::spawn_with(config).await;
    node.create_collection("posts").await;
    let mut follower = Follower::open(&node).await;

    // An outside writer, straight to the server, writes large records in
    // batches, so that the node's reads are long; meanwhile its connection
    // is cut again and again.
    let db = server.outside_client("cuts").await;
    let writer = tokio::spawn({
        async move {
            let blob = "x".repeat(4_000);
            for batch in 0..RECORDS / 100 {
                let ids: Vec<String> = (0..100).map(|n| format!("r{}", batch * 100 + n)).collect();
                db.query(
                    "FOR $id IN $ids { CREATE type::record('posts', $id) CONTENT { blob: $blob } }",
                )
                .bind(("ids", ids))
                .bind(("blob", blob.clone()))
                .await
                .unwrap()
                .check()
                .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let mut cuts = 0;
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(150)).await;
        cuts += relay.cut();
    }
    writer.await.unwrap();
    assert!(cuts >= 3, "the node's connection was cut {cuts} times");
    let expected: BTreeSet<String> = (0..RECORDS).map(|n| format!("r{n}")).collect();
    follower.until_seen(&expected).await;
    assert_eq!(follower.seen.len(), RECORDS, "each change once");
}

/// A change page whose changefeed read finds the database gone is
/// `Unavailable` (a 503), as every other path says, not an internal error
/// (a 500). Asked of the engine itself: over HTTP, the node's health watch
/// may notice first and answer for it.
#[tokio::test]
async fn a_change_page_read_that_finds_the_database_gone_is_unavailable() {
    use livehub::engine::Error;
    use livehub::engine::event::EventId;
    use livehub::engine::pages::{PageRequest, Read, Reader};
    use livehub::engine::session::{Plan, Subscribed, subscribe};
    use livehub::engine::shape::Shape;

    let mut server = SurrealServer::start().await;
    let settings = server.node_config("gone").engine_settings();
    let (engine, _background) = livehub::engine::Engine::open(settings).await.unwrap();
    let plan = Plan::every_collection(None);
    let Subscribed {
        interest,
        mut subscription,
        watched,
        ..
    } = subscribe(&engine, &None, &plan, None).await.unwrap();
    server.kill();
    let shape = Shape::default();
    let reader = Reader {
        state: &engine,
        caller: &None,
        interest: &interest,
        watched: &watched,
        shape: &shape,
    };
    let request = PageRequest {
        since: EventId::before_stamp(engine.store.earliest_retained()),
        limit: 10,
        wait: Duration::ZERO,
    };
    let read = tokio::time::timeout(HANG_GUARD, reader.read(&mut subscription, request))
        .await
        .expect("a page read while the database is gone does not hang");
    match read {
        Err(Error::Unavailable) => {}
        Err(other) => panic!("{other:?}"),
        Ok(Read::Page(page)) => panic!("a page of {} events", page.events.len()),
        Ok(Read::Rebind) => panic!("rebind"),
    }
}
