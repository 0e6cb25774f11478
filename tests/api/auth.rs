//! Identity and access rules over real HTTP: tokens on every route, rules on
//! REST reads and writes, rules on streams (live and replayed), tickets,
//! token expiry, limits and CORS.

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp, client_with_token, now_secs, test_config};

/// `notes`: each user reads their own notes and public ones, and writes
/// only their own.
async fn notes(app: &TestApp) {
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "notes", "rules": {
                "read": "owner = $auth.sub || public = true",
                "create": "owner = $auth.sub",
                "update": "owner = $auth.sub",
                "delete": "owner = $auth.sub",
            }}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_bad_token_is_refused_everywhere_and_never_read_as_anonymous() {
    let app = TestApp::spawn().await;
    let expired = app.token(json!({"sub": "ann", "exp": now_secs() - 60}));
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ann", "role": "admin", "exp": now_secs() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret of thirty-two bytes!"),
    )
    .unwrap();
    for (token, message) in [
        (expired.as_str(), "the token has expired"),
        (foreign.as_str(), "the token's signature"),
        ("not-a-jwt", "the token is malformed"),
    ] {
        for path in [
            "/api/v1/collections",
            "/api/v1/realtime",
            &format!("/api/v1/realtime?token={token}"),
        ] {
            let client = if path.contains("token=") {
                app.anonymous.clone()
            } else {
                client_with_token(token)
            };
            let response = client.get(app.url(path)).send().await.unwrap();
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let (status, code, text) = error_of(response).await;
            assert_eq!((status, code.as_str()), (401, "unauthorized"), "{path}");
            assert!(text.starts_with(message), "{text}");
        }
    }
    // The cookie is read too.
    let response = app
        .anonymous
        .get(app.url("/api/v1/collections"))
        .header("cookie", format!("theme=dark; livehub_token={expired}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A cookie authenticates reads, never writes: a cross-site page could
    // make the browser send it.
    let admin_cookie = format!(
        "livehub_token={}",
        app.token(json!({"sub": "root", "role": "admin"}))
    );
    let read = app
        .anonymous
        .get(app.url("/api/v1/stats"))
        .header("cookie", &admin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = app
        .anonymous
        .post(app.url("/api/v1/admin/users/ann/disconnect"))
        .header("cookie", &admin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401, "the cookie is ignored on a POST");
}

#[tokio::test]
async fn only_admins_manage_collections_and_rules_are_checked() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "posts"});
    let anonymous = app
        .anonymous
        .post(app.url("/api/v1/collections"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(anonymous).await.0, 401);
    let user = app
        .user("ann")
        .post(app.url("/api/v1/collections"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(user).await.1, "forbidden");

    let created = app.post("/api/v1/collections", &body).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        created["rules"],
        json!({"read": "$auth.sub != null", "create": null, "update": null, "delete": null}),
        "the defaults: any signed-in user reads, admins write"
    );

    let bad = app
        .patch(
            "/api/v1/collections/posts",
            &json!({"rules": {"update": "owner = "}}),
        )
        .await;
    let (status, code, message) = error_of(bad).await;
    assert_eq!((status, code.as_str()), (400, "invalid_rule"));
    assert!(
        message.starts_with("rule `update`: expected a value"),
        "{message}"
    );

    let patched = app
        .patch(
            "/api/v1/collections/posts",
            &json!({"rules": {"read": "true"}}),
        )
        .await;
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["rules"]["read"], "true");
    assert_eq!(patched["rules"]["update"], Value::Null, "other rules kept");

    // Listing shows only collections the caller may read.
    app.post(
        "/api/v1/collections",
        &json!({"name": "secrets", "rules": {"read": null}}),
    )
    .await;
    let names = |body: Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = |client: reqwest::Client| {
        let url = app.url("/api/v1/collections");
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        names(listed(app.client.clone()).await),
        ["posts", "secrets"]
    );
    assert_eq!(names(listed(app.user("ann")).await), ["posts"]);
    assert_eq!(names(listed(app.anonymous.clone()).await), ["posts"]);
    let hidden = app
        .user("ann")
        .get(app.url("/api/v1/collections/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 403);
}

#[tokio::test]
async fn rest_reads_and_writes_follow_the_rules() {
    let app = TestApp::spawn().await;
    notes(&app).await;
    let (ann, bob) = (app.user("ann"), app.user("bob"));
    let records = app.url("/api/v1/collections/notes/records");
    let record = |id: &str| app.url(&format!("/api/v1/collections/notes/records/{id}"));

    for (id, public) in [("a1", false), ("a2", true)] {
        let response = ann
            .post(&records)
            .json(&json!({"id": id, "owner": "ann", "public": public, "text": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{id}");
    }
    let forged = ann
        .post(&records)
        .json(&json!({"owner": "bob"}))
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(forged).await;
    assert_eq!(status, 403);
    assert!(message.contains("`create` rule"), "{message}");
    let anonymous_write = app
        .anonymous
        .post(&records)
        .json(&json!({"owner": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous_write.status(),
        401,
        "no owner can match a caller without a `sub`"
    );
    bob.post(&records)
        .json(&json!({"id": "b1", "owner": "bob", "public": false}))
        .send()
        .await
        .unwrap();

    let ids = |client: reqwest::Client, query: &'static str| {
        let url = format!("{records}?sort=id{query}");
        async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(app.client.clone(), "").await, ["a1", "a2", "b1"]);
    assert_eq!(ids(ann.clone(), "").await, ["a1", "a2"]);
    assert_eq!(ids(bob.clone(), "").await, ["a2", "b1"]);
    assert_eq!(ids(app.anonymous.clone(), "").await, ["a2"]);
    assert_eq!(ids(bob.clone(), "&filter=public=false").await, ["b1"]);
    assert_eq!(ids(bob.clone(), "&filter=owner=$auth.sub").await, ["b1"]);

    // Reading someone else's private note: as if it did not exist.
    assert_eq!(bob.get(record("a1")).send().await.unwrap().status(), 404);
    assert_eq!(bob.get(record("a2")).send().await.unwrap().status(), 200);
    // Writing it: 404 when unreadable, 403 when readable but not theirs.
    let patch = json!({"text": "mine now"});
    let hidden = bob.patch(record("a1")).json(&patch).send().await.unwrap();
    assert_eq!(hidden.status(), 404);
    let refused = bob.patch(record("a2")).json(&patch).send().await.unwrap();
    assert_eq!(error_of(refused).await.1, "forbidden");
    assert_eq!(bob.delete(record("a2")).send().await.unwrap().status(), 403);
    assert_eq!(bob.delete(record("a1")).send().await.unwrap().status(), 404);
    // Nobody moves a record out of their own rule.
    let give_away = ann
        .patch(record("a1"))
        .json(&json!({"owner": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(give_away.status(), 403);
    let unchanged: Value = app
        .get("/api/v1/collections/notes/records/a1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["owner"], "ann", "a refused write changes nothing");
    let edited = ann
        .put(record("a1"))
        .json(&json!({"owner": "ann", "text": "edited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);
    assert_eq!(ann.delete(record("a1")).send().await.unwrap().status(), 204);
}

/// Record ids of the record events in `events`, with `!` for a `left` one.
fn seen(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            let id = event["record_id"].as_str().unwrap().to_owned();
            if event["left"] == true {
                assert_eq!(
                    event["data"],
                    json!({"id": id}),
                    "a left event carries no content"
                );
                format!("!{id}")
            } else {
                id
            }
        })
        .collect()
}

#[tokio::test]
async fn streams_deliver_only_what_the_rules_allow_live_and_on_replay() {
    let app = TestApp::spawn().await;
    notes(&app).await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "secrets", "rules": {"read": null}}),
    )
    .await;
    let ann_token = app.token(json!({"sub": "ann"}));
    let bob_token = app.token(json!({"sub": "bob"}));

    // Refusals: unknown 404, refused outright 401 (anonymous) or 403.
    let open = |path: String, token: Option<&str>| {
        let request = match token {
            Some(token) => client_with_token(token).get(app.url(&path)),
            None => app.anonymous.get(app.url(&path)),
        };
        async move { request.send().await.unwrap() }
    };
    assert_eq!(
        open("/api/v1/realtime/nope".into(), Some(&bob_token))
            .await
            .status(),
        404
    );
    assert_eq!(
        open("/api/v1/realtime/secrets".into(), Some(&bob_token))
            .await
            .status(),
        403
    );
    app.create_collection("members").await;
    assert_eq!(
        open("/api/v1/realtime/members".into(), None).await.status(),
        401
    );

    let mut bob_notes =
        SseClient::new(open("/api/v1/realtime/notes".into(), Some(&bob_token)).await);
    let connected = bob_notes.connected().await;
    let mut bob_all =
        SseClient::new(open(format!("/api/v1/realtime?token={bob_token}"), None).await);
    bob_all.connected().await;
    let mut public_only = SseClient::new(open("/api/v1/realtime/notes".into(), None).await);
    public_only.connected().await;

    let ann = client_with_token(&ann_token);
    let records = app.url("/api/v1/collections/notes/records");
    for (id, public) in [("a1", false), ("a2", true)] {
        ann.post(&records)
            .json(&json!({"id": id, "owner": "ann", "public": public}))
            .send()
            .await
            .unwrap();
    }
    app.post(
        "/api/v1/collections/secrets/records",
        &json!({"id": "s1", "owner": "bob"}),
    )
    .await;
    // a2 becomes private: bob and the anonymous stream see it leave.
    ann.patch(format!("{records}/a2"))
        .json(&json!({"public": false}))
        .send()
        .await
        .unwrap();
    // a1 becomes public: now they see it.
    ann.patch(format!("{records}/a1"))
        .json(&json!({"public": true, "text": "hello"}))
        .send()
        .await
        .unwrap();
    ann.delete(format!("{records}/a1")).send().await.unwrap();

    let expected = ["a2", "!a2", "a1", "a1"];
    assert_eq!(seen(&bob_notes.records(4).await), expected);
    assert_eq!(seen(&public_only.records(4).await), expected);
    // The global stream: the same, and nothing from `secrets`, not even its
    // creation (it was created before the stream opened) or its records.
    let mut global = Vec::new();
    while global.len() < 4 {
        let (kind, data) = bob_all.json_event().await;
        assert_ne!(data["collection"], "secrets", "{kind}: {data}");
        if kind.starts_with("record.") {
            global.push(data);
        }
    }
    assert_eq!(seen(&global), expected);

    // Replay from the first stream's start: the same events, same rules.
    let replayed = client_with_token(&bob_token)
        .get(app.url("/api/v1/realtime/notes"))
        .header("Last-Event-ID", &connected.id)
        .send()
        .await
        .unwrap();
    let mut replayed = SseClient::new(replayed);
    replayed.connected().await;
    assert_eq!(seen(&replayed.records(4).await), expected);
}

#[tokio::test]
async fn a_rule_change_ends_collection_streams_and_reaches_global_ones() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "board", "rules": {"read": "true"}}),
    )
    .await;
    let response = app
        .anonymous
        .get(app.url("/api/v1/realtime/board"))
        .send()
        .await
        .unwrap();
    let mut anonymous_board = SseClient::new(response);
    anonymous_board.connected().await;
    let bob_token = app.token(json!({"sub": "bob"}));
    let bob_all = app
        .anonymous
        .get(app.url(&format!("/api/v1/realtime?token={bob_token}")))
        .send()
        .await
        .unwrap();
    let mut bob_all = SseClient::new(bob_all);
    bob_all.connected().await;

    // Members only: the anonymous stream ends without seeing the change.
    app.patch(
        "/api/v1/collections/board",
        &json!({"rules": {"read": "$auth.sub != null"}}),
    )
    .await;
    // (A new stream may still see the collection's creation first.)
    let mut next = anonymous_board.next().await;
    if next
        .as_ref()
        .is_some_and(|event| event.event == "collection.created")
    {
        next = anonymous_board.next().await;
    }
    assert!(
        next.is_none(),
        "the stream ends, without the change: {next:?}"
    );
    let again = app
        .anonymous
        .get(app.url("/api/v1/realtime/board"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);

    // bob's global stream sees the change and goes on, under the new rules.
    let (mut kind, mut data) = bob_all.json_event().await;
    if kind == "collection.created" {
        (kind, data) = bob_all.json_event().await;
    }
    assert_eq!(
        (kind.as_str(), data["collection"].as_str()),
        ("collection.updated", Some("board"))
    );
    app.patch(
        "/api/v1/collections/board",
        &json!({"rules": {"read": null}}),
    )
    .await;
    app.create_record("board", json!({"id": "hidden"})).await;
    app.patch(
        "/api/v1/collections/board",
        &json!({"rules": {"read": "true"}}),
    )
    .await;
    app.create_record("board", json!({"id": "shown"})).await;
    let (kind, _) = bob_all.json_event().await;
    assert_eq!(kind, "collection.updated", "readable again");
    let (kind, data) = bob_all.json_event().await;
    assert_eq!(
        (kind.as_str(), data["record_id"].as_str()),
        ("record.created", Some("shown"))
    );
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let token = app.token(json!({"sub": "ann", "exp": now_secs() + 2}));
    let response = client_with_token(&token)
        .get(app.url("/api/v1/realtime/posts"))
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    stream.connected().await;
    let event = stream.event().await;
    assert_eq!(event.event, "token.expired");
    assert!(
        event.id.is_empty() || event.id.len() == 24,
        "no new id: {event:?}"
    );
    assert!(stream.next().await.is_none(), "then the stream ends");
}

#[tokio::test]
async fn tickets_open_one_stream_once() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let tickets = app.url("/api/v1/realtime/tickets");
    let anonymous = app.anonymous.post(&tickets).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let ann = app.user("ann");
    let issued = ann.post(&tickets).send().await.unwrap();
    assert_eq!(issued.status(), 201);
    let issued: Value = issued.json().await.unwrap();
    assert_eq!(issued["expires_in"], 30);
    let ticket = issued["ticket"].as_str().unwrap();
    let url = app.url(&format!("/api/v1/realtime/posts?ticket={ticket}"));
    let first = app.anonymous.get(&url).send().await.unwrap();
    assert_eq!(
        first.status(),
        200,
        "the ticket is ann's: she may read posts"
    );
    let mut stream = SseClient::new(first);
    stream.connected().await;
    let second = app.anonymous.get(&url).send().await.unwrap();
    let (status, _, message) = error_of(second).await;
    assert_eq!(status, 401);
    assert_eq!(message, "the ticket is unknown, used or expired");

    // A ticket opens streams only.
    let issued: Value = ann
        .post(&tickets)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = issued["ticket"].as_str().unwrap();
    let rest = app
        .anonymous
        .get(app.url(&format!("/api/v1/collections?ticket={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 401);

    // An expired ticket (stored as one would be, 31 s ago) is refused.
    app.store
        .create_ticket("0123abcd", &json!({"sub": "ann"}), now_secs() - 1)
        .await
        .unwrap();
    let stale = app
        .anonymous
        .get(app.url("/api/v1/realtime/posts?ticket=0123abcd"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
}

#[tokio::test]
async fn stream_limits_answer_429() {
    let mut config = test_config();
    config.max_streams_per_user = 2;
    config.max_streams_per_ip = 3;
    let app = TestApp::spawn_with(config).await;
    let ann = app.user("ann");
    let url = app.url("/api/v1/realtime");
    let mut open = Vec::new();
    for _ in 0..2 {
        let response = ann.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = SseClient::new(response);
        stream.connected().await;
        open.push(stream);
    }
    let (status, code, message) = error_of(ann.get(&url).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (429, "too_many_streams"));
    assert!(message.contains("per user"), "{message}");
    let response = app.anonymous.get(&url).send().await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "another caller from the same address"
    );
    let mut third = SseClient::new(response);
    third.connected().await;
    let (status, _, message) = error_of(app.anonymous.get(&url).send().await.unwrap()).await;
    assert_eq!(status, 429);
    assert!(message.contains("per address"), "{message}");
    // Closing a stream frees its place.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + crate::helpers::HANG_GUARD;
    loop {
        let response = ann.get(&url).send().await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cors_allows_the_configured_origins_with_last_event_id() {
    let mut config = test_config();
    config.cors_origins = vec!["https://app.example.com".into()];
    config.cors_credentials = true;
    let app = TestApp::spawn_with(config).await;
    let preflight = |origin: &'static str| {
        app.anonymous
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/realtime"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "last-event-id, authorization",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed_headers.contains("last-event-id"),
        "{allowed_headers}"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn writes_never_reveal_records_the_caller_cannot_read() {
    let app = TestApp::spawn().await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "vault", "rules": {"read": null, "update": "true", "delete": "true"}}),
    )
    .await;
    app.create_record("vault", json!({"id": "v1", "secret": "s3cr3t"}))
        .await;
    let ann = app.user("ann");
    let url = |collection: &str, id: &str| {
        app.url(&format!("/api/v1/collections/{collection}/records/{id}"))
    };
    // ann may write but not read: an existing record and a missing one
    // look the same, and nothing of the record comes back.
    for id in ["v1", "nope"] {
        let patched = ann
            .patch(url("vault", id))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 404, "{id}");
        assert!(!patched.text().await.unwrap().contains("s3cr3t"));
        let deleted = ann.delete(url("vault", id)).send().await.unwrap();
        assert_eq!(deleted.status(), 404, "{id}");
    }
    // Hidden and missing records look the same to a rule that depends on
    // the record, too.
    notes(&app).await;
    ann.post(app.url("/api/v1/collections/notes/records"))
        .json(&json!({"id": "a1", "owner": "ann", "public": false}))
        .send()
        .await
        .unwrap();
    let bob = app.user("bob");
    for id in ["a1", "missing"] {
        let patched = bob
            .patch(url("notes", id))
            .json(&json!({"x": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 404, "{id}");
        let replaced = bob
            .put(url("notes", id))
            .json(&json!({"owner": "bob"}))
            .send()
            .await
            .unwrap();
        assert_eq!(replaced.status(), 404, "{id}");
    }
    // A credential that does not decode is refused, never anonymous.
    let token = app.token(json!({"sub": "ann"}));
    let repeated = app
        .anonymous
        .get(app.url(&format!("/api/v1/collections?token={token}&token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(repeated).await.1, "invalid_query");
}

#[tokio::test]
async fn a_deleted_collection_is_not_replayed_under_a_new_one_of_the_same_name() {
    let app = TestApp::spawn().await;
    let mut admin = app.stream("/api/v1/realtime", None).await;
    let before = admin.connected().await.id;
    app.post(
        "/api/v1/collections",
        &json!({"name": "box", "rules": {"read": null}}),
    )
    .await;
    app.create_record("box", json!({"id": "old", "secret": true}))
        .await;
    app.delete("/api/v1/collections/box").await;
    // Not the same millisecond as the old collection's last change.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.post(
        "/api/v1/collections",
        &json!({"name": "box", "rules": {"read": "true"}}),
    )
    .await;
    app.create_record("box", json!({"id": "new"})).await;

    for path in ["/api/v1/realtime/box", "/api/v1/realtime"] {
        let response = app
            .anonymous
            .get(app.url(path))
            .header("Last-Event-ID", &before)
            .send()
            .await
            .unwrap();
        let mut replayed = SseClient::new(response);
        replayed.connected().await;
        let (kind, data) = loop {
            let (kind, data) = replayed.json_event().await;
            assert_ne!(data["record_id"], "old", "{path}: {data}");
            if kind.starts_with("collection.") {
                // Only the new collection, readable by all, is shown.
                assert_eq!(data["data"]["rules"]["read"], "true", "{path}: {data}");
            }
            if kind.starts_with("record.") {
                break (kind, data);
            }
        };
        assert_eq!(
            (kind.as_str(), data["record_id"].as_str()),
            ("record.created", Some("new"))
        );
    }
    // An admin replays the whole history.
    let mut all = Vec::new();
    while all.len() < 2 {
        let (kind, data) = admin.json_event().await;
        if kind.starts_with("record.") {
            all.push(data["record_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(all, ["old", "new"]);
}

/// A token signed with the test secret whose claims are `claims` exactly
/// as written (serde_json would fold repeated keys).
fn token_as_written(header: &str, claims: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", engine.encode(header), engine.encode(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(crate::helpers::TEST_SECRET.as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn tokens_issued_in_the_future_are_refused_beyond_the_clock_leeway() {
    let app = TestApp::spawn().await;
    notes(&app).await;
    let list = "/api/v1/collections/notes/records";
    for iat in [json!(now_secs() + 100_000), json!(1e20)] {
        let token = app.token(json!({"sub": "ann", "iat": iat}));
        let (status, _, message) = error_of(
            client_with_token(&token)
                .get(app.url(list))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401, "iat {iat}");
        assert!(message.contains("issued in the future"), "{message}");
    }
    // Within the clock leeway a token is accepted.
    let near = client_with_token(&app.token(json!({"sub": "ann", "iat": now_secs() + 3})));
    assert_eq!(near.get(app.url(list)).send().await.unwrap().status(), 200);
    // A string `iat` says nothing a sign-out can compare.
    let odd = app.token(json!({"sub": "ann", "iat": "yesterday"}));
    let response = client_with_token(&odd)
        .get(app.url(list))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    app.shutdown().await;
}

#[tokio::test]
async fn tokens_with_repeated_keys_are_refused() {
    let app = TestApp::spawn().await;
    let exp = now_secs() + 600;
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let plain = token_as_written(
        header,
        &format!(r#"{{"sub":"alice","role":"user","exp":{exp}}}"#),
    );
    let admin_last = token_as_written(
        header,
        &format!(r#"{{"sub":"alice","role":"user","exp":{exp},"role":"admin"}}"#),
    );
    let nested = token_as_written(
        header,
        &format!(r#"{{"sub":"alice","exp":{exp},"org":{{"id":1,"id":2}}}}"#),
    );
    let header_twice = token_as_written(
        r#"{"alg":"HS256","typ":"JWT","alg":"HS256"}"#,
        &format!(r#"{{"sub":"alice","exp":{exp}}}"#),
    );
    let collections = app.url("/api/v1/collections");
    let response = client_with_token(&plain)
        .get(&collections)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the same token without a repeat");
    for (token, key) in [(admin_last, "role"), (nested, "id"), (header_twice, "alg")] {
        let (status, _, message) = error_of(
            client_with_token(&token)
                .get(&collections)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401, "{key}");
        assert!(message.contains(&format!("`{key}`")), "{message}");
        // Nor does an admin-only route take it as an admin's.
        let created = client_with_token(&token)
            .post(&collections)
            .json(&json!({"name": "owned"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 401, "{key}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn every_credential_sent_must_verify() {
    let config = {
        let mut config = test_config();
        config.auth_cookie = "lh_token".into();
        config
    };
    let app = TestApp::spawn_with(config).await;
    notes(&app).await;
    let url = app.url("/api/v1/collections/notes/records");
    let good = app.token(json!({"sub": "ann"}));
    let bob = app.token(json!({"sub": "bob"}));
    let expired = app.token(json!({"sub": "ann", "exp": now_secs() - 60}));
    let client = reqwest::Client::new();
    let bearer = |token: &str| format!("Bearer {token}");
    // The good one alone passes.
    let alone = client.get(&url).header("authorization", bearer(&good));
    assert_eq!(alone.send().await.unwrap().status(), 200);
    // A bad `?token=` or cookie beside a good bearer is a 401.
    let with_param = client
        .get(format!("{url}?token=garbage"))
        .header("authorization", bearer(&good));
    let (status, _, _) = error_of(with_param.send().await.unwrap()).await;
    assert_eq!(status, 401, "a bad ?token= beside a good bearer");
    let with_cookie = client
        .get(&url)
        .header("authorization", bearer(&good))
        .header("cookie", format!("lh_token={expired}"));
    let (status, _, message) = error_of(with_cookie.send().await.unwrap()).await;
    assert_eq!((status, message.as_str()), (401, "the token has expired"));
    // Two good credentials of two users are refused too.
    let two_users = client
        .get(&url)
        .header("authorization", bearer(&good))
        .header("cookie", format!("lh_token={bob}"));
    let (status, _, message) = error_of(two_users.send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(message.contains("different users"), "{message}");
    // The same user's token twice is one caller.
    let twice = client
        .get(format!("{url}?token={good}"))
        .header("authorization", bearer(&good));
    assert_eq!(twice.send().await.unwrap().status(), 200);
    // Two Authorization headers are a 400, whichever comes first.
    let headers = client
        .get(&url)
        .header("authorization", bearer(&good))
        .header("authorization", "Bearer garbage");
    let (status, code, _) = error_of(headers.send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "invalid_credentials"));
    // A ticket beside a token of another user does not open a stream.
    let ticket: Value = client
        .post(app.url("/api/v1/realtime/tickets"))
        .header("authorization", bearer(&bob))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap();
    let stream = client
        .get(app.url(&format!(
            "/api/v1/realtime/notes?ticket={ticket}&token={good}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 401);
    app.shutdown().await;
}
