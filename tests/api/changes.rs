//! Change pages (`GET /api/v1/changes`): every change once, in order,
//! behind a cursor; history pages immutable and cacheable; long polls.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{HANG_GUARD, TestApp};

/// One page as the client sees it.
struct Page {
    status: u16,
    body: Value,
    cache_control: Option<String>,
    etag: Option<String>,
}

async fn page(client: &reqwest::Client, url: String) -> Page {
    let response = client.get(url).send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let (cache_control, etag) = (header("cache-control"), header("etag"));
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Page {
        status,
        body,
        cache_control,
        etag,
    }
}

fn events(page: &Page) -> &Vec<Value> {
    page.body["events"].as_array().expect("a page has events")
}

#[tokio::test]
async fn pages_carry_every_change_once_and_history_pages_never_change() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    let written: Vec<String> = (0..25).map(|n| format!("p{n:02}")).collect();
    for id in &written {
        app.create_record("posts", json!({"id": id})).await;
    }
    let url = |since: &str| {
        app.url(&format!(
            "/api/v1/changes?collections=posts&since={since}&limit=10"
        ))
    };
    let mut since = "earliest".to_owned();
    let mut seen = Vec::new();
    let mut ids = BTreeSet::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 20, "the pages never caught up");
        let first = page(&app.anonymous, url(&since)).await;
        assert_eq!(first.status, 200, "{}", first.body);
        for event in events(&first) {
            let id = event["id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "event {id} came twice");
            if event["type"] == "record.created" {
                seen.push(event["record_id"].as_str().unwrap().to_owned());
            }
        }
        let next = first.body["next"].as_str().unwrap().to_owned();
        assert!(next > since || since == "earliest", "the cursor moves on");
        if first.body["caught_up"] == true {
            // The live edge may change: not cached, no tag.
            assert_eq!(first.cache_control.as_deref(), Some("no-store"));
            assert_eq!(first.etag, None);
            // Past the last change there is nothing yet.
            let after = page(&app.anonymous, url(&next)).await;
            assert_eq!(events(&after).len(), 0);
            assert_eq!(after.body["caught_up"], true);
            break;
        }
        assert_eq!(events(&first).len(), 10, "a page short of the edge is full");
        // Kept by shared caches for at most `--shared-cache-max-age`.
        assert_eq!(
            first.cache_control.as_deref(),
            Some("public, max-age=60, immutable")
        );
        let etag = first.etag.clone().expect("a history page has an ETag");
        // Asked again, a history page is the same page.
        let again = page(&app.anonymous, url(&since)).await;
        assert_eq!(again.body, first.body);
        assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
        let revalidated = app
            .anonymous
            .get(url(&since))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304);
        // Someone signed in gets it for their own cache only.
        let private = page(&app.user("ann"), url(&since)).await;
        // While its cursor is within the 24 h retention (less a margin).
        let control = private.cache_control.unwrap();
        let max_age = crate::helpers::private_max_age(&control);
        assert!((23 * 3600..24 * 3600).contains(&max_age), "{control}");
        since = next;
    }
    assert_eq!(seen, written, "every change once, in order");
    // Ids sort as the events came.
    let in_order: Vec<&String> = ids.iter().collect();
    assert!(in_order.windows(2).all(|pair| pair[0] < pair[1]));
    app.shutdown().await;
}

