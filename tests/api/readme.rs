//! The README's walkthrough, run for real: the stream prints what the README
//! says it prints (up to ids, connection ids and times).

use regex::Regex;
use serde_json::json;

use crate::helpers::TestApp;

/// Replaces what differs from run to run with placeholders.
fn normalize(text: &str) -> String {
    let text = Regex::new(r"\b[0-9a-f]{24}\b")
        .unwrap()
        .replace_all(text, "<ID>");
    let text = Regex::new(r#""connection_id":"[^"]*""#)
        .unwrap()
        .replace_all(&text, r#""connection_id":"<C>""#);
    let text = Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
        .unwrap()
        .replace_all(&text, "<TIME>");
    text.trim().to_owned()
}

#[tokio::test]
async fn the_readme_walkthrough_prints_what_it_says() {
    let readme = include_str!("../../README.md");
    let shown = readme
        .split("The stream prints:\n\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README shows the stream's output");

    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let response = app
        .client
        .get(app.url("/api/v1/realtime/posts?query=status=published"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    app.create_record(
        "posts",
        json!({"id": "hello", "title": "Hello", "status": "published"}),
    )
    .await;

    use futures::StreamExt;
    let mut printed = String::new();
    while !printed.contains("event: record.created") || !printed.ends_with("\n\n") {
        let chunk = tokio::time::timeout(crate::helpers::HANG_GUARD, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        printed.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // A new stream may also see the collection's creation first; the README
    // shows the common case.
    let printed = match printed.split_once("event: collection.created") {
        Some(_) => {
            let mut messages: Vec<&str> = printed.split("\n\n").collect();
            messages.retain(|m| !m.contains("event: collection.created"));
            messages.join("\n\n")
        }
        None => printed,
    };
    assert_eq!(normalize(&printed), normalize(shown));
}

#[tokio::test]
async fn the_readme_rules_example_works_as_described() {
    let readme = include_str!("../../README.md");
    // The JSON body of the rules example: `-d '{"name": "notes", ...}'`.
    let body = readme
        .split("-d '{\"name\": \"notes\"")
        .nth(1)
        .and_then(|rest| rest.split("}}'").next())
        .map(|rest| format!("{{\"name\": \"notes\"{rest}}}}}"))
        .expect("the README shows a collection with rules");
    let body: serde_json::Value = serde_json::from_str(&body).expect("the example is JSON");

    let app = TestApp::spawn().await;
    let created = app.post("/api/v1/collections", &body).await;
    assert_eq!(created.status(), 201);
    // As described: owners read their own notes and public ones.
    let ann = app.user("ann");
    let bob = app.user("bob");
    let records = app.url("/api/v1/collections/notes/records");
    for (id, public) in [("private", false), ("shared", true)] {
        let response = ann
            .post(&records)
            .json(&json!({"id": id, "owner": "ann", "public": public}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let listed: serde_json::Value = bob
        .get(&records)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["shared"]);
}
