//! openapi.yaml is the HTTP contract: every routed path and method is in it,
//! and everything in it is served.

use std::collections::BTreeSet;

use crate::helpers::TestApp;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(method, path)` pairs documented in openapi.yaml.
fn documented() -> BTreeSet<(String, String)> {
    let spec: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml parses");
    let paths = spec["paths"].as_mapping().expect("a paths map");
    let mut pairs = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().unwrap();
        for method in METHODS {
            if item.get(method).is_some() {
                pairs.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    pairs
}

/// `(method, path)` pairs routed in src/routes/mod.rs, read from the source:
/// each `.route("path", get(..).post(..))` call, where the path may be the
/// stream prefix `STREAMS` or a `format!` of it.
fn routed() -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/routes/mod.rs");
    let streams = source
        .split("const STREAMS: &str = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the stream prefix");
    let mut pairs = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        let call = call.split(".fallback(").next().unwrap();
        let first = call.split(',').next().unwrap().trim();
        let path = if first == "STREAMS" {
            streams.to_owned()
        } else {
            call.split('"')
                .nth(1)
                .expect("a path literal")
                .replace("{STREAMS}", streams)
                .replace("{{", "{")
                .replace("}}", "}")
        };
        let path = path.as_str();
        for method in METHODS {
            let called = call.match_indices(&format!("{method}(")).any(|(at, _)| {
                at == 0
                    || !call.as_bytes()[at - 1].is_ascii_alphanumeric()
                        && call.as_bytes()[at - 1] != b'_'
            });
            if called {
                pairs.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    pairs
}

#[test]
fn openapi_documents_exactly_the_routed_paths_and_methods() {
    let routed = routed();
    assert!(routed.len() >= 14, "routes found: {routed:?}");
    assert_eq!(documented(), routed);
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    for (method, path) in documented() {
        let url = app.url(&path.replace("{name}", "posts").replace("{id}", "some-id"));
        let request = match method.as_str() {
            "get" => app.client.get(&url),
            "post" => app.client.post(&url),
            "put" => app.client.put(&url),
            "patch" => app.client.patch(&url),
            "delete" => app.client.delete(&url),
            other => unreachable!("{other}"),
        };
        let response = request.json(&serde_json::json!({})).send().await.unwrap();
        let status = response.status();
        assert_ne!(status, 405, "{method} {path}");
        assert!(status.as_u16() < 500, "{method} {path}: {status}");
        if status == 404 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn the_contract_is_served() {
    let app = TestApp::spawn().await;
    let response = app.get("/openapi.yaml").await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().starts_with("openapi: 3.1"));
}

#[tokio::test]
async fn the_demo_page_is_served_and_knows_every_event_type() {
    let app = TestApp::spawn().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("EventSource"));
    for event in [
        "connected",
        "reset",
        "record.created",
        "record.updated",
        "record.deleted",
        "collection.created",
        "collection.updated",
        "collection.deleted",
    ] {
        assert!(
            page.contains(&format!("'{event}'")) || page.contains(&format!("\"{event}\"")),
            "{event}"
        );
    }
}
