//! The filter language end to end: streams, replay and lists.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp};

fn encode(query: &str) -> String {
    serde_urlencoded::to_string([("query", query)]).unwrap()
}

/// Applies record events to a view, as a client would: `left` drops the record.
fn apply(view: &mut BTreeMap<String, Value>, event: &Value) {
    let id = event["record_id"].as_str().unwrap().to_owned();
    match (event["type"].as_str().unwrap(), event.get("left")) {
        ("record.deleted", _) | (_, Some(Value::Bool(true))) => {
            view.remove(&id);
        }
        _ => {
            view.insert(id, event["data"].clone());
        }
    }
}

#[tokio::test]
async fn streams_take_the_full_language() {
    let app = TestApp::spawn().await;
    app.create_collection("products").await;
    let query =
        encode("price > 100 && (category IN [books, music] || title ~ 'RUST') && !archived = true");
    let mut stream = app
        .stream(&format!("/api/v1/realtime/products?{query}"), None)
        .await;
    let connected = stream.connected().await;
    let body: Value = serde_json::from_str(&connected.data).unwrap();
    assert_eq!(
        body["query"],
        "(price > 100) AND ((category IN [\"books\", \"music\"]) OR (title ~ \"RUST\")) AND (NOT (archived = true))"
    );
    for (id, record) in [
        ("cheap", json!({"price": 5, "category": "books"})),
        ("string-price", json!({"price": "500", "category": "books"})),
        (
            "archived",
            json!({"price": 500, "category": "books", "archived": true}),
        ),
        ("book", json!({"price": 150, "category": "books"})),
        ("toy", json!({"price": 150, "category": "toys"})),
        (
            "rusty",
            json!({"price": 101.5, "title": "Programming Rust"}),
        ),
    ] {
        let mut record = record;
        record["id"] = json!(id);
        app.create_record("products", record).await;
    }
    let ids: Vec<Value> = stream
        .records(2)
        .await
        .iter()
        .map(|e| e["record_id"].clone())
        .collect();
    assert_eq!(ids, [json!("book"), json!("rusty")]);
}

