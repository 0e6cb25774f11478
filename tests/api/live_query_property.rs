//! The property of live queries: whatever the writes and whenever clients
//! connect, drop and resume, a client that applies its stream's events
//! (snapshot, changes, patches) holds exactly what a list would show it.
//!
//! Pre-existing records, three concurrent writers making random creates,
//! merges, replacements and deletes, and eight clients with random users
//! (a per-user read rule), filters, projections and diff modes that open
//! snapshot streams at random moments, drop them at random points (during
//! snapshots too) and resume with the last id they had, as `EventSource`
//! does. Queues are small, so the hub also drops slow streams. At the end,
//! every client's view must equal the server's list for its user, filter
//! and fields.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, now_secs, test_config};
use crate::live_queries::View;

const USERS: [&str; 4] = ["ann", "bob", "cy", "root"];
const FILTERS: [&str; 5] = [
    "",
    "n > 4",
    "tag = \"a\"",
    "n < 3 || tag = \"b\"",
    "public = true",
];
const FIELDS: [&str; 3] = ["", "n,tag", "title,meta.k"];
/// Record ids writers pick from (some exist, some do not).
const IDS: u32 = 800;

fn random_record(rng: &mut StdRng) -> Value {
    let tag = ["a", "b", "c"][rng.random_range(0..3)];
    json!({
        "owner": USERS[rng.random_range(0..3)],
        "public": rng.random_bool(0.4),
        "n": rng.random_range(0..10),
        "tag": tag,
        "title": format!("t{}", rng.random_range(0..1000)),
        "meta": {"k": rng.random_range(0..5), "other": "x"},
    })
}

/// One client's query: its user, filter (with `|| marker = true`, so the
/// end marker reaches every client), fields and diff mode.
#[derive(Debug, Clone)]
struct Query {
    user: &'static str,
    filter: String,
    fields: &'static str,
    diff: bool,
}

impl Query {
    fn random(rng: &mut StdRng) -> Query {
        let filter = FILTERS[rng.random_range(0..FILTERS.len())];
        let filter = if filter.is_empty() {
            "marker = true || n >= 0".to_owned()
        } else {
            format!("marker = true || ({filter})")
        };
        Query {
            user: USERS[rng.random_range(0..USERS.len())],
            filter,
            fields: FIELDS[rng.random_range(0..FIELDS.len())],
            diff: rng.random_bool(0.5),
        }
    }

    fn params(&self) -> String {
        let mut params = format!("query={}&diff={}", urlencode(&self.filter), self.diff);
        if !self.fields.is_empty() {
            params.push_str(&format!("&fields={}", self.fields));
        }
        params
    }
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).unwrap()[1..].to_owned()
}

async fn writer(app: Arc<TestApp>, seed: u64, ops: u32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = app.url("/api/v1/collections/docs/records");
    for _ in 0..ops {
        let id = format!("r{:03}", rng.random_range(0..IDS));
        let record = random_record(&mut rng);
        let request = match rng.random_range(0..10) {
            0..=2 => app
                .client
                .post(&base)
                .json(&json!({"id": id, "owner": record["owner"],
                "public": record["public"], "n": record["n"], "tag": record["tag"],
                "title": record["title"], "meta": record["meta"]})),
            3..=5 => {
                let field = ["n", "tag", "public", "title"][rng.random_range(0..4)];
                app.client
                    .patch(format!("{base}/{id}"))
                    .json(&json!({ field: record[field] }))
            }
            6 => app
                .client
                .patch(format!("{base}/{id}"))
                .json(&json!({"meta": {"k": record["meta"]["k"]}})),
            7 => app.client.put(format!("{base}/{id}")).json(&record),
            _ => app.client.delete(format!("{base}/{id}")),
        };
        let status = request.send().await.unwrap().status();
        assert!(
            status.is_success() || status == 404 || status == 409,
            "a writer got {status}"
        );
    }
}

