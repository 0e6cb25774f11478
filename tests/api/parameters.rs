//! Misspelt and misplaced query parameters, over HTTP: each is a 400 that
//! names it and what was meant, where it used to be ignored (a list with
//! `query=` answered every record, a stream with `filter=` was unfiltered).
//! And the access log: one line per request at the default level.

use serde_json::{Value, json};

use crate::binary::{start_binary, stop_binary};
use crate::helpers::TestApp;

async fn refused(app: &TestApp, path: &str) -> String {
    let admin =
        crate::helpers::client_with_token(&app.token(json!({"sub": "admin", "role": "admin"})));
    let response = admin.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 400, "{path}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_parameter", "{path}: {body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_parameter_a_route_does_not_take_is_refused_with_what_was_meant() {
    let app = TestApp::spawn().await;
    app.create_collection("notes").await;
    app.create_record("notes", json!({"id": "n1", "owner": "ann"}))
        .await;

    let message = refused(&app, "/api/v1/collections/notes/records?query=owner=nobody").await;
    assert_eq!(
        message,
        "unknown parameter \"query\" on a record list; did you mean \"filter\"? \
         (it takes limit, cursor, sort, filter, fields)"
    );
    let message = refused(&app, "/api/v1/realtime/notes?filter=owner%3Dann").await;
    assert!(message.contains("did you mean \"query\"?"), "{message}");
    let message = refused(&app, "/api/v1/changes?collection=notes&since=earliest").await;
    assert!(
        message.contains("did you mean \"collections\"?"),
        "{message}"
    );
    let message = refused(&app, "/api/v1/realtime/notes?qurey=owner%3Dann").await;
    assert!(message.contains("did you mean \"query\"?"), "{message}");
    // `&&` unencoded: the URL's `&` cut the filter in two.
    let message = refused(&app, "/api/v1/realtime/notes?query=owner=ann&&id~n").await;
    assert!(
        message.contains("\"id~n\"") && message.contains("%26%26"),
        "{message}"
    );
    // Routes that take no parameters say so.
    let message = refused(&app, "/api/v1/collections?limit=5").await;
    assert!(
        message.ends_with("(it takes none but `token`)"),
        "{message}"
    );

    // A method the route does not have is a 405 whatever the query says.
    let traced = app
        .client
        .request(
            reqwest::Method::TRACE,
            app.url("/api/v1/collections/notes/records?qurey=x"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 405);

    // What the routes take still works, credentials included.
    let token = app.token(json!({"sub": "admin", "role": "admin"}));
    let listed = app
        .client
        .get(app.url(&format!(
            "/api/v1/collections/notes/records?filter=owner%3Dnobody&limit=5&token={token}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    app.shutdown().await;
}

#[tokio::test]
async fn every_request_is_logged_at_the_default_level_without_its_token() {
    const SECRET: &str = "a secret for the access log test, 32+ bytes";
    let log = tempfile::NamedTempFile::new().unwrap();
    let (child, base) =
        start_binary(&[], &[("LIVEHUB_JWT_SECRET", SECRET)], Some(log.as_file())).await;
    let client = reqwest::Client::new();
    let refused = client
        .get(format!("{base}/api/v1/collections?token=not.a.token"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let listed = client
        .get(format!("{base}/api/v1/presence"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 401);
    stop_binary(child).await;
    let output = std::fs::read_to_string(log.path()).unwrap();
    let lines: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("livehub::access"))
        .collect();
    let collections = lines
        .iter()
        .find(|line| line.contains("path=/api/v1/collections"))
        .unwrap_or_else(|| panic!("no access line for the 401:\n{output}"));
    assert!(collections.contains("status=401"), "{collections}");
    assert!(collections.contains("client=127.0.0.1"), "{collections}");
    assert!(collections.contains("ms="), "{collections}");
    assert!(collections.contains("token=[redacted]"), "{collections}");
    assert!(!output.contains("not.a.token"), "{output}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("path=/api/v1/presence")),
        "{output}"
    );

    // Off with the flag.
    let quiet = tempfile::NamedTempFile::new().unwrap();
    let (child, base) = start_binary(
        &["--access-log", "false"],
        &[("LIVEHUB_JWT_SECRET", SECRET)],
        Some(quiet.as_file()),
    )
    .await;
    let answered = client
        .get(format!("{base}/api/v1/presence"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 401);
    stop_binary(child).await;
    let output = std::fs::read_to_string(quiet.path()).unwrap();
    assert!(!output.contains("livehub::access"), "{output}");
}