#[tokio::test]
async fn json_object_queries_are_an_and_of_equalities() {
    let app = TestApp::spawn().await;
    app.create_collection("items").await;
    let query = encode(r#"{"published": true, "category": "electronics"}"#);
    let mut stream = app
        .stream(&format!("/api/v1/realtime/items?{query}"), None)
        .await;
    stream.connected().await;
    app.create_record(
        "items",
        json!({"id": "a", "published": true, "category": "books"}),
    )
    .await;
    app.create_record(
        "items",
        json!({"id": "b", "published": "true", "category": "electronics"}),
    )
    .await;
    app.create_record(
        "items",
        json!({"id": "c", "published": true, "category": "electronics"}),
    )
    .await;
    let ids: Vec<Value> = stream
        .records(1)
        .await
        .iter()
        .map(|e| e["record_id"].clone())
        .collect();
    assert_eq!(ids, [json!("c")]);
}

/// Creates, moves in and out of the filter, and deletes; returns the view the
/// stream built.
async fn view_after_moves(
    app: &TestApp,
    stream: &mut SseClient,
    field: &str,
    inside: Value,
    outside: Value,
) -> BTreeMap<String, Value> {
    let record = |id: &str, value: &Value| json!({"id": id, field: value.clone()});
    app.create_record("rooms", record("a", &inside)).await; // enters: created
    app.create_record("rooms", record("b", &outside)).await; // never seen
    let path = "/api/v1/collections/rooms/records";
    app.patch(&format!("{path}/b"), &json!({field: inside.clone()}))
        .await; // enters: updated
    app.patch(&format!("{path}/a"), &json!({field: outside.clone()}))
        .await; // leaves
    app.patch(&format!("{path}/a"), &json!({"other": 1})).await; // still out: nothing
    app.create_record("rooms", record("c", &inside)).await;
    app.delete(&format!("{path}/c")).await; // deleted while in
    app.create_record("rooms", record("last", &inside)).await;

    let mut view = BTreeMap::new();
    let mut seen = Vec::new();
    loop {
        let event = stream.records(1).await.remove(0);
        seen.push((
            event["type"].as_str().unwrap().to_owned(),
            event["record_id"].as_str().unwrap().to_owned(),
            event.get("left").cloned(),
        ));
        apply(&mut view, &event);
        if event["record_id"] == "last" {
            break;
        }
    }
    let left = Some(json!(true));
    assert_eq!(
        seen,
        [
            ("record.created".into(), "a".into(), None),
            ("record.updated".into(), "b".into(), None),
            ("record.updated".into(), "a".into(), left),
            ("record.created".into(), "c".into(), None),
            ("record.deleted".into(), "c".into(), None),
            ("record.created".into(), "last".into(), None),
        ]
    );
    view
}

#[tokio::test]
async fn records_leaving_or_entering_a_filter_keep_the_client_view_exact() {
    // `room = 7` is indexed by the hub; `room >= 7` is not: both paths.
    for (query, inside, outside) in [
        ("room = 7", json!(7), json!(8)),
        ("room >= 7 && room < 8", json!(7), json!(9)),
    ] {
        let app = TestApp::spawn().await;
        app.create_collection("rooms").await;
        let mut stream = app
            .stream(&format!("/api/v1/realtime/rooms?{}", encode(query)), None)
            .await;
        stream.connected().await;
        let view = view_after_moves(&app, &mut stream, "room", inside.clone(), outside).await;

        // The view holds exactly what the server says matches.
        let listed: Value = app
            .get(&format!(
                "/api/v1/collections/rooms/records?{}",
                serde_urlencoded::to_string([("filter", query)]).unwrap()
            ))
            .await
            .json()
            .await
            .unwrap();
        let mut server: Vec<String> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        server.sort();
        assert_eq!(view.keys().cloned().collect::<Vec<_>>(), server, "{query}");
        assert_eq!(server, ["b", "last"]);
    }
}

#[tokio::test]
async fn replay_delivers_leaving_records_too() {
    let app = TestApp::spawn().await;
    app.create_collection("rooms").await;
    let path = format!("/api/v1/realtime/rooms?{}", encode("room = 7"));
    let mut stream = app.stream(&path, None).await;
    let position = stream.connected().await.id;
    drop(stream);
    app.create_record("rooms", json!({"id": "a", "room": 7}))
        .await;
    app.patch("/api/v1/collections/rooms/records/a", &json!({"room": 8}))
        .await;

    let mut stream = app.stream(&path, Some(&position)).await;
    stream.connected().await;
    let events = stream.records(2).await;
    assert_eq!(events[0]["type"], "record.created");
    assert_eq!(events[1]["type"], "record.updated");
    assert_eq!(events[1]["left"], true);
    assert_eq!(
        events[1]["data"],
        json!({"id": events[0]["record_id"]}),
        "id only"
    );
}

#[tokio::test]
async fn lists_take_a_filter() {
    let app = TestApp::spawn().await;
    app.create_collection("products").await;
    for (id, price, tags) in [
        ("a", json!(50), json!(["x"])),
        ("b", json!(150), json!(["rust", "y"])),
        ("c", json!(250.5), json!([])),
        ("d", json!("300"), json!(null)),
    ] {
        app.create_record("products", json!({"id": id, "price": price, "tags": tags}))
            .await;
    }
    for (filter, expected) in [
        ("price > 100", vec!["b", "c"]),
        ("price > 100 && tags ~ rust", vec!["b"]),
        ("tags = null", vec!["d"]),
        ("id IN [a, d]", vec!["a", "d"]),
        ("id != a && price < 1000", vec!["b", "c"]),
        ("NOT price > 100", vec!["a", "d"]),
    ] {
        let query = serde_urlencoded::to_string([("filter", filter), ("sort", "id")]).unwrap();
        let page: Value = app
            .get(&format!("/api/v1/collections/products/records?{query}"))
            .await
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{filter}: {page}"))
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected, "{filter}");
    }
}

#[tokio::test]
async fn bad_filters_get_400_with_a_column() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    for path in [
        format!("/api/v1/realtime/posts?{}", encode("price >")),
        format!(
            "/api/v1/collections/posts/records?{}",
            serde_urlencoded::to_string([("filter", "price >")]).unwrap()
        ),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_filter");
        assert_eq!(body["error"]["column"], 8);
        assert_eq!(
            body["error"]["message"],
            "expected a value after `>` at column 8"
        );
    }
    let long = "a=1 && ".repeat(700);
    let response = app
        .get(&format!("/api/v1/realtime/posts?{}", encode(&long)))
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn error_columns_count_from_the_first_character_sent() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let response = app
        .get(&format!("/api/v1/realtime/posts?{}", encode("  price >")))
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["column"], 10, "{body}");
}
