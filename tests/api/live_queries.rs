//! Live queries: where a new stream starts, snapshots and their seam with
//! live changes, list positions, projections and diffs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, test_config};

/// A client's copy of a live query's result, built from events the way the
/// README tells clients to.
#[derive(Default, Debug)]
pub struct View {
    pub records: BTreeMap<String, Value>,
    /// The position of the last event with an id (for resuming).
    pub position: Option<String>,
    pub snapshot_done: bool,
    /// Events applied, by type (and `patch` for patches).
    pub counts: BTreeMap<String, u32>,
}

impl View {
    /// Applies one event; returns whether it was a record event.
    pub fn apply(&mut self, kind: &str, data: &Value) -> bool {
        let counted = if data.get("patch").is_some() {
            "patch"
        } else {
            kind
        };
        *self.counts.entry(counted.to_owned()).or_default() += 1;
        let record_id = data["record_id"].as_str().map(str::to_owned);
        match kind {
            "record.snapshot" | "record.created" | "record.updated" => {
                let id = record_id.expect("record events carry record_id");
                if data.get("left") == Some(&json!(true)) {
                    self.records.remove(&id);
                } else if let Some(patch) = data.get("patch") {
                    // A patch for a record the client lacks is ignored: a
                    // later event brings it whole, or it left.
                    if let Some(record) = self.records.get_mut(&id) {
                        merge(record, patch);
                    }
                } else {
                    self.records.insert(id, data["data"].clone());
                }
            }
            "record.deleted" => {
                self.records.remove(&record_id.expect("record_id"));
            }
            "snapshot.done" => self.snapshot_done = true,
            // A snapshot follows: the view starts again.
            "connected" if data["snapshot"] == true => {
                self.records.clear();
                self.snapshot_done = false;
            }
            "reset" => {
                self.records.clear();
                self.snapshot_done = false;
            }
            _ => return false,
        }
        true
    }

    /// Reads the stream until `until` holds (or the stream ends: `false`).
    pub async fn follow(
        &mut self,
        stream: &mut SseClient,
        mut until: impl FnMut(&View) -> bool,
    ) -> bool {
        while !until(self) {
            let Some(event) = stream.next().await else {
                return false;
            };
            let data: Value = serde_json::from_str(&event.data).expect("JSON data");
            if !event.id.is_empty() {
                self.position = Some(event.id.clone());
            }
            self.apply(&event.event, &data);
        }
        true
    }
}

/// RFC 7396 MergePatch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let fields = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

async fn records_of(app: &TestApp, path: &str) -> BTreeMap<String, Value> {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let body: Value = response.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["id"].as_str().unwrap().to_owned(), item.clone()))
        .collect()
}