#[tokio::test]
async fn pages_apply_filters_fields_and_rules_as_streams_do() {
    let app = TestApp::spawn().await;
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "notes", "rules": {"read": "owner = $auth.sub", "create": "true"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    for n in 0..6 {
        let owner = if n % 2 == 0 { "ann" } else { "bob" };
        app.create_record(
            "notes",
            json!({"id": format!("n{n}"), "owner": owner, "n": n, "text": "x"}),
        )
        .await;
    }
    let url =
        app.url("/api/v1/changes?collections=notes&since=earliest&query=n%20%3E%201&fields=n");
    let ann = page(&app.user("ann"), url.clone()).await;
    assert_eq!(ann.status, 200, "{}", ann.body);
    let records: Vec<&Value> = events(&ann)
        .iter()
        .filter(|event| event["type"] == "record.created")
        .map(|event| &event["data"])
        .collect();
    assert_eq!(
        records,
        [&json!({"id": "n2", "n": 2}), &json!({"id": "n4", "n": 4})],
        "ann's records with n > 1, with the field she asked for"
    );
    // Nobody may read the collection anonymously.
    let anonymous = page(&app.anonymous, url).await;
    assert!(
        matches!(anonymous.status, 401 | 403),
        "{}",
        anonymous.status
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_cursors_and_parameters_get_clear_errors() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    let code = |page: &Page| page.body["error"]["code"].as_str().unwrap_or("").to_owned();
    let get = |query: &str| page(&app.anonymous, app.url(&format!("/api/v1/changes?{query}")));
    let missing = get("collections=posts").await;
    assert_eq!(
        (missing.status, code(&missing)),
        (400, "invalid_query".into())
    );
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("earliest")
    );
    let garbled = get("collections=posts&since=yesterday").await;
    assert_eq!(
        (garbled.status, code(&garbled)),
        (400, "invalid_event_id".into())
    );
    // An id from before this database was made: the reason a stream's
    // `reset` would give.
    let an_hour_ago = livehub::engine::clock::Stamp::at(
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    let stale = livehub::engine::event::EventId {
        stamp: an_hour_ago,
        index: 0,
    };
    let gone = get(&format!("collections=posts&since={stale}")).await;
    assert_eq!(gone.status, 410);
    assert_eq!(code(&gone), "cursor_unavailable");
    assert_eq!(gone.body["error"]["reason"], "before_database");
    for query in [
        "collections=posts&since=now&limit=0",
        "collections=posts&since=now&limit=10001",
        "collections=posts&since=now&wait=10m",
        "collections=posts&since=now&wait=soon",
        "collections=posts&since=now&query=a%20%3D",
    ] {
        let refused = get(query).await;
        assert_eq!(refused.status, 400, "{query}: {}", refused.body);
    }
    let unknown = get("collections=nothing&since=now").await;
    assert!(
        unknown.status >= 400 && unknown.status < 500,
        "{}",
        unknown.status
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_change_arrives() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    let edge = page(
        &app.anonymous,
        app.url("/api/v1/changes?collections=posts&since=now"),
    )
    .await;
    assert_eq!(edge.status, 200);
    assert_eq!(events(&edge).len(), 0, "{}", edge.body);
    let next = edge.body["next"].as_str().unwrap().to_owned();
    // Nothing comes: an empty page at the deadline, the cursor kept.
    let quiet = page(
        &app.anonymous,
        app.url(&format!(
            "/api/v1/changes?collections=posts&since={next}&wait=300ms"
        )),
    )
    .await;
    assert_eq!(events(&quiet).len(), 0);
    assert_eq!(quiet.body["caught_up"], true);
    assert!(quiet.body["next"].as_str().unwrap() >= next.as_str());
    // A change during the wait ends it with that change (the wait is far
    // longer than the test's guard, so only the change can end it).
    let waiting = tokio::spawn({
        let client = app.anonymous.clone();
        let url = app.url(&format!(
            "/api/v1/changes?collections=posts&since={next}&wait=120s"
        ));
        async move { page(&client, url).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.create_record("posts", json!({"id": "fresh"})).await;
    let answered = tokio::time::timeout(HANG_GUARD, waiting)
        .await
        .expect("the long poll answered")
        .unwrap();
    assert_eq!(answered.status, 200);
    let ids: Vec<&str> = events(&answered)
        .iter()
        .map(|event| event["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fresh"]);
    // An anonymous long poll's answer is shared for a moment, so that a
    // cache can hand it to every poll that waited with it.
    assert_eq!(answered.cache_control.as_deref(), Some("public, max-age=1"));
    // Its cursor is the change's id: the next page starts after it.
    assert_eq!(answered.body["next"], events(&answered)[0]["id"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_stream_resumes_from_a_page_cursor_and_a_page_from_a_stream_id() {
    let app = TestApp::spawn().await;
    app.create_public_collection("posts").await;
    let mut stream = app.stream("/api/v1/realtime/posts", None).await;
    stream.connected().await;
    for id in ["a", "b", "c"] {
        app.create_record("posts", json!({"id": id})).await;
    }
    let a = stream.record_event().await.id;
    drop(stream);
    let from_a = page(
        &app.anonymous,
        app.url(&format!("/api/v1/changes?collections=posts&since={a}")),
    )
    .await;
    let ids: Vec<&str> = events(&from_a)
        .iter()
        .map(|event| event["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    let b = events(&from_a)[0]["id"].as_str().unwrap().to_owned();
    let mut resumed = app.stream("/api/v1/realtime/posts", Some(&b)).await;
    resumed.connected().await;
    let c = resumed.record_event().await;
    assert!(c.data.contains("\"c\""), "{}", c.data);
    app.shutdown().await;
}
