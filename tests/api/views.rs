//! Several subscriptions of one collection on one stream: the collection's
//! own and its named views (`posts.recent`), each with its own filter,
//! fields and snapshot, judged one by one (`session::views`).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp};
use crate::subscriptions::stream_as;

/// Each subscription's records, built from its events as a client would:
/// a frame with `subscription` is for that view, one without for the
/// collection's own.
#[derive(Default)]
struct Held {
    views: HashMap<String, BTreeMap<String, Value>>,
    /// Frames per event id, per subscription: a view is sent an event once.
    frames: HashMap<(String, String), usize>,
}

impl Held {
    fn apply(&mut self, kind: &str, data: &Value) {
        let Some(collection) = data["collection"].as_str() else {
            return;
        };
        let subscription = data["subscription"]
            .as_str()
            .map_or_else(|| format!("collection:{collection}"), str::to_owned);
        if let Some(id) = data["id"].as_str() {
            *self
                .frames
                .entry((subscription.clone(), id.to_owned()))
                .or_default() += 1;
        }
        let view = self.views.entry(subscription).or_default();
        let record = data["record_id"].as_str().map(str::to_owned);
        match (kind, record) {
            ("record.deleted", Some(id)) => {
                view.remove(&id);
            }
            (_, Some(id)) if data["left"] == json!(true) => {
                view.remove(&id);
            }
            ("record.snapshot" | "record.created" | "record.updated", Some(id)) => {
                view.insert(id, data["data"].clone());
            }
            _ => {}
        }
    }

    /// Applies events up to (and with) the first of `kind` whose record is
    /// `record` (any record when `None`).
    async fn until(&mut self, stream: &mut SseClient, kind: &str, record: Option<&str>) -> Value {
        loop {
            let (event, data) = stream.json_event().await;
            self.apply(&event, &data);
            if event == kind && record.is_none_or(|id| data["record_id"] == json!(id)) {
                return data;
            }
        }
    }

