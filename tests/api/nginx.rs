//! livehub behind the real nginx, configured with the shipped
//! `deploy/nginx/livehub.conf`: streams pass through unbuffered, and the
//! client's address reaches livehub's per-address limits.

use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::helpers::{HANG_GUARD, SseClient, TestApp, test_config};

/// nginx on a free loopback port in front of `upstream`, with the repo's
/// locations; stopped when dropped.
pub struct Nginx {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so the master stops its workers too (SIGKILL would leave
        // them behind).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// nginx in front of the livehub nodes at `upstreams` (`host:port`s).
pub async fn nginx_in_front_of(upstreams: &[&str]) -> Nginx {
    nginx_with(upstreams, false).await
}

/// nginx in front of `upstreams`, with the shipped change-page cache when
/// `cache` is set.
pub async fn nginx_with(upstreams: &[&str], cache: bool) -> Nginx {
    let servers: String = upstreams
        .iter()
        .map(|upstream| format!("server {upstream}; "))
        .collect();
    nginx_for(&servers, cache).await
}

/// nginx with the shipped `upstream livehub` block of
/// `deploy/nginx/nginx.conf` (its balancing and its servers' parameters),
/// for `upstreams` instead of its example addresses.
pub async fn nginx_as_shipped(upstreams: &[&str]) -> Nginx {
    let shipped = include_str!("../../deploy/nginx/nginx.conf");
    let block = shipped
        .split("upstream livehub {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("an upstream block in deploy/nginx/nginx.conf");
    let directives: Vec<&str> = block
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .collect();
    let parameters = directives
        .iter()
        .find_map(|line| line.strip_prefix("server "))
        .map(|server| {
            server
                .trim_end_matches(';')
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .expect("a server line");
    let mut servers: String = directives
        .iter()
        .filter(|line| !line.starts_with("server "))
        .map(|line| format!("{line} "))
        .collect();
    for upstream in upstreams {
        servers.push_str(&format!("server {upstream} {parameters}; "));
    }
    nginx_for(&servers, false).await
}

/// nginx with `servers` (the body of its `upstream livehub` block).
async fn nginx_for(servers: &str, cache: bool) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().display();
    let locations = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/livehub.conf");
    let (cache_zone, cache_locations) = if cache {
        (
            format!("proxy_cache_path {path}/cache keys_zone=livehub_changes:1m;"),
            format!(
                "include {};",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/deploy/nginx/changes-cache.conf"
                )
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let config = format!(
        "daemon off;
         worker_processes 1;
         pid {path}/nginx.pid;
         error_log {path}/error.log;
         worker_rlimit_nofile 16384;
         events {{ worker_connections 8192; }}
         http {{
             access_log off;
             client_body_temp_path {path}/body;
             proxy_temp_path {path}/proxy;
             fastcgi_temp_path {path}/fastcgi;
             uwsgi_temp_path {path}/uwsgi;
             scgi_temp_path {path}/scgi;
             {cache_zone}
             upstream livehub {{ {servers}}}
             server {{
                 listen 127.0.0.1:{port};
                 include {locations};
                 {cache_locations}
             }}
         }}"
    );
    std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx runs (.ci/run installs Debian's nginx)");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Nginx {
        child,
        url,
        _dir: dir,
    }
}

#[tokio::test]
async fn streams_pass_through_nginx_unbuffered_with_the_clients_address() {
    let mut config = test_config();
    config.max_streams_per_ip = 1;
    config.trusted_proxies = livehub::proxies::TrustedProxies::parse("127.0.0.1").unwrap();
    let app = TestApp::spawn_with(config).await;
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "public", "rules": {"read": "true"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let nginx = nginx_in_front_of(&[app.address.trim_start_matches("http://")]).await;
    // Clients as nginx sees them (each says who it is; nginx appends the
    // address it got the request from, which livehub trusts).
    let open = |client: &'static str| {
        let url = format!("{}/api/v1/realtime/public", nginx.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .header("x-forwarded-for", client)
                .send()
                .await
                .unwrap()
        }
    };
    let first = open("203.0.113.1").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let mut stream = SseClient::new(first);
    stream.connected().await;
    let second = open("203.0.113.2").await;
    assert_eq!(second.status(), 200, "another client behind nginx");
    assert_eq!(
        open("203.0.113.1").await.status(),
        429,
        "the same client again"
    );
    // One small event arrives at once: nginx does not hold it back.
    app.create_record("public", json!({"id": "r1"})).await;
    let event = stream.record_event().await;
    assert!(event.data.contains("\"r1\""));
}

#[tokio::test]
async fn nginx_serves_history_pages_from_its_cache_and_never_the_live_edge() {
    let app = TestApp::spawn().await;
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "public", "rules": {"read": "true"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    for n in 0..5 {
        app.create_record("public", json!({"id": format!("r{n}")}))
            .await;
    }
    let nginx = nginx_with(&[app.address.trim_start_matches("http://")], true).await;
    let get = |query: &str| {
        let url = format!("{}/api/v1/changes?collections=public&{query}", nginx.url);
        async move {
            let response = reqwest::get(url).await.unwrap();
            let cache = response.headers()["x-cache-status"]
                .to_str()
                .unwrap()
                .to_owned();
            (cache, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    // A page of history: fetched once, then served by nginx.
    let (first, history) = get("since=earliest&limit=2").await;
    assert_eq!(history["caught_up"], false);
    assert_eq!(first, "MISS");
    let (second, again) = get("since=earliest&limit=2").await;
    assert_eq!(
        second, "HIT",
        "a repeated history page comes from the cache"
    );
    assert_eq!(again, history);
    // The live edge is asked of livehub every time, and sees new changes.
    let edge = format!("since={}", history["next"].as_str().unwrap());
    let (first, page) = get(&edge).await;
    assert_eq!(page["caught_up"], true);
    assert_ne!(first, "HIT");
    app.create_record("public", json!({"id": "late"})).await;
    let (second, page) = get(&edge).await;
    assert_ne!(second, "HIT", "the live edge is never cached");
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["record_id"].as_str().unwrap())
        .collect();
    // The first page held the collection's creation and `r0`.
    assert_eq!(ids, ["r1", "r2", "r3", "r4", "late"]);
}
