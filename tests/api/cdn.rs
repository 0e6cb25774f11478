//! Change pages for a public audience through the real nginx with the
//! shipped `deploy/nginx/changes-cache.conf`: long polls of one public query
//! collapse into about one request to livehub per change, and no cached
//! page outlives the rule it was read under by more than
//! `--shared-cache-max-age`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{HANG_GUARD, TestApp, test_config};
use crate::nginx::nginx_with;

/// Long polls waiting at once on one public query.
const VIEWERS: usize = 2_000;
/// Changes written while they wait.
const CHANGES: usize = 5;

/// `livehub_change_page_requests_total`: change pages asked of livehub.
async fn page_requests(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("livehub_change_page_requests_total "))
        .expect("livehub_change_page_requests_total in /metrics")
        .parse()
        .unwrap()
}

/// The cursor at the edge of `board` now, as `client` reads it through
/// the nginx at `nginx`.
async fn edge_cursor(client: &reqwest::Client, nginx: &str) -> String {
    let url = format!("{nginx}/api/v1/changes?collections=board&since=now");
    let edge: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    edge["next"].as_str().unwrap().to_owned()
}

/// A viewer: long polls from `since` until it has seen `until`, and
/// returns when it got each record (by id).
async fn viewer(
    client: reqwest::Client,
    url: String,
    mut since: String,
    until: &'static str,
) -> Vec<(String, Instant)> {
    let mut seen = Vec::new();
    loop {
        let response = client
            .get(format!("{url}&since={since}"))
            .send()
            .await
            .expect("nginx answers");
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        let at = Instant::now();
        for event in page["events"].as_array().unwrap() {
            if let Some(id) = event["record_id"].as_str() {
                seen.push((id.to_owned(), at));
            }
        }
        since = page["next"].as_str().unwrap().to_owned();
        if seen.iter().any(|(id, _)| id == until) {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_of_one_public_query_cost_livehub_about_one_request_per_change() {
    let app = TestApp::spawn().await;
    app.create_public_collection("board").await;
    let nginx = nginx_with(&[app.address.trim_start_matches("http://")], true).await;
    let url = format!("{}/api/v1/changes?collections=board&wait=30s", nginx.url);
    // Every viewer starts from one cursor at the edge, so none can miss a
    // change by asking late.
    let since = edge_cursor(&app.anonymous, &nginx.url).await;
    let before = page_requests(&app).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| tokio::spawn(viewer(client.clone(), url.clone(), since.clone(), "c4")))
        .collect();
    // Let the viewers' first polls reach nginx (a late one still starts
    // from the same cursor, so this only makes the collapse measurable).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut written = Vec::new();
    for n in 0..CHANGES {
        let id = format!("c{n}");
        written.push((id.clone(), Instant::now()));
        app.create_record("board", json!({"id": id})).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let mut latest = vec![Duration::ZERO; CHANGES];
    for viewer in viewers {
        let seen = tokio::time::timeout(HANG_GUARD * 3, viewer)
            .await
            .expect("every viewer gets every change")
            .unwrap();
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            ["c0", "c1", "c2", "c3", "c4"],
            "each change once, in order"
        );
        for (n, (_, at)) in seen.iter().enumerate() {
            latest[n] = latest[n].max(at.duration_since(written[n].1));
        }
    }
    let requests = page_requests(&app).await - before;
    eprintln!(
        "{VIEWERS} long polls, {CHANGES} changes: {requests} requests reached livehub; \
         the last viewer had each change after {latest:?}"
    );
    // A handful per change: about one, and one more now and then for a
    // viewer that asked after its page left the cache; without sharing the
    // answer, every viewer's poll reaches livehub.
    assert!(
        requests <= 4 * CHANGES as u64 + 4,
        "{requests} requests reached livehub for {CHANGES} changes"
    );
}

/// A page of `collection` from the start, through `nginx`, anonymously:
/// (status, `X-Cache-Status`, `Cache-Control`).
async fn history_page(nginx: &str, collection: &str) -> (u16, String, String) {
    let response = reqwest::get(format!(
        "{nginx}/api/v1/changes?collections={collection}&since=earliest&limit=2"
    ))
    .await
    .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (cache, control) = (header("x-cache-status"), header("cache-control"));
    (response.status().as_u16(), cache, control)
}

#[tokio::test]
async fn a_cached_page_outlives_a_tightened_rule_or_a_deleted_collection_by_at_most_the_shared_bound()
 {
    let mut config = test_config();
    config.shared_cache_max_age = Duration::from_secs(2);
    let app = TestApp::spawn_with(config).await;
    for name in ["tightened", "deleted"] {
        app.create_public_collection(name).await;
        for n in 0..4 {
            app.create_record(name, json!({"id": format!("r{n}")}))
                .await;
        }
    }
    let nginx = nginx_with(&[app.address.trim_start_matches("http://")], true).await;
    for name in ["tightened", "deleted"] {
        let (status, cache, control) = history_page(&nginx.url, name).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"));
        assert_eq!(control, "public, max-age=2, immutable");
        let (_, cache, _) = history_page(&nginx.url, name).await;
        assert_eq!(cache, "HIT", "a history page is served by nginx");
    }
    let tightened = app
        .patch(
            "/api/v1/collections/tightened",
            &json!({"rules": {"read": null}}),
        )
        .await;
    assert_eq!(tightened.status(), 200);
    assert_eq!(
        app.delete("/api/v1/collections/deleted").await.status(),
        204
    );
    let changed = Instant::now();
    // Past the bound (nginx counts whole seconds, so up to a second more),
    // nginx asks livehub again, which now refuses.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let (status, cache, _) = history_page(&nginx.url, "tightened").await;
    assert_ne!(cache, "HIT");
    assert_eq!(
        status, 401,
        "anonymous readers are refused under the new rule"
    );
    let (status, cache, _) = history_page(&nginx.url, "deleted").await;
    assert_ne!(cache, "HIT");
    // (An anonymous caller is not told whether a collection exists.)
    assert_eq!(status, 401, "a deleted collection's pages are gone");
    assert!(changed.elapsed() < HANG_GUARD);

    // A signed-in reader's page is private, and no cache is told to keep
    // it past the retention of its cursor.
    let response = app
        .client
        .get(format!(
            "{}/api/v1/changes?collections=tightened&since=earliest&limit=2",
            nginx.url
        ))
        .send()
        .await
        .unwrap();
    let control = response.headers()["cache-control"].to_str().unwrap();
    let max_age = crate::helpers::private_max_age(control);
    assert!(
        max_age <= 24 * 3600,
        "{control} outlives the 24 h retention"
    );
}

#[tokio::test]
async fn signed_in_long_polls_go_around_the_shared_cache() {
    let app = TestApp::spawn().await;
    app.create_public_collection("board").await;
    let nginx = nginx_with(&[app.address.trim_start_matches("http://")], true).await;
    let ann = app.user("ann");
    let url = format!("{}/api/v1/changes?collections=board", nginx.url);
    let since = edge_cursor(&ann, &nginx.url).await;
    let polls: Vec<_> = (0..50)
        .map(|_| {
            let poll = ann.get(format!("{url}&since={since}&wait=30s")).send();
            tokio::spawn(poll)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.create_record("board", json!({"id": "b1"})).await;
    // Held in line behind the cache lock, fifty polls would take half a
    // second each after the first.
    let all = futures::future::join_all(polls);
    let answers = tokio::time::timeout(HANG_GUARD, all)
        .await
        .expect("every signed-in poll is answered");
    for answer in answers {
        let response = answer.unwrap().unwrap();
        assert_eq!(response.headers()["x-cache-status"], "BYPASS");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["events"][0]["record_id"], "b1");
    }
}
