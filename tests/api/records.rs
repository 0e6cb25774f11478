use serde_json::{Value, json};

use crate::helpers::{TestApp, test_config};

#[tokio::test]
async fn records_can_be_created_read_changed_and_deleted() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;

    let created = app
        .create_record(
            "posts",
            json!({"title": "Hello", "tags": ["a"], "meta": {"views": 1}}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "a generated id is a bare ULID: {id}");
    assert_eq!(created["title"], "Hello");

    let chosen = app
        .create_record("posts", json!({"id": "abc123", "title": "Mine"}))
        .await;
    assert_eq!(chosen["id"], "abc123");

    let shown: Value = app
        .get("/api/v1/collections/posts/records/abc123")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown, json!({"id": "abc123", "title": "Mine"}));

    let merged = app
        .patch(
            "/api/v1/collections/posts/records/abc123",
            &json!({"body": "text"}),
        )
        .await;
    assert_eq!(merged.status(), 200);
    assert_eq!(
        merged.json::<Value>().await.unwrap(),
        json!({"id": "abc123", "title": "Mine", "body": "text"})
    );

    let replaced = app
        .put(
            "/api/v1/collections/posts/records/abc123",
            &json!({"id": "abc123", "only": true}),
        )
        .await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(
        replaced.json::<Value>().await.unwrap(),
        json!({"id": "abc123", "only": true})
    );

    let deleted = app.delete("/api/v1/collections/posts/records/abc123").await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        app.get("/api/v1/collections/posts/records/abc123")
            .await
            .status(),
        404
    );
    assert_eq!(
        app.delete("/api/v1/collections/posts/records/abc123")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn lists_page_with_a_cursor_and_sort() {
    let app = TestApp::spawn().await;
    app.create_collection("items").await;
    for n in 0..7 {
        app.create_record("items", json!({"id": format!("item{n}"), "rank": 10 - n}))
            .await;
    }
    // Default order: newest id first. Pages of 3.
    let mut seen = Vec::new();
    let mut path = "/api/v1/collections/items/records?limit=3".to_owned();
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/collections/items/records?limit=3&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "item6", "item5", "item4", "item3", "item2", "item1", "item0"
        ]
    );

    let page: Value = app
        .get("/api/v1/collections/items/records?sort=rank&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let ranks: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["rank"].as_i64().unwrap())
        .collect();
    assert_eq!(ranks, [4, 5]);
}

