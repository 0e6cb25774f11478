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

/// The README's live list in plain JavaScript, run in Node.js (its
/// `EventSource` is the real one, `--experimental-eventsource`) against a
/// real server: it must end with exactly the published posts.
#[tokio::test]
async fn the_readme_live_list_keeps_exactly_the_matching_records() {
    use tokio::io::AsyncBufReadExt;

    let readme = include_str!("../../README.md");
    let snippet = readme
        .split("## Live queries")
        .nth(1)
        .and_then(|rest| rest.split("```js\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README shows a live list");
    assert!(
        snippet.lines().count() < 30,
        "the README promises under 30 lines"
    );
    let app = TestApp::spawn().await;
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "posts", "rules": {"read": "true"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    app.create_record(
        "posts",
        json!({"id": "p1", "status": "published", "title": "One"}),
    )
    .await;
    app.create_record(
        "posts",
        json!({"id": "p2", "status": "draft", "title": "Two"}),
    )
    .await;
    // The page's relative URL, resolved against the test server.
    let script = format!(
        "const Native = globalThis.EventSource;\n\
         globalThis.EventSource = class extends Native {{\n\
           constructor(url, init) {{ super(new URL(url, {base:?}), init); }}\n\
         }};\n{snippet}\n",
        base = app.url("/")
    );
    let file = tempfile::Builder::new().suffix(".mjs").tempfile().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let mut node = tokio::process::Command::new("node")
        .arg("--experimental-eventsource")
        .arg("--no-warnings")
        .arg(file.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("Node.js runs (the machine has it; .ci/run checks)");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    // Each line is the list after one event; wait for a state.
    let mut wait_for = async |ids: &[&str]| -> serde_json::Value {
        loop {
            let line = tokio::time::timeout(crate::helpers::HANG_GUARD, lines.next_line())
                .await
                .expect("the page printed its list")
                .unwrap()
                .expect("node is running");
            let list: serde_json::Value = serde_json::from_str(&line).unwrap();
            let mut shown: Vec<&str> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|post| post["id"].as_str().unwrap())
                .collect();
            shown.sort();
            if shown == ids {
                return list;
            }
        }
    };
    wait_for(&["p1"]).await;
    app.create_record(
        "posts",
        json!({"id": "p3", "status": "published", "title": "Three"}),
    )
    .await;
    app.patch(
        "/api/v1/collections/posts/records/p1",
        &json!({"title": "One, edited"}),
    )
    .await;
    app.patch(
        "/api/v1/collections/posts/records/p2",
        &json!({"status": "published"}),
    )
    .await;
    app.patch(
        "/api/v1/collections/posts/records/p3",
        &json!({"status": "draft"}),
    )
    .await;
    app.delete("/api/v1/collections/posts/records/p1").await;
    let list = wait_for(&["p2"]).await;
    assert_eq!(
        list,
        json!([{"id": "p2", "status": "published", "title": "Two"}])
    );
    // An edit through a patch reaches the page's copy.
    app.patch(
        "/api/v1/collections/posts/records/p2",
        &json!({"title": "Two, edited", "extra": {"a": 1}}),
    )
    .await;
    loop {
        let list = wait_for(&["p2"]).await;
        if list[0]["title"] == "Two, edited" {
            assert_eq!(
                list,
                json!([{"id": "p2", "status": "published", "title": "Two, edited", "extra": {"a": 1}}])
            );
            break;
        }
    }
}

/// The README's batch example, run with the shell and curl against a real
/// server: it prints what its comment says.
#[tokio::test]
async fn the_readme_batch_example_prints_what_it_says() {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("## Writing fast: batches and back-pressure")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README shows a batch");
    let (command, shown) = block
        .rsplit_once("\n# ")
        .expect("a command, then its output");
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let token = app.token(json!({"sub": "admin", "role": "admin"}));
    let command = command.replace("localhost:8000", app.address.trim_start_matches("http://"));
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&command)
        .env("TOKEN", token)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{command}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(printed.trim(), shown.trim(), "{command}");
    app.shutdown().await;
}
