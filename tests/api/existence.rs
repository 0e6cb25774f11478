//! What livehub promises about existence (README, "Authentication and
//! access rules"): a record the caller may not read is answered on every
//! route exactly as a record that does not exist, except that `create`
//! says an id is taken; collection names are hidden from anonymous callers
//! only.

use serde_json::{Value, json};

use crate::helpers::{SseClient, TestApp};

/// `notes`: each user reads and writes only their own.
async fn private_notes(app: &TestApp) {
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "notes", "rules": {
                "read": "owner = $auth.sub",
                "create": "owner = $auth.sub",
                "update": "owner = $auth.sub",
                "delete": "owner = $auth.sub",
            }}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

/// Status and body, with `id` written as `<id>` so that the answers for
/// two ids compare.
async fn answer_for(response: reqwest::Response, id: &str) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, body.replace(id, "<id>"))
}

/// The record ids a stream's snapshot (or its next snapshot) carries.
async fn snapshot_ids(stream: &mut SseClient) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let event = stream.event().await;
        match event.event.as_str() {
            "snapshot.done" => return ids,
            "record.snapshot" => {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                ids.push(data["record_id"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_record_the_caller_cannot_read_is_answered_as_a_missing_one() {
    let app = TestApp::spawn().await;
    private_notes(&app).await;
    app.create_public_collection("open").await;
    let ann = app.user("ann");
    let created = ann
        .post(app.url("/api/v1/collections/notes/records"))
        .json(&json!({"id": "hidden", "owner": "ann", "secret": "S3CRET"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let bob = app.user("bob");
    let record = |id: &str| app.url(&format!("/api/v1/collections/notes/records/{id}"));
    // Read, update, delete: the hidden record and a missing one alike.
    let mut answers = Vec::new();
    for id in ["hidden", "missing"] {
        let shown = answer_for(bob.get(record(id)).send().await.unwrap(), id).await;
        let merged = bob.patch(record(id)).json(&json!({"owner": "bob"}));
        let merged = answer_for(merged.send().await.unwrap(), id).await;
        let replaced = bob.put(record(id)).json(&json!({"owner": "bob"}));
        let replaced = answer_for(replaced.send().await.unwrap(), id).await;
        let deleted = answer_for(bob.delete(record(id)).send().await.unwrap(), id).await;
        // A list, a change page and a stream's snapshot filtered to the id.
        let listed = bob.get(app.url(&format!(
            "/api/v1/collections/notes/records?filter=id=\"{id}\""
        )));
        let listed: Value = listed.send().await.unwrap().json().await.unwrap();
        let paged = bob.get(app.url(&format!(
            "/api/v1/changes?collections=notes&since=earliest&query=id=\"{id}\""
        )));
        let paged: Value = paged.send().await.unwrap().json().await.unwrap();
        let response = bob
            .get(app.url(&format!(
                "/api/v1/realtime/notes?snapshot=true&query=id=\"{id}\""
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = SseClient::new(response);
        let connected: Value = serde_json::from_str(&stream.connected().await.data).unwrap();
        let _ = connected;
        let snapshot = snapshot_ids(&mut stream).await;
        // A subscription added to an open stream (of another collection),
        // with its snapshot.
        let response = bob
            .get(app.url("/api/v1/realtime/open"))
            .send()
            .await
            .unwrap();
        let mut stream = SseClient::new(response);
        let connected: Value = serde_json::from_str(&stream.connected().await.data).unwrap();
        let connection = connected["connection_id"].as_str().unwrap();
        let added = bob
            .post(app.url(&format!(
                "/api/v1/realtime/connections/{connection}/subscriptions"
            )))
            .json(&json!({"collection": "notes", "query": format!("id = \"{id}\""), "snapshot": true}))
            .send()
            .await
            .unwrap();
        assert!(added.status().is_success(), "{}", added.status());
        let added_snapshot = snapshot_ids(&mut stream).await;
        answers.push((
            id,
            [shown, merged, replaced, deleted],
            listed["items"].clone(),
            // Record events only (the collection's creation is there too).
            paged["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|event| !event["record_id"].is_null())
                .cloned()
                .collect::<Vec<_>>(),
            snapshot,
            added_snapshot,
        ));
    }
    let (_, hidden_rest) = answers.split_at(1);
    let (hidden, missing) = (&answers[0], &hidden_rest[0]);
    assert_eq!(hidden.1, missing.1, "read, update and delete");
    assert!(hidden.1.iter().all(|(status, _)| *status == 404));
    assert_eq!(hidden.2, json!([]), "list");
    assert!(hidden.3.is_empty(), "change page");
    assert!(hidden.4.is_empty(), "stream snapshot");
    assert!(hidden.5.is_empty(), "subscription snapshot");
    assert_eq!(
        (&hidden.2, &hidden.3, &hidden.4, &hidden.5),
        (&missing.2, &missing.3, &missing.4, &missing.5)
    );
    // Creating with a taken id is the one exception, and it tells that
    // the id is taken, nothing of the record: the same answer as for a
    // taken id of the caller's own.
    let taken = bob
        .post(app.url("/api/v1/collections/notes/records"))
        .json(&json!({"id": "hidden", "owner": "bob"}))
        .send()
        .await
        .unwrap();
    let taken = answer_for(taken, "hidden").await;
    let own = json!({"id": "bobs", "owner": "bob"});
    let first = bob
        .post(app.url("/api/v1/collections/notes/records"))
        .json(&own);
    assert_eq!(first.send().await.unwrap().status(), 201);
    let again = bob
        .post(app.url("/api/v1/collections/notes/records"))
        .json(&own);
    let again = answer_for(again.send().await.unwrap(), "bobs").await;
    assert_eq!(taken.0, 409);
    assert_eq!(taken, again);
    assert!(!taken.1.contains("S3CRET") && !taken.1.contains("ann"));
    app.shutdown().await;
}

#[tokio::test]
async fn collection_names_are_hidden_from_anonymous_callers_only() {
    let app = TestApp::spawn().await;
    let created = app
        .post(
            "/api/v1/collections",
            &json!({"name": "staff", "rules": {"read": null, "create": null}}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let bob = app.user("bob");
    let routes = |name: &str| {
        [
            ("GET", format!("/api/v1/collections/{name}")),
            ("GET", format!("/api/v1/collections/{name}/records")),
            ("GET", format!("/api/v1/collections/{name}/records/r1")),
            ("POST", format!("/api/v1/collections/{name}/records")),
            ("GET", format!("/api/v1/realtime/{name}")),
            (
                "GET",
                format!("/api/v1/changes?collections={name}&since=now"),
            ),
        ]
    };
    // (who, method) -> (staff, an unknown name): an anonymous caller gets
    // the default rules' refusal for both; a signed-in one tells them
    // apart on reads, and gets the default `create` rule's refusal (admins
    // only) for both.
    let expected = |who: &str, method: &str| match (who, method) {
        ("anonymous", _) => (401, 401),
        (_, "POST") => (403, 403),
        _ => (403, 404),
    };
    for (client, who) in [(&app.anonymous, "anonymous"), (&bob, "bob")] {
        for ((method, hidden), (_, unknown)) in routes("staff").iter().zip(routes("nothing")) {
            let send = |path: &str| {
                let url = app.url(path);
                match *method {
                    "POST" => client.post(url).json(&json!({"x": 1})),
                    _ => client.get(url),
                }
                .send()
            };
            let hidden_answer = send(hidden).await.unwrap().status().as_u16();
            let unknown_answer = send(&unknown).await.unwrap().status().as_u16();
            assert_eq!(
                (hidden_answer, unknown_answer),
                expected(who, method),
                "{who} {method} {hidden}"
            );
        }
    }
    app.shutdown().await;
}