/// One client: connects and drops at random while `writing`, then follows
/// its stream until the end marker, and returns its view.
async fn client(app: Arc<TestApp>, seed: u64, query: Query, writing: Arc<AtomicBool>) -> View {
    let mut rng = StdRng::seed_from_u64(seed);
    let token = app.token(json!({"sub": query.user, "role": if query.user == "root" {"admin"} else {"user"}, "exp": now_secs() + 3600}));
    let http = crate::helpers::client_with_token(&token);
    let url = app.url(&format!(
        "/api/v1/realtime/docs?snapshot=true&{}",
        query.params()
    ));
    let mut view = View::default();
    tokio::time::sleep(std::time::Duration::from_millis(rng.random_range(0..200))).await;
    loop {
        let mut request = http.get(&url);
        if let Some(id) = &view.position {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{query:?}");
        let mut stream = SseClient::new(response);
        if !writing.load(Ordering::SeqCst) {
            // The last connection: follow to the marker.
            assert!(
                view.follow(&mut stream, |view| view.snapshot_done
                    && view.records.contains_key("marker"))
                    .await,
                "the stream ended before the marker ({query:?})"
            );
            return view;
        }
        // Drop after a random number of events (in a snapshot, too), after
        // a random time, or when the stream ends (a full queue).
        // Mostly long enough to finish the snapshot and take changes.
        let mut budget = if rng.random_bool(0.3) {
            rng.random_range(1..80)
        } else {
            u32::MAX
        };
        let patience = std::time::Duration::from_millis(rng.random_range(50..800));
        let follow = view.follow(&mut stream, |_| {
            budget -= 1;
            budget == 0
        });
        let _ = tokio::time::timeout(patience, follow).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_view_equals_the_list_whatever_the_writes_and_disconnects() {
    let seed: u64 = std::env::var("LIVE_QUERY_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(20261202);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut config = test_config();
    // Small queues: slow streams are dropped by the hub and resume.
    config.stream_buffer = 32;
    let app = Arc::new(TestApp::spawn_with(config).await);
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "docs", "rules": {"read": "owner = $auth.sub || public = true"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    for n in 0..IDS / 2 {
        let mut record = random_record(&mut rng);
        record["id"] = json!(format!("r{:03}", n * 2));
        app.create_record("docs", record).await;
    }
    let writing = Arc::new(AtomicBool::new(true));
    let mut queries: Vec<Query> = (0..8).map(|_| Query::random(&mut rng)).collect();
    // Half the clients take diffs, and every projection is used.
    for (n, query) in queries.iter_mut().enumerate() {
        query.diff = n % 2 == 1;
        query.fields = FIELDS[n % FIELDS.len()];
    }
    // One client sees everything, so its snapshot spans several pages.
    queries[0].user = "root";
    queries[0].filter = "marker = true || n >= 0".into();
    let clients: Vec<_> = queries
        .iter()
        .enumerate()
        .map(|(n, query)| {
            tokio::spawn(client(
                app.clone(),
                seed + 100 + n as u64,
                query.clone(),
                writing.clone(),
            ))
        })
        .collect();
    let writers: Vec<_> = (0..3)
        .map(|n| tokio::spawn(writer(app.clone(), seed + n, 300)))
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    app.create_record(
        "docs",
        json!({"id": "marker", "marker": true, "public": true}),
    )
    .await;
    let mut applied: BTreeMap<String, u32> = BTreeMap::new();
    for (client, query) in clients.into_iter().zip(queries) {
        let view = client.await.unwrap();
        for (kind, count) in &view.counts {
            *applied.entry(kind.clone()).or_default() += count;
        }
        let token = app.token(json!({"sub": query.user, "role": if query.user == "root" {"admin"} else {"user"}, "exp": now_secs() + 3600}));
        let mut list = format!(
            "/api/v1/collections/docs/records?limit=1000&filter={}",
            urlencode(&query.filter)
        );
        if !query.fields.is_empty() {
            list.push_str(&format!("&fields={}", query.fields));
        }
        let body: Value = crate::helpers::client_with_token(&token)
            .get(app.url(&list))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let expected: BTreeMap<String, Value> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| (item["id"].as_str().unwrap().to_owned(), item.clone()))
            .collect();
        let differences: Vec<String> = view
            .records
            .keys()
            .chain(expected.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|id| view.records.get(*id) != expected.get(*id))
            .map(|id| {
                format!(
                    "{id}: view {:?}, list {:?}",
                    view.records.get(id),
                    expected.get(id)
                )
            })
            .collect();
        assert!(
            differences.is_empty(),
            "seed {seed}: the view of {query:?} differs from the list ({} of {} records):\n{}",
            differences.len(),
            expected.len(),
            differences.join("\n")
        );
    }
    // The run exercised what it claims to: every client finished a
    // snapshot, some reconnected, records left, patches went out.
    let least = [
        ("snapshot.done", 8),
        ("connected", 9),
        ("record.snapshot", 1),
        ("patch", 1),
        ("record.deleted", 1),
    ];
    for (kind, least) in least {
        let count = applied.get(kind).copied().unwrap_or(0);
        assert!(count >= least, "seed {seed}: {count} {kind}: {applied:?}");
    }
}
