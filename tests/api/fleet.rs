//! An operator's day with a fleet: three nodes on the real SurrealDB
//! server behind the real nginx with the shipped upstream settings, 300
//! streams and a browser under steady writes; every node in turn is shut
//! down (SIGTERM) and started again, then one is killed (SIGKILL). Every
//! client ends with every event once, in order, or an exact live view, and
//! presence keeps no ghost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::binary::stop_binary;
use crate::browser::{Browser, page, token};
use crate::helpers::{HANG_GUARD, client_with_token};
use crate::nginx::nginx_as_shipped;
use crate::nodes::node_binary_on;
use crate::surreal::{SurrealServer, free_port};

const DB: &str = "fleet";
const STREAMS_PER_KIND: usize = 100;
/// Every node's flags: nothing but livehub writes, so no settle window;
/// a dead node's present users run out after 3 s.
const NODE_FLAGS: [&str; 6] = [
    "--settle",
    "0",
    "--presence-ttl",
    "3s",
    "--presence-grace",
    "5s",
];

/// What one stream is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// A live query: snapshot, then changes; ends with an exact view.
    LiveQuery,
    /// Only the records of kind `even`.
    Filtered,
    /// Every change, and its user counted present.
    Presence,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::LiveQuery => "/api/v1/realtime/posts?snapshot=true",
            Kind::Filtered => "/api/v1/realtime/posts?query=kind%20%3D%20%22even%22",
            Kind::Presence => "/api/v1/realtime/posts?presence=true",
        }
    }
}

/// What a stream received, over all its connections.
#[derive(Default)]
struct Seen {
    /// `(event id, type, record id)` of every change, in order.
    changes: Vec<(String, String, String)>,
    /// The live view: record id to its data.
    view: BTreeMap<String, Value>,
    /// From a connection's end to the next one's `connected`.
    gaps: Vec<Duration>,
}

/// Follows one stream through nginx, reconnecting from its last event id
/// whenever it ends or breaks (after the `retry:` its node gave), as an
/// `EventSource` does, until `stop` is true once it is caught up with
/// `until` (a record id whose creation ends the run).
async fn follow(
    base: String,
    token: String,
    kind: Kind,
    seen: Arc<Mutex<Seen>>,
    mut stop: watch::Receiver<bool>,
    connected: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let client = reqwest::Client::new();
    let mut last_id: Option<String> = None;
    let mut ended: Option<Instant> = None;
    let mut first = true;
    loop {
        let mut url = format!("{base}{}", kind.path());
        if kind == Kind::LiveQuery && last_id.is_some() {
            // Resuming: no snapshot, it holds one.
            url = format!("{base}/api/v1/realtime/posts");
        }
        let mut request = client.get(&url).bearer_auth(&token);
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = match request.send().await {
            Ok(response) if response.status() == 200 => response,
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut events = response.bytes_stream().eventsource();
        let mut retry = Duration::from_millis(100);
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = stop.changed() => return,
            };
            let Some(Ok(event)) = next else { break };
            if let Some(delay) = event.retry {
                retry = delay;
            }
            if !event.id.is_empty() {
                last_id = Some(event.id.clone());
            }
            match event.event.as_str() {
                "connected" => {
                    if let Some(at) = ended.take() {
                        seen.lock().unwrap().gaps.push(at.elapsed());
                    }
                    if first {
                        first = false;
                        if kind != Kind::LiveQuery {
                            let _ = connected.send(());
                        }
                    }
                }
                "snapshot.done" => {
                    let _ = connected.send(());
                }
                "record.snapshot" => {
                    let data: Value = serde_json::from_str(&event.data).unwrap();
                    let record = data["data"].clone();
                    let id = record["id"].as_str().unwrap().to_owned();
                    seen.lock().unwrap().view.insert(id, record);
                }
                kind if kind.starts_with("record.") => {
                    let data: Value = serde_json::from_str(&event.data).unwrap();
                    let record_id = data["record_id"].as_str().unwrap().to_owned();
                    let mut seen = seen.lock().unwrap();
                    seen.changes
                        .push((event.id.clone(), kind.to_owned(), record_id.clone()));
                    if kind == "record.deleted" {
                        seen.view.remove(&record_id);
                    } else {
                        seen.view.insert(record_id, data["data"].clone());
                    }
                }
                _ => {}
            }
        }
        ended = Some(Instant::now());
        tokio::time::sleep(retry).await;
    }
}

