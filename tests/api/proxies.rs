//! Behind proxies: `X-Forwarded-For` decides the client's address for
//! per-address limits only when the peer is a trusted proxy.

use serde_json::json;

use crate::helpers::{TestApp, test_config};

/// Opens an anonymous stream of `public` as forwarded for `client`; the
/// response is kept open (the stream counts while it lives).
async fn open(app: &TestApp, client: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url("/api/v1/realtime/public"))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
}

async fn app_with(trusted: &str) -> TestApp {
    let mut config = test_config();
    config.max_streams_per_ip = 1;
    config.trusted_proxies = livehub::proxies::TrustedProxies::parse(trusted).unwrap();
    let app = TestApp::spawn_with(config).await;
    let response = app
        .post(
            "/api/v1/collections",
            &json!({"name": "public", "rules": {"read": "true"}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    app
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit() {
    let app = app_with("127.0.0.1").await;
    let first = open(&app, "203.0.113.1").await;
    assert_eq!(first.status(), 200);
    let second = open(&app, "203.0.113.2").await;
    assert_eq!(second.status(), 200, "another client behind the proxy");
    let again = open(&app, "198.51.100.9, 203.0.113.1").await;
    assert_eq!(
        again.status(),
        429,
        "the first client, whatever it claims before the proxy"
    );
}

#[tokio::test]
async fn from_an_untrusted_peer_the_header_is_ignored() {
    let app = app_with("10.0.0.0/8").await;
    let first = open(&app, "203.0.113.1").await;
    assert_eq!(first.status(), 200);
    let second = open(&app, "203.0.113.2").await;
    assert_eq!(second.status(), 429, "both are 127.0.0.1");
}
