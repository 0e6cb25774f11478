//! Answers judged when they are sent, not only when they were asked for: a
//! long poll whose caller lost access meanwhile (a rule tightened, a
//! sign-out, an expired token) gets what a fresh request would get, never
//! the data.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{HANG_GUARD, TestApp, client_with_token, now_secs};

/// Status and body of a request.
async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The cursor of `client`'s page at the edge of `collection` now.
async fn edge(app: &TestApp, client: &reqwest::Client, collection: &str) -> String {
    let (status, body) = answer(client.get(app.url(&format!(
        "/api/v1/changes?collections={collection}&since=now"
    ))))
    .await;
    assert_eq!(status, 200, "{body}");
    body["next"].as_str().unwrap().to_owned()
}

/// Starts a long poll of `collection` after `since` by `client`.
fn long_poll(
    app: &TestApp,
    client: &reqwest::Client,
    collection: &str,
    since: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let request = client.get(app.url(&format!(
        "/api/v1/changes?collections={collection}&since={since}&wait=120s"
    )));
    tokio::spawn(answer(request))
}

/// The answer of a long poll, which must come before the hang guard.
async fn answered(poll: tokio::task::JoinHandle<(u16, Value)>) -> (u16, Value) {
    tokio::time::timeout(HANG_GUARD, poll)
        .await
        .expect("the long poll answered")
        .unwrap()
}

/// Until the hub has the subscriptions of `count` long polls (besides
/// `others`), so a change made next reaches them live.
async fn until_waiting(app: &TestApp, others: usize, count: usize) {
    tokio::time::timeout(HANG_GUARD, async {
        while app.hub.subscriptions().0 < others + count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the long polls subscribed");
}

#[tokio::test]
async fn a_long_poll_answers_as_a_fresh_request_once_the_rule_tightens() {
    let app = TestApp::spawn().await;
    app.create_public_collection("board").await;
    let ann = app.user("ann");
    let since = edge(&app, &app.anonymous, "board").await;
    let before = app.hub.subscriptions().0;
    let anonymous_poll = long_poll(&app, &app.anonymous, "board", &since);
    let ann_poll = long_poll(&app, &ann, "board", &since);
    until_waiting(&app, before, 2).await;
    // Admins only from now on, then a write that neither may see.
    let tightened = app
        .patch(
            "/api/v1/collections/board",
            &json!({"rules": {"read": null}}),
        )
        .await;
    assert_eq!(tightened.status(), 200);
    app.create_record("board", json!({"id": "b1", "secret": "AFTER-TIGHTEN"}))
        .await;
    for (who, client, poll) in [
        ("anonymous", &app.anonymous, anonymous_poll),
        ("ann", &ann, ann_poll),
    ] {
        let (status, body) = answered(poll).await;
        assert!(
            !body.to_string().contains("AFTER-TIGHTEN"),
            "{who} got the record after losing access: {body}"
        );
        // The same answer a fresh request gets.
        let (fresh, fresh_body) = answer(
            client.get(app.url(&format!("/api/v1/changes?collections=board&since={since}"))),
        )
        .await;
        assert_eq!((status, &body), (fresh, &fresh_body), "{who}");
        assert!(matches!(status, 401 | 403), "{who}: {status} {body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_of_a_signed_out_user_answers_401() {
    let app = TestApp::spawn().await;
    app.create_public_collection("board").await;
    let ann = client_with_token(&app.token(json!({"sub": "ann", "iat": now_secs() - 10})));
    let since = edge(&app, &ann, "board").await;
    let before = app.hub.subscriptions().0;
    let poll = long_poll(&app, &ann, "board", &since);
    until_waiting(&app, before, 1).await;
    let signed_out = app
        .post("/api/v1/admin/users/ann/disconnect", &json!({}))
        .await;
    assert_eq!(signed_out.status(), 202);
    app.create_record("board", json!({"id": "b1", "secret": "AFTER-SIGN-OUT"}))
        .await;
    let (status, body) = answered(poll).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.to_string().contains("AFTER-SIGN-OUT"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_ends_with_a_401_when_its_token_expires() {
    let app = TestApp::spawn().await;
    app.create_public_collection("board").await;
    let expires = now_secs() + 2;
    let ann = client_with_token(&app.token(json!({"sub": "ann", "exp": expires})));
    let since = edge(&app, &ann, "board").await;
    let before = app.hub.subscriptions().0;
    let poll = long_poll(&app, &ann, "board", &since);
    until_waiting(&app, before, 1).await;
    // A write after the token expired.
    while now_secs() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.create_record("board", json!({"id": "b1", "secret": "AFTER-EXPIRY"}))
        .await;
    let (status, body) = answered(poll).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "the token has expired", "{body}");
    app.shutdown().await;
}