/// One write, sent until it is answered (the same idempotency key every
/// time, so a write whose answer was lost is not made twice).
async fn write(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    key: &str,
) {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let mut request = client
            .request(method.clone(), url)
            .header("Idempotency-Key", key);
        if let Some(body) = &body {
            request = request.json(body);
        }
        if let Ok(response) = request.send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{method} {url} is answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes every 50 ms through nginx until `stop`: creates (kind `even` or
/// `odd` in turn), updates and deletes. Returns `(type, record id)` of
/// each, in order: what every unfiltered stream must get.
async fn steady_writes(
    base: String,
    admin: reqwest::Client,
    mut stop: watch::Receiver<bool>,
) -> Vec<(String, String)> {
    let mut made = Vec::new();
    let mut alive: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let records = format!("{base}/api/v1/collections/posts/records");
    for step in 0.. {
        if *stop.borrow() {
            break;
        }
        let key = format!("fleet-{step}");
        match step % 4 {
            3 if alive.len() > 10 => {
                let id = alive.pop_front().unwrap();
                write(
                    &admin,
                    reqwest::Method::DELETE,
                    &format!("{records}/{id}"),
                    None,
                    &key,
                )
                .await;
                made.push(("record.deleted".to_owned(), id));
            }
            2 if !alive.is_empty() => {
                let id = alive[step % alive.len()].clone();
                let body = json!({"n": step});
                write(
                    &admin,
                    reqwest::Method::PATCH,
                    &format!("{records}/{id}"),
                    Some(body),
                    &key,
                )
                .await;
                made.push(("record.updated".to_owned(), id));
            }
            _ => {
                let kind = if step % 2 == 0 { "even" } else { "odd" };
                let id = format!("{}{step}", &kind[..1]);
                let body = json!({"id": id, "kind": kind, "n": 0});
                write(&admin, reqwest::Method::POST, &records, Some(body), &key).await;
                made.push(("record.created".to_owned(), id.clone()));
                alive.push_back(id);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => {}
        }
    }
    made
}

/// The JSON body of `GET url`.
async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The records of `posts` as the database has them: id to `n`.
async fn stored(base: &str, admin: &reqwest::Client) -> BTreeMap<String, Value> {
    let list = get_json(
        admin,
        format!("{base}/api/v1/collections/posts/records?limit=1000"),
    )
    .await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            (
                record["id"].as_str().unwrap().to_owned(),
                record["n"].clone(),
            )
        })
        .collect()
}

/// The user ids `GET /api/v1/presence` lists.
async fn present(base: &str, admin: &reqwest::Client) -> BTreeSet<String> {
    let list = get_json(admin, format!("{base}/api/v1/presence")).await;
    list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["user_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (a guard, not a timing assertion) until presence lists `users`.
async fn until_present(base: &str, admin: &reqwest::Client, users: &BTreeSet<String>) {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let listed = present(base, admin).await;
        if &listed == users {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence lists {listed:?}, not {users:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_and_a_killed_node_lose_no_client_anything() {
    let server = SurrealServer::start().await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for &port in &ports {
        nodes.push(Some(node_binary_on(&server, DB, port, &NODE_FLAGS).await));
    }
    let upstreams: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let nginx = nginx_as_shipped(&upstreams.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let base = nginx.url.clone();
    // Tokens for every node (they share the test secret).
    let admin = client_with_token(&token("admin", true));
    let created = admin
        .post(format!("{base}/api/v1/collections"))
        .json(&json!({"name": "posts", "rules": {"read": "true"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    for n in 0..50 {
        let kind = if n % 2 == 0 { "even" } else { "odd" };
        write(
            &admin,
            reqwest::Method::POST,
            &format!("{base}/api/v1/collections/posts/records"),
            Some(json!({"id": format!("seed{n:02}"), "kind": kind, "n": 0})),
            &format!("seed-{n}"),
        )
        .await;
    }

    // 300 streams, each its own user, and a browser.
    let (stop_streams, stop) = watch::channel(false);
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut streams = Vec::new();
    for (index, kind) in [Kind::LiveQuery, Kind::Filtered, Kind::Presence]
        .into_iter()
        .flat_map(|kind| std::iter::repeat_n(kind, STREAMS_PER_KIND))
        .enumerate()
    {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let user = format!("u{index:03}");
        let task = tokio::spawn(follow(
            base.clone(),
            token(&user, false),
            kind,
            seen.clone(),
            stop.clone(),
            connected_tx.clone(),
        ));
        streams.push((kind, user, seen, task));
    }
    for _ in 0..streams.len() {
        tokio::time::timeout(HANG_GUARD, connected_rx.recv())
            .await
            .expect("every stream opens");
    }
    let mut browser = Browser::start().await;
    let script = "window.posts = hub.liveQuery('posts');\n\
        window.view = () => JSON.stringify(posts.getSnapshot().records.map((r) => [r.id, r.n]).sort());";
    browser
        .open(&base, page(&token("browser", false), script))
        .await;
    browser
        .wait("window.ready && posts.getSnapshot().status === 'live'")
        .await;
    let mut everyone: BTreeSet<String> =
        streams.iter().map(|(_, user, _, _)| user.clone()).collect();
    everyone.insert("browser".into());
    until_present(&base, &admin, &everyone).await;

    let (stop_writing, writing) = watch::channel(false);
    let writer = tokio::spawn(steady_writes(base.clone(), admin.clone(), writing));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The rolling restart, in the README's order: one node at a time,
    // the next once the last is ready and nginx tries it again.
    let rolling = Instant::now();
    for (index, &port) in ports.iter().enumerate() {
        let stopping = Instant::now();
        stop_binary(nodes[index].take().unwrap()).await;
        let drained = stopping.elapsed();
        let starting = Instant::now();
        nodes[index] = Some(node_binary_on(&server, DB, port, &NODE_FLAGS).await);
        // For BENCHMARKS.md ("A rolling restart").
        eprintln!(
            "node {index}: SIGTERM to exit {drained:?}, start to ready {:?}",
            starting.elapsed()
        );
        // nginx skips a node for `fail_timeout` (2 s) after it refused one.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    }
    eprintln!("rolling restart of 3 nodes: {:?}", rolling.elapsed());
    let rolled_gaps: Vec<Duration> = streams
        .iter()
        .flat_map(|(_, _, seen, _)| seen.lock().unwrap().gaps.clone())
        .collect();

    // Then one dies.
    let mut killed = nodes[1].take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_writing.send(true).unwrap();
    let made = writer.await.unwrap();
    // The last write: once a stream has it, it has everything before it.
    write(
        &admin,
        reqwest::Method::POST,
        &format!("{base}/api/v1/collections/posts/records"),
        Some(json!({"id": "zend", "kind": "even", "n": 0})),
        "fleet-end",
    )
    .await;
    let mut expected = made;
    expected.push(("record.created".into(), "zend".into()));
    let deadline = Instant::now() + HANG_GUARD;
    for (kind, user, seen, _) in &streams {
        loop {
            let done = seen
                .lock()
                .unwrap()
                .changes
                .last()
                .is_some_and(|(_, _, id)| id == "zend");
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{user} ({kind:?}) got the last write"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let database = stored(&base, &admin).await;
    let even = |id: &str| id.starts_with('e') || id == "zend";
    for (kind, user, seen, _) in &streams {
        let seen = seen.lock().unwrap();
        let ids: Vec<&String> = seen.changes.iter().map(|(id, _, _)| id).collect();
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "{user}: ids in order, none twice"
        );
        let got: Vec<(String, String)> = seen
            .changes
            .iter()
            .map(|(_, kind, id)| (kind.clone(), id.clone()))
            .collect();
        match kind {
            Kind::LiveQuery | Kind::Presence => assert_eq!(
                got, expected,
                "{user} ({kind:?}): every change once, in order"
            ),
            Kind::Filtered => {
                let wanted: Vec<(String, String)> = expected
                    .iter()
                    .filter(|(_, id)| even(id))
                    .cloned()
                    .collect();
                assert_eq!(got, wanted, "{user}: every even change once, in order");
            }
        }
        if *kind == Kind::LiveQuery {
            let view: BTreeMap<String, Value> = seen
                .view
                .iter()
                .map(|(id, record)| (id.clone(), record["n"].clone()))
                .collect();
            assert_eq!(view, database, "{user}: the live view is the database's");
        }
    }
    let want_view: Vec<(String, Value)> = database.into_iter().collect();
    browser
        .wait(&format!(
            "window.view() === {:?}",
            serde_json::to_string(&want_view).unwrap()
        ))
        .await;
    eprintln!(
        "{} changes checked on each of {} streams; the browser opened {} streams",
        expected.len(),
        streams.len(),
        browser.eval("window.streams").await
    );

    // Presence: everyone is still there (the killed node's users came back
    // elsewhere); those who close their streams leave, the killed node's
    // entries with them.
    until_present(&base, &admin, &everyone).await;
    for (_, user, _, task) in streams.iter().take(50) {
        task.abort();
        everyone.remove(user);
    }
    until_present(&base, &admin, &everyone).await;
    stop_streams.send(true).unwrap();

    let mut gaps = rolled_gaps;
    gaps.sort();
    let mut all: Vec<Duration> = streams
        .iter()
        .flat_map(|(_, _, seen, _)| seen.lock().unwrap().gaps.clone())
        .collect();
    all.sort();
    eprintln!(
        "reconnects during the rolling restart: {} (p50 {:?}, p99 {:?}, max {:?}); with the kill: {} (p50 {:?}, max {:?})",
        gaps.len(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().unwrap(),
        all.len(),
        percentile(&all, 0.5),
        all.last().unwrap(),
    );
    for node in nodes.into_iter().flatten() {
        stop_binary(node).await;
    }
}