/// The ids of a sorted list, read page by page (pages of `limit`).
async fn sorted_ids(app: &TestApp, collection: &str, sort: &str, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let path =
            format!("/api/v1/collections/{collection}/records?sort={sort}&limit={limit}{cursor}");
        let page: Value = app.get(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn a_sort_breaks_ties_by_id_in_its_own_direction() {
    let app = TestApp::spawn().await;
    app.create_collection("items").await;
    // Written out of id order, so that neither the order of writing nor
    // that of storage passes for the tie-break.
    for (id, rank) in [("n5", 1), ("n9", 2), ("n1", 1), ("n3", 2), ("n7", 1)] {
        app.create_record("items", json!({"id": id, "rank": rank}))
            .await;
    }
    for limit in [2, 50] {
        assert_eq!(
            sorted_ids(&app, "items", "rank", limit).await,
            ["n1", "n5", "n7", "n3", "n9"],
            "ascending, pages of {limit}"
        );
        assert_eq!(
            sorted_ids(&app, "items", "-rank", limit).await,
            ["n9", "n3", "n7", "n5", "n1"],
            "descending, pages of {limit}: the exact reverse"
        );
    }
}

#[tokio::test]
async fn a_sort_orders_values_of_different_types_as_surrealdb_does() {
    let app = TestApp::spawn().await;
    app.create_collection("items").await;
    // Ascending: missing, null, booleans, numbers, strings (by code
    // point), arrays (element by element), objects.
    let values = [
        ("v00", None),
        ("v01", Some(json!(null))),
        ("v02", Some(json!(false))),
        ("v03", Some(json!(true))),
        ("v04", Some(json!(-1))),
        ("v05", Some(json!(2.5))),
        ("v06", Some(json!(10))),
        ("v07", Some(json!("10"))),
        ("v08", Some(json!("B"))),
        ("v09", Some(json!("a"))),
        ("v10", Some(json!("é"))),
        // By code point (UTF-8 bytes) these two; in UTF-16, the other way round.
        ("v11", Some(json!("\u{FF5E}"))),
        ("v12", Some(json!("\u{1F600}"))),
        ("v13", Some(json!([1]))),
        ("v14", Some(json!([1, 0]))),
        ("v15", Some(json!([2]))),
        ("v16", Some(json!({"k": 1}))),
    ];
    // Written in reverse, so that storage order is not the answer.
    for (id, value) in values.iter().rev() {
        let mut record = json!({"id": id});
        if let Some(value) = value {
            record["v"] = value.clone();
        }
        app.create_record("items", record).await;
    }
    let ascending: Vec<&str> = values.iter().map(|(id, _)| *id).collect();
    assert_eq!(sorted_ids(&app, "items", "v", 50).await, ascending);
    let descending: Vec<&str> = ascending.iter().rev().copied().collect();
    assert_eq!(sorted_ids(&app, "items", "-v", 50).await, descending);
}

#[tokio::test]
async fn record_errors_have_the_right_status_and_shape() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    app.create_record("posts", json!({"id": "taken"})).await;
    let big = 18_446_744_073_709_551_615u64;

    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            app.post("/api/v1/collections/posts/records", &json!({"id": "taken"}))
                .await,
            409,
            "conflict",
        ),
        (
            // (An array is a batch: see `a_batch_answers_each_item...`.)
            app.post("/api/v1/collections/posts/records", &json!(null))
                .await,
            400,
            "invalid_body",
        ),
        (
            app.post("/api/v1/collections/posts/records", &json!("text"))
                .await,
            400,
            "invalid_body",
        ),
        (
            app.post("/api/v1/collections/posts/records", &json!({"id": "a:b"}))
                .await,
            400,
            "invalid_id",
        ),
        (
            app.post("/api/v1/collections/posts/records", &json!({"id": 7}))
                .await,
            400,
            "invalid_id",
        ),
        (
            app.post("/api/v1/collections/posts/records", &json!({"n": big}))
                .await,
            400,
            "invalid_body",
        ),
        (
            app.post("/api/v1/collections/nope/records", &json!({}))
                .await,
            404,
            "not_found",
        ),
        (
            app.get("/api/v1/collections/nope/records").await,
            404,
            "not_found",
        ),
        (
            app.get("/api/v1/collections/nope/records/x").await,
            404,
            "not_found",
        ),
        (
            app.get("/api/v1/collections/posts/records/missing").await,
            404,
            "not_found",
        ),
        (
            app.patch(
                "/api/v1/collections/posts/records/missing",
                &json!({"a": 1}),
            )
            .await,
            404,
            "not_found",
        ),
        (
            app.put(
                "/api/v1/collections/posts/records/missing",
                &json!({"a": 1}),
            )
            .await,
            404,
            "not_found",
        ),
        (
            app.patch(
                "/api/v1/collections/posts/records/taken",
                &json!({"id": "other"}),
            )
            .await,
            400,
            "invalid_id",
        ),
        (
            app.get("/api/v1/collections/posts/records?limit=0").await,
            400,
            "invalid_query",
        ),
        (
            app.get("/api/v1/collections/posts/records?limit=abc").await,
            400,
            "invalid_query",
        ),
        (
            app.get("/api/v1/collections/posts/records?cursor=zzz")
                .await,
            400,
            "invalid_query",
        ),
        (
            app.get("/api/v1/collections/posts/records?sort=a%60b")
                .await,
            400,
            "invalid_query",
        ),
    ];
    for (response, status, code) in cases {
        let url = response.url().to_string();
        assert_eq!(response.status(), status, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{url}: {body}");
    }
    // A failed write changed nothing: no collection `nope` appeared.
    assert_eq!(app.get("/api/v1/collections/nope").await.status(), 404);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let mut config = test_config();
    config.max_body_bytes = 1024;
    let app = TestApp::spawn_with(config).await;
    app.create_collection("posts").await;
    let response = app
        .post(
            "/api/v1/collections/posts/records",
            &json!({"text": "x".repeat(2000)}),
        )
        .await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn hostile_content_is_stored_verbatim() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let hostile = json!({
        "id": "h1",
        "sql": "'; REMOVE TABLE posts; --",
        "surreal": "⟩; DELETE posts; ⟨",
        "sse": "\n\nevent: forged\ndata: {}\n\n",
        "cr": "a\rb",
        "unicode": "é\u{2028}\u{0}",
    });
    let created = app.create_record("posts", hostile.clone()).await;
    assert_eq!(created, hostile);
    let shown: Value = app
        .get("/api/v1/collections/posts/records/h1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown, hostile);
    assert_eq!(app.get("/api/v1/collections/posts").await.status(), 200);
}

#[tokio::test]
async fn a_rule_change_is_in_force_for_writes_once_it_is_answered() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "inbox", "rules": {"create": "true"}}),
    )
    .await;
    let ann = app.user("ann");
    let create = |id: String| {
        ann.post(app.url("/api/v1/collections/inbox/records"))
            .json(&json!({ "id": id }))
            .send()
    };
    // Writes read the rules from memory; each change is in force for the
    // very next write on this node, whichever way it goes.
    for round in 0..20 {
        let closed = app
            .patch(
                "/api/v1/collections/inbox",
                &json!({"rules": {"create": null}}),
            )
            .await;
        assert_eq!(closed.status(), 200);
        let refused = create(format!("closed{round}")).await.unwrap();
        assert_eq!(
            refused.status(),
            403,
            "round {round}: the closing is in force"
        );
        let opened = app
            .patch(
                "/api/v1/collections/inbox",
                &json!({"rules": {"create": "true"}}),
            )
            .await;
        assert_eq!(opened.status(), 200);
        let created = create(format!("open{round}")).await.unwrap();
        assert_eq!(
            created.status(),
            201,
            "round {round}: the opening is in force"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_batch_answers_each_item_and_streams_the_created_ones_once_in_order() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "notes", "rules": {"read": "true", "create": "owner = $auth.sub"}}),
    )
    .await;
    let ann = app.user("ann");
    let records = app.url("/api/v1/collections/notes/records");
    let taken = ann
        .post(&records)
        .json(&json!({"id": "taken", "owner": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 201);
    let mut stream = app.stream("/api/v1/realtime/notes", None).await;
    stream.connected().await;
    let batch = json!([
        {"id": "n1", "owner": "ann", "n": 1},
        {"id": 7, "owner": "ann"},
        {"id": "n2", "owner": "bob"},
        {"id": "taken", "owner": "ann"},
        {"id": "n3", "owner": "ann", "n": 3},
        {"id": "n3", "owner": "ann", "n": 4},
        "not a record",
        {"owner": "ann", "n": 5},
    ]);
    let answered = ann.post(&records).json(&batch).send().await.unwrap();
    assert_eq!(answered.status(), 207);
    let body: Value = answered.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    let statuses: Vec<u64> = items
        .iter()
        .map(|item| item["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 400, 403, 409, 201, 409, 400, 201], "{body}");
    assert_eq!(items[0]["record"]["n"], 1);
    assert_eq!(items[1]["error"]["code"], "invalid_id");
    assert_eq!(items[3]["error"]["code"], "conflict");
    let generated = items[7]["record"]["id"].as_str().unwrap().to_owned();
    // Every created record streams once, in the batch's order.
    let streamed: Vec<String> = stream.record_ids(3).await;
    assert_eq!(streamed, ["n1", "n3", generated.as_str()]);
    // An atomic batch with a taken id writes nothing and names the item.
    let atomic = ann
        .post(format!("{records}?atomic=true"))
        .json(&json!([{"id": "a1", "owner": "ann"}, {"id": "n1", "owner": "ann"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(atomic.status(), 409);
    let error: Value = atomic.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("item 1: "), "{message}");
    let missing = ann.get(format!("{records}/a1")).send().await.unwrap();
    assert_eq!(
        missing.status(),
        404,
        "nothing of the atomic batch was written"
    );
    // And one that passes is written whole.
    let whole = ann
        .post(format!("{records}?atomic=true"))
        .json(&json!([{"id": "a1", "owner": "ann"}, {"id": "a2", "owner": "ann"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 201);
    let streamed: Vec<String> = stream.record_ids(2).await;
    assert_eq!(streamed, ["a1", "a2"]);
    // Empty and oversized batches are refused whole.
    for batch in [json!([]), Value::Array(vec![json!({"owner": "ann"}); 1001])] {
        let refused = ann.post(&records).json(&batch).send().await.unwrap();
        assert_eq!(refused.status(), 400);
        let error: Value = refused.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1 to 1000")
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_ndjson_import_commits_batch_by_batch_and_stops_at_a_malformed_line() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "logs", "rules": {"read": "true", "create": "level != secret"}}),
    )
    .await;
    let ann = app.user("ann");
    let records = app.url("/api/v1/collections/logs/records");
    let mut stream = app.stream("/api/v1/realtime/logs", None).await;
    stream.connected().await;
    // 2,500 lines, more than two batches, one refused by the rule, and a
    // blank line and CRLF ends on the way.
    let mut body = String::new();
    for n in 0..2500 {
        let level = if n == 1234 { "secret" } else { "info" };
        body.push_str(&format!("{{\"id\":\"l{n:04}\",\"level\":\"{level}\"}}\r\n"));
        if n == 10 {
            body.push('\n');
        }
    }
    let imported = ann
        .post(&records)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), 207);
    let report: Value = imported.json().await.unwrap();
    assert_eq!(report["created"], 2499, "{report}");
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    // Line 1236: the record of n = 1234, after one blank line.
    assert_eq!(
        (failed[0]["line"].as_u64(), failed[0]["status"].as_u64()),
        (Some(1236), Some(403))
    );
    let streamed: Vec<String> = stream.record_ids(2499).await;
    let expected: Vec<String> = (0..2500)
        .filter(|n| *n != 1234)
        .map(|n| format!("l{n:04}"))
        .collect();
    assert_eq!(streamed, expected, "every record once, in order");
    // A malformed line stops the import there: the lines before it are in,
    // none after it.
    let body = concat!(
        "{\"id\":\"m1\",\"level\":\"info\"}\n",
        "{\"id\":\"m2\",\"level\":\"info\"}\n",
        "{\"id\": oops}\n",
        "{\"id\":\"m3\",\"level\":\"info\"}\n",
    );
    let stopped = ann
        .post(&records)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 400);
    let error: Value = stopped.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("line 3 is not JSON"), "{message}");
    assert!(
        message.contains("2 records from the lines before were created"),
        "{message}"
    );
    for (id, status) in [("m1", 200), ("m2", 200), ("m3", 404)] {
        let shown = ann.get(format!("{records}/{id}")).send().await.unwrap();
        assert_eq!(shown.status(), status, "{id}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_first_answer_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.db = format!("surrealkv://{}", dir.path().join("data").display());
    let app = TestApp::spawn_with(config.clone()).await;
    app.create_public_collection("orders").await;
    let ann_token = app.token(json!({"sub": "ann"}));
    let url = app.url("/api/v1/collections/orders/records");
    let send = |token: &str, key: &str, body: Value| {
        reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let order = json!({"item": "book"});
    let first = send(
        &app.token(json!({"sub": "admin", "role": "admin"})),
        "k1",
        order.clone(),
    )
    .await
    .unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let admin = app.token(json!({"sub": "admin", "role": "admin"}));
    // The same request again: the same answer (the same generated id),
    // nothing written.
    let again = send(&admin, "k1", order.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // The same key with another body is a 422.
    let other = send(&admin, "k1", json!({"item": "pen"})).await.unwrap();
    assert_eq!(other.status(), 422);
    let error: Value = other.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    // Keys are per caller: ann's `k1` is hers, and a refusal is kept too.
    let anns = send(&ann_token, "k1", order.clone()).await.unwrap();
    assert_eq!(anns.status(), 403, "ann may not create orders");
    let anns_again = send(&ann_token, "k1", order.clone()).await.unwrap();
    assert_eq!(anns_again.status(), 403);
    assert_eq!(anns_again.headers()["idempotent-replayed"], "true");
    app.shutdown().await;

    // After a restart, the key still answers as the first time.
    let app = TestApp::spawn_with(config).await;
    let url = app.url("/api/v1/collections/orders/records");
    let after = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&admin)
        .header("idempotency-key", "k1")
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 201);
    assert_eq!(after.headers()["idempotent-replayed"], "true");
    assert_eq!(after.json::<Value>().await.unwrap(), first);
    let listed: Value = app
        .get("/api/v1/collections/orders/records")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "written once");
    // A malformed key is refused.
    let bad = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&admin)
        .header("idempotency-key", "x".repeat(300))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // A method the route does not take is a 405, key or not.
    let undeclared = reqwest::Client::new()
        .put(&url)
        .bearer_auth(&admin)
        .header("idempotency-key", "k1")
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(undeclared.status(), 405);
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_single_creates_committed_together_are_each_answered_on_their_own() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "tasks", "rules": {"read": "true", "create": "owner = $auth.sub"}}),
    )
    .await;
    let mut stream = app.stream("/api/v1/realtime/tasks", None).await;
    stream.connected().await;
    let ann = app.user("ann");
    let url = app.url("/api/v1/collections/tasks/records");
    // 32 writers at once: each pair races for one id, and every fourth
    // writer breaks the rule.
    let writers: Vec<_> = (0..32)
        .map(|n| {
            let (client, url) = (ann.clone(), url.clone());
            let owner = if n % 4 == 3 { "bob" } else { "ann" };
            let body = json!({"id": format!("t{}", n / 2), "owner": owner, "writer": n});
            tokio::spawn(async move {
                let answer = client.post(url).json(&body).send().await.unwrap();
                let status = answer.status().as_u16();
                (n, status, answer.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut created = Vec::new();
    for writer in writers {
        let (n, status, body) = writer.await.unwrap();
        match status {
            201 => {
                assert_eq!(body["writer"], n, "each write gets its own record");
                created.push(body["id"].as_str().unwrap().to_owned());
            }
            403 => assert_eq!(n % 4, 3, "only rule breakers are refused: {body}"),
            409 => assert_eq!(body["error"]["code"], "conflict"),
            other => panic!("writer {n}: {other} {body}"),
        }
    }
    // Of each pair, the rule breaker never wins; of pairs without one,
    // exactly one wins.
    created.sort();
    let mut expected: Vec<String> = (0..16).map(|pair| format!("t{pair}")).collect();
    expected.sort();
    assert_eq!(created, expected, "one winner per id");
    let mut streamed: Vec<String> = stream.record_ids(16).await;
    streamed.sort();
    assert_eq!(streamed, expected, "every created record streams once");
    app.shutdown().await;
}

#[tokio::test]
async fn anonymous_callers_at_two_addresses_do_not_share_idempotency_keys() {
    let mut config = test_config();
    config.trusted_proxies = livehub::proxies::TrustedProxies::parse("127.0.0.1").unwrap();
    let app = TestApp::spawn_with(config).await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "guestbook", "rules": {"read": "true", "create": "true"}}),
    )
    .await;
    let url = app.url("/api/v1/collections/guestbook/records");
    let sign = |address: &'static str| {
        app.anonymous
            .post(&url)
            .header("x-forwarded-for", address)
            .header("idempotency-key", "1")
            .json(&json!({"text": "hello"}))
            .send()
    };
    let first = sign("203.0.113.1").await.unwrap();
    let other = sign("203.0.113.2").await.unwrap();
    let again = sign("203.0.113.1").await.unwrap();
    let statuses = [first.status(), other.status(), again.status()];
    assert_eq!(statuses.map(|status| status.as_u16()), [201, 201, 201]);
    assert!(
        other.headers().get("idempotent-replayed").is_none(),
        "another caller"
    );
    assert_eq!(
        again.headers()["idempotent-replayed"],
        "true",
        "the same caller"
    );
    let (first, other): (Value, Value) = (first.json().await.unwrap(), other.json().await.unwrap());
    assert_ne!(first["id"], other["id"], "two records");
    app.shutdown().await;
}