    fn ids(&self, subscription: &str) -> Vec<String> {
        self.views
            .get(subscription)
            .map(|view| view.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn assert_each_event_once(&self) {
        for ((subscription, id), count) in &self.frames {
            assert_eq!(*count, 1, "{subscription} was sent {id} {count} times");
        }
    }
}

/// The ids of the records of `posts` that match `filter` now.
async fn matching(app: &TestApp, filter: &str) -> Vec<String> {
    let response = app
        .client
        .get(app.url("/api/v1/collections/posts/records"))
        .query(&[("filter", filter), ("limit", "1000")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut ids: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Creates the post `id`, or replaces it if it exists.
async fn write(app: &TestApp, id: &str, mut body: Value) {
    let mut response = app
        .put(&format!("/api/v1/collections/posts/records/{id}"), &body)
        .await;
    if response.status() == 404 {
        body["id"] = json!(id);
        response = app.post("/api/v1/collections/posts/records", &body).await;
    }
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn views_of_one_collection_share_a_stream_and_each_stays_exact() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    write(&app, "p1", json!({"tag": "a", "n": 1})).await;
    write(&app, "p2", json!({"tag": "b", "n": 5})).await;
    let path = "/api/v1/realtime?collections=posts,posts.big&filter.posts=tag%20%3D%20%22a%22\
                &filter.posts.big=n%20%3E%203&fields.posts.big=n&snapshot=true";
    let (mut stream, _, _) = stream_as(&app.client, &app, path).await;
    let mut held = Held::default();
    let done = held.until(&mut stream, "snapshot.done", None).await;
    assert_eq!(done["records"], 2);
    assert_eq!(held.ids("collection:posts"), ["p1"]);
    assert_eq!(held.ids("collection:posts.big"), ["p2"]);
    // The view's records have its fields only; the collection's own, all.
    assert_eq!(
        held.views["collection:posts.big"]["p2"],
        json!({"id": "p2", "n": 5})
    );
    assert_eq!(held.views["collection:posts"]["p1"]["tag"], "a");

    // In both: one frame each, with the same event id.
    write(&app, "p1", json!({"tag": "a", "n": 10})).await;
    // From the view to the collection's own: the view is told it left.
    write(&app, "p2", json!({"tag": "a", "n": 0})).await;
    // In neither: nothing at all.
    write(&app, "p3", json!({"tag": "c", "n": 0})).await;
    // Out of both.
    write(&app, "p1", json!({"tag": "c", "n": 0})).await;
    write(&app, "p5", json!({"tag": "b", "n": 9})).await;
    held.until(&mut stream, "record.created", Some("p5")).await;
    for (subscription, filter) in [
        ("collection:posts", "tag = \"a\""),
        ("collection:posts.big", "n > 3"),
    ] {
        assert_eq!(
            held.ids(subscription),
            matching(&app, filter).await,
            "{subscription}"
        );
    }
    assert_eq!(
        held.views["collection:posts.big"]["p5"],
        json!({"id": "p5", "n": 9})
    );
    held.assert_each_event_once();
    assert!(
        !held.frames.keys().any(|(_, id)| id.is_empty()),
        "every change has an id"
    );
}

#[tokio::test]
async fn views_are_added_and_removed_on_an_open_stream() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    for n in 1..=4 {
        write(&app, &format!("p{n}"), json!({"n": n})).await;
    }
    let (mut stream, id, secret) = stream_as(&app.anonymous, &app, "/api/v1/realtime/posts").await;
    let secret = secret.unwrap();
    let subscriptions = app.url(&format!("/api/v1/realtime/connections/{id}/subscriptions"));
    let add = |body: Value| {
        app.anonymous
            .post(&subscriptions)
            .header("x-connection-secret", &secret)
            .json(&body)
            .send()
    };
    let top = json!({
        "collection": "posts", "view": "top", "snapshot": true,
        "snapshot_limit": 2, "snapshot_sort": "-n",
    });
    let answer = add(top.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["subscription"]["id"], "collection:posts.top");
    let mut held = Held::default();
    let added = held.until(&mut stream, "subscription.added", None).await;
    assert_eq!(added["id"], "collection:posts.top");
    held.until(&mut stream, "snapshot.done", None).await;
    assert_eq!(held.ids("collection:posts.top"), ["p3", "p4"]);

    // The same view twice is a conflict; a bad name or a view of nothing, a 400.
    assert_eq!(add(top).await.unwrap().status(), 409);
    let bad = add(json!({"collection": "posts", "view": "no spaces"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let message = bad.json::<Value>().await.unwrap()["error"]["message"].to_string();
    assert!(message.contains("view name"), "{message}");
    let alone = add(json!({"channel": "x", "view": "v"})).await.unwrap();
    assert_eq!(alone.status(), 400);

    // Without the collection's own subscription, the view goes on.
    let removed = app
        .anonymous
        .delete(format!("{subscriptions}/collection:posts"))
        .header("x-connection-secret", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    held.until(&mut stream, "subscription.removed", None).await;
    write(&app, "p9", json!({"n": 9})).await;
    let event = held.until(&mut stream, "record.created", Some("p9")).await;
    assert_eq!(event["subscription"], "collection:posts.top");
    // Sent once, for the view only.
    assert!(
        held.frames
            .keys()
            .all(|(subscription, _)| subscription != "collection:posts"
                || !held.views["collection:posts"].contains_key("p9"))
    );
    held.assert_each_event_once();
}

#[tokio::test]
async fn a_stream_with_views_resumes_each_from_the_same_event_id() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    let path = "/api/v1/realtime?collections=posts.odd,posts.even\
                &filter.posts.odd=n%20IN%20%5B1%2C3%2C5%5D&filter.posts.even=n%20IN%20%5B2%2C4%5D";
    let (mut stream, _, _) = stream_as(&app.client, &app, path).await;
    write(&app, "a", json!({"n": 1})).await;
    let mut held = Held::default();
    let first = held.until(&mut stream, "record.created", Some("a")).await;
    let last_id = first["id"].as_str().unwrap().to_owned();
    drop(stream);
    // While it is away: `a` moves from odd to even, `b` arrives in odd.
    write(&app, "a", json!({"n": 2})).await;
    write(&app, "b", json!({"n": 3})).await;
    write(&app, "z", json!({"n": 5})).await;
    let mut stream = app.stream(path, Some(&last_id)).await;
    stream.connected().await;
    held.until(&mut stream, "record.created", Some("z")).await;
    assert_eq!(held.ids("collection:posts.odd"), ["b", "z"]);
    assert_eq!(held.ids("collection:posts.even"), ["a"]);
    held.assert_each_event_once();
}

#[tokio::test]
async fn views_in_a_url_are_checked() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    for (path, said) in [
        ("/api/v1/realtime?collections=posts.no%20space", "view name"),
        (
            "/api/v1/realtime?collections=posts&filter.posts.other=n%20%3D%201",
            "filter.posts.other",
        ),
        (
            "/api/v1/changes?collections=posts.v&since=earliest",
            "only a stream carries",
        ),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(said), "{path}: {message}");
    }
}