#[tokio::test]
async fn a_stream_opened_right_after_a_write_never_sends_that_write() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    for round in 0..30 {
        let before = format!("before{round}");
        app.create_record("posts", json!({ "id": before })).await;
        let mut stream = app.stream("/api/v1/realtime/posts", None).await;
        stream.connected().await;
        let after = format!("after{round}");
        app.create_record("posts", json!({ "id": after })).await;
        let first = stream.record_event().await;
        let data: Value = serde_json::from_str(&first.data).unwrap();
        assert_eq!(
            data["record_id"], after,
            "round {round}: the first record event must be the write made after the stream opened"
        );
    }
    // Updates and deletes answered before the stream are not sent either.
    for round in 0..10 {
        let id = format!("before{round}");
        let response = app
            .patch(
                &format!("/api/v1/collections/posts/records/{id}"),
                &json!({"n": round}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let response = app
            .delete(&format!("/api/v1/collections/posts/records/after{round}"))
            .await;
        assert_eq!(response.status(), 204);
        let mut stream = app.stream("/api/v1/realtime/posts", None).await;
        stream.connected().await;
        app.create_record("posts", json!({ "id": format!("marker{round}") }))
            .await;
        let first: Value = serde_json::from_str(&stream.record_event().await.data).unwrap();
        assert_eq!(
            first["record_id"],
            format!("marker{round}"),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_snapshot_sends_the_matching_readable_records_then_live_changes() {
    let app = TestApp::spawn().await;
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "posts", "rules": {"read": "owner = $auth.sub", "create": "true"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    for (id, owner, status) in [
        ("a", "ann", "published"),
        ("b", "ann", "draft"),
        ("c", "bob", "published"),
        ("d", "ann", "published"),
    ] {
        app.create_record("posts", json!({"id": id, "owner": owner, "status": status}))
            .await;
    }
    let ann = app.user("ann");
    let response = ann
        .get(app.url("/api/v1/realtime/posts?snapshot=true&query=status%20%3D%20%22published%22"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::new(response);
    let connected = stream.connected().await;
    assert!(
        connected.id.is_empty(),
        "a snapshot stream's position comes with snapshot.done"
    );
    let mut snapshot = Vec::new();
    let done = loop {
        let event = stream.event().await;
        let data: Value = serde_json::from_str(&event.data).unwrap();
        match event.event.as_str() {
            "record.snapshot" => {
                assert!(event.id.is_empty(), "snapshot events carry no id");
                assert_eq!(data["type"], "record.snapshot");
                assert_eq!(data["collection"], "posts");
                assert_eq!(data["id"], Value::Null);
                snapshot.push(data["record_id"].as_str().unwrap().to_owned());
            }
            "snapshot.done" => break (event, data),
            other => panic!("unexpected {other} during the snapshot"),
        }
    };
    assert_eq!(
        snapshot,
        ["a", "d"],
        "published, and readable by ann, in id order"
    );
    let (done, body) = done;
    assert!(!done.id.is_empty(), "snapshot.done carries the position");
    assert_eq!(body["position"], done.id.as_str());
    assert_eq!(body["records"], 2);
    app.create_record(
        "posts",
        json!({"id": "e", "owner": "ann", "status": "published"}),
    )
    .await;
    let live: Value = serde_json::from_str(&stream.record_event().await.data).unwrap();
    assert_eq!(
        (live["type"].as_str(), live["record_id"].as_str()),
        (Some("record.created"), Some("e"))
    );
}

#[tokio::test]
async fn a_snapshot_stays_exact_while_writes_run_during_it() {
    let app = TestApp::spawn().await;
    app.create_collection("items").await;
    // Enough records for several pages.
    for n in 0..600 {
        app.create_record(
            "items",
            json!({"id": format!("i{n:04}"), "n": n, "hot": n % 2 == 0}),
        )
        .await;
    }
    let writer = {
        let client = app.client.clone();
        let base = app.url("/api/v1/collections/items/records");
        tokio::spawn(async move {
            for step in 0..300u32 {
                let n = (step * 7919) % 600;
                let id = format!("i{n:04}");
                let request = match step % 4 {
                    // Into or out of the filter.
                    0 | 1 => client
                        .patch(format!("{base}/{id}"))
                        .json(&json!({"hot": step % 4 == 0, "step": step})),
                    2 => client.delete(format!("{base}/{id}")),
                    _ => client
                        .post(&base)
                        .json(&json!({"id": format!("new{step}"), "n": step, "hot": true})),
                };
                let status = request.send().await.unwrap().status();
                assert!(status.is_success() || status == 404, "{status}");
            }
        })
    };
    let mut stream = app
        .stream(
            "/api/v1/realtime/items?snapshot=true&query=hot%20%3D%20true",
            None,
        )
        .await;
    let mut view = View::default();
    assert!(view.follow(&mut stream, |view| view.snapshot_done).await);
    writer.await.unwrap();
    // A marker write: once it arrives, every change before it has too.
    app.create_record("items", json!({"id": "zzz", "hot": true}))
        .await;
    assert!(
        view.follow(&mut stream, |view| view.records.contains_key("zzz"))
            .await
    );
    let expected = records_of(
        &app,
        "/api/v1/collections/items/records?limit=1000&filter=hot%20%3D%20true",
    )
    .await;
    assert_eq!(view.records, expected);
}

#[tokio::test]
async fn a_reconnect_during_a_snapshot_takes_it_again_and_one_after_it_resumes() {
    let mut config = test_config();
    config.max_snapshot = 5_000;
    let app = TestApp::spawn_with(config).await;
    app.create_collection("items").await;
    for n in 0..300 {
        app.create_record("items", json!({"id": format!("i{n:04}")}))
            .await;
    }
    // Cut off after a few snapshot records.
    let mut stream = app
        .stream("/api/v1/realtime/items?snapshot=true", None)
        .await;
    let connected = stream.connected().await;
    let mut partial = View::default();
    assert!(
        partial
            .follow(&mut stream, |view| view.records.len() >= 5)
            .await
    );
    assert!(!partial.snapshot_done);
    drop(stream);
    // The browser has no id yet (neither `connected` nor a snapshot event
    // had one), so it reconnects without one: the snapshot starts again.
    assert!(connected.id.is_empty());
    app.delete("/api/v1/collections/items/records/i0000").await;
    let mut stream = app
        .stream("/api/v1/realtime/items?snapshot=true", None)
        .await;
    let mut view = View::default();
    assert!(view.follow(&mut stream, |view| view.snapshot_done).await);
    assert_eq!(view.records.len(), 299);
    let position = view.position.clone().expect("snapshot.done has an id");
    drop(stream);
    // After it, `Last-Event-ID` skips the snapshot and replays the gap.
    app.create_record("items", json!({"id": "late"})).await;
    let mut stream = app
        .stream("/api/v1/realtime/items?snapshot=true", Some(&position))
        .await;
    let connected: Value = serde_json::from_str(&stream.connected().await.data).unwrap();
    assert_eq!(connected["snapshot"], false);
    // The delete may come again (it can lie after the snapshot's position,
    // and deleting again is harmless); then the write made after it.
    let (mut kind, mut data) = stream.json_event().await;
    if kind == "record.deleted" {
        assert_eq!(data["record_id"], "i0000");
        (kind, data) = stream.json_event().await;
    }
    assert_eq!(
        (kind.as_str(), data["record_id"].as_str()),
        ("record.created", Some("late"))
    );
}

#[tokio::test]
async fn a_reset_on_a_snapshot_stream_is_followed_by_a_fresh_snapshot() {
    let app = TestApp::spawn().await;
    app.create_collection("items").await;
    for id in ["a", "b"] {
        app.create_record("items", json!({ "id": id })).await;
    }
    // An id from before this database existed cannot be served.
    let stale = "000000000000000100000000";
    let mut stream = app
        .stream("/api/v1/realtime/items?snapshot=true", Some(stale))
        .await;
    stream.connected().await;
    let (kind, reset) = stream.json_event().await;
    assert_eq!(kind, "reset");
    assert_eq!(reset["reason"], "before_database");
    let mut view = View::default();
    view.records.insert("stale".into(), json!({}));
    view.apply(&kind, &reset);
    assert!(view.follow(&mut stream, |view| view.snapshot_done).await);
    assert_eq!(view.records.keys().collect::<Vec<_>>(), ["a", "b"]);
}

#[tokio::test]
async fn a_snapshot_can_take_the_first_n_by_a_sort_and_refuses_too_many() {
    let mut config = test_config();
    config.max_snapshot = 5;
    let app = TestApp::spawn_with(config).await;
    app.create_collection("chat").await;
    for n in 0..8 {
        app.create_record("chat", json!({"id": format!("m{n}"), "at": n}))
            .await;
    }
    let response = app.get("/api/v1/realtime/chat?snapshot=true").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "snapshot_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("snapshot_limit")
    );

    let mut stream = app
        .stream(
            "/api/v1/realtime/chat?snapshot=true&snapshot_limit=3&snapshot_sort=-at",
            None,
        )
        .await;
    stream.connected().await;
    let mut ids = Vec::new();
    loop {
        let (kind, data) = stream.json_event().await;
        if kind == "snapshot.done" {
            break;
        }
        ids.push(data["record_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["m7", "m6", "m5"], "the latest three, in sort order");
    // What follows is every matching change.
    app.create_record("chat", json!({"id": "m8", "at": 8}))
        .await;
    let (kind, data) = stream.json_event().await;
    assert_eq!(
        (kind.as_str(), data["record_id"].as_str()),
        ("record.created", Some("m8"))
    );

    for bad in [
        "/api/v1/realtime/chat?snapshot=true&snapshot_limit=0",
        "/api/v1/realtime/chat?snapshot=true&snapshot_limit=1001",
        "/api/v1/realtime/chat?snapshot_limit=3",
        "/api/v1/realtime?snapshot=true",
        "/api/v1/realtime/chat?snapshot=true&snapshot_limit=3&snapshot_sort=a..b",
        "/api/v1/realtime/chat?snapshot=true&snapshot_sort=-at",
        "/api/v1/realtime/chat?snapshot=true&snapshot_limit=3&diff=true",
    ] {
        let response = app.get(bad).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn the_first_n_by_a_sort_break_ties_by_id_in_its_own_direction() {
    let app = TestApp::spawn().await;
    app.create_collection("chat").await;
    for (id, rank) in [("n5", 1), ("n9", 2), ("n1", 1), ("n3", 2), ("n7", 1)] {
        app.create_record("chat", json!({"id": id, "rank": rank}))
            .await;
    }
    // The cut falls among ties, so the tie-break picks who is in as well
    // as the order; the record list says the same.
    for (sort, limit, expected) in [
        ("rank", 2, ["n1", "n5"].as_slice()),
        ("rank", 4, &["n1", "n5", "n7", "n3"]),
        ("-rank", 3, &["n9", "n3", "n7"]),
        ("-rank", 4, &["n9", "n3", "n7", "n5"]),
    ] {
        let mut stream = app
            .stream(
                &format!(
                    "/api/v1/realtime/chat?snapshot=true&snapshot_limit={limit}&snapshot_sort={sort}"
                ),
                None,
            )
            .await;
        stream.connected().await;
        let mut ids = Vec::new();
        loop {
            let (kind, data) = stream.json_event().await;
            if kind == "snapshot.done" {
                break;
            }
            ids.push(data["record_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            ids, expected,
            "snapshot_sort={sort}, snapshot_limit={limit}"
        );
        let page: Value = app
            .get(&format!(
                "/api/v1/collections/chat/records?sort={sort}&limit={limit}"
            ))
            .await
            .json()
            .await
            .unwrap();
        let listed: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, expected, "sort={sort}, limit={limit}");
    }
}

#[tokio::test]
async fn a_list_position_hands_off_to_a_stream_without_a_gap() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    app.create_record("posts", json!({"id": "a"})).await;
    let response = app.get("/api/v1/collections/posts/records").await;
    let list: Value = response.json().await.unwrap();
    let position = list["position"]
        .as_str()
        .expect("a list has a position")
        .to_owned();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Written after the list, before the stream.
    app.create_record("posts", json!({"id": "b"})).await;
    app.patch(
        "/api/v1/collections/posts/records/a",
        &json!({"seen": true}),
    )
    .await;
    let mut stream = app
        .stream(
            &format!("/api/v1/realtime/posts?last_event_id={position}"),
            None,
        )
        .await;
    stream.connected().await;
    let mut view = View::default();
    for item in list["items"].as_array().unwrap() {
        view.records
            .insert(item["id"].as_str().unwrap().into(), item.clone());
    }
    assert!(
        view.follow(&mut stream, |view| view.records.len() == 2
            && view.records["a"].get("seen").is_some())
            .await
    );
    assert_eq!(
        view.records,
        records_of(&app, "/api/v1/collections/posts/records").await
    );
}

#[tokio::test]
async fn fields_project_streams_lists_and_gets() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let record =
        json!({"id": "p1", "title": "T", "body": "long", "author": {"name": "ann", "email": "e"}});
    app.create_record("posts", record).await;
    let projected = json!({"id": "p1", "title": "T", "author": {"name": "ann"}});
    let fields = "fields=title,author.name";

    let list: Value = app
        .get(&format!("/api/v1/collections/posts/records?{fields}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0], projected);
    let one: Value = app
        .get(&format!("/api/v1/collections/posts/records/p1?{fields}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one, projected);

    // Snapshot and live events; the filter judges the whole record.
    let mut stream = app
        .stream(
            &format!("/api/v1/realtime/posts?snapshot=true&{fields}&query=body%20%3D%20%22long%22"),
            None,
        )
        .await;
    stream.connected().await;
    let (kind, snap) = stream.json_event().await;
    assert_eq!(
        (kind.as_str(), &snap["data"]),
        ("record.snapshot", &projected)
    );
    let (kind, done) = stream.json_event().await;
    assert_eq!(kind, "snapshot.done");
    app.patch(
        "/api/v1/collections/posts/records/p1",
        &json!({"title": "U"}),
    )
    .await;
    let (kind, live) = stream.json_event().await;
    assert_eq!(kind, "record.updated");
    assert_eq!(
        live["data"],
        json!({"id": "p1", "title": "U", "author": {"name": "ann"}})
    );
    drop(stream);

    // Replayed events too.
    let position = done["position"].as_str().unwrap();
    let mut stream = app
        .stream(&format!("/api/v1/realtime/posts?{fields}"), Some(position))
        .await;
    stream.connected().await;
    let (_, replayed) = stream.json_event().await;
    assert_eq!(replayed["data"], live["data"]);
    assert!(replayed["data"].get("body").is_none());

    let response = app.get("/api/v1/realtime/posts?fields=a,,b").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn diffs_send_merge_patches_for_records_the_client_holds() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let mut fields = serde_json::Map::new();
    fields.insert("id".into(), json!("p"));
    fields.insert("live".into(), json!(true));
    for n in 0..19 {
        fields.insert(format!("f{n}"), json!(format!("value {n}")));
    }
    app.create_record("posts", Value::Object(fields.clone()))
        .await;
    let mut stream = app
        .stream(
            "/api/v1/realtime/posts?snapshot=true&diff=true&query=live%20%3D%20true",
            None,
        )
        .await;
    let mut view = View::default();
    assert!(view.follow(&mut stream, |view| view.snapshot_done).await);

    // One field changes: a patch of that field alone.
    app.patch(
        "/api/v1/collections/posts/records/p",
        &json!({"f3": "changed"}),
    )
    .await;
    let event = stream.record_event().await;
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["patch"], json!({"f3": "changed"}));
    assert!(data.get("data").is_none());
    view.apply("record.updated", &data);
    // A field removed (PUT without it) is `null` in the patch.
    let mut replaced = fields.clone();
    replaced.remove("f0");
    replaced.insert("f3".into(), json!("changed"));
    app.put(
        "/api/v1/collections/posts/records/p",
        &Value::Object(replaced),
    )
    .await;
    let data: Value = serde_json::from_str(&stream.record_event().await.data).unwrap();
    assert_eq!(data["patch"], json!({"f0": null}));
    view.apply("record.updated", &data);

    // Leaving the view: as before, `left`. Entering it: whole.
    app.patch(
        "/api/v1/collections/posts/records/p",
        &json!({"live": false}),
    )
    .await;
    let data: Value = serde_json::from_str(&stream.record_event().await.data).unwrap();
    assert_eq!(data["left"], true);
    view.apply("record.updated", &data);
    app.patch(
        "/api/v1/collections/posts/records/p",
        &json!({"live": true}),
    )
    .await;
    let data: Value = serde_json::from_str(&stream.record_event().await.data).unwrap();
    assert_eq!(
        data["data"]["f1"], "value 1",
        "a record entering the view comes whole"
    );
    assert!(data.get("patch").is_none());
    view.apply("record.updated", &data);
    let expected = records_of(&app, "/api/v1/collections/posts/records").await;
    assert_eq!(view.records, expected);
}

#[tokio::test]
async fn a_stream_of_several_collections_snapshots_each_with_its_filter() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    app.create_collection("notes").await;
    for (collection, id, n) in [
        ("posts", "p1", 1),
        ("posts", "p2", 5),
        ("notes", "n1", 1),
        ("notes", "n2", 7),
    ] {
        app.create_record(collection, json!({"id": id, "n": n}))
            .await;
    }
    let mut stream = app
        .stream(
            "/api/v1/realtime?collections=posts,notes&snapshot=true&filter.notes=n%20%3E%202",
            None,
        )
        .await;
    stream.connected().await;
    let mut seen = Vec::new();
    loop {
        let (kind, data) = stream.json_event().await;
        if kind == "snapshot.done" {
            assert_eq!(data["records"], 3);
            break;
        }
        assert_eq!(kind, "record.snapshot");
        seen.push(format!(
            "{}/{}",
            data["collection"].as_str().unwrap(),
            data["record_id"].as_str().unwrap()
        ));
    }
    assert_eq!(
        seen,
        ["posts/p1", "posts/p2", "notes/n2"],
        "collection by collection, in the order named"
    );
}
