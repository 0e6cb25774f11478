//! Shared test helpers: a real server on a loopback port, a real HTTP client
//! and a real SSE client.

use std::collections::BTreeSet;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use livehub::Config;
use livehub::engine::store::Store;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Long enough that only a hung test waits for it: a guard, not a timing
/// assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// The HS256 secret test servers verify tokens with.
pub const TEST_SECRET: &str = "livehub test secret, 32 bytes or more";

pub struct TestApp {
    pub address: String,
    /// Sends the admin token with every request.
    pub client: reqwest::Client,
    /// Sends no credentials.
    pub anonymous: reqwest::Client,
    auth: std::sync::Arc<livehub::auth::Authenticator>,
    /// The server's store, for writing as an outside SurrealDB client would.
    pub store: Store,
    /// The server's hub, for its counters.
    pub hub: livehub::engine::hub::Hub,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A configuration for tests: in-memory database, any free port, tokens
/// signed with [`TEST_SECRET`].
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.auth.jwt_secret = Some(livehub::config::Secret::from(TEST_SECRET.to_owned()));
    config
}

/// Opens a stream with `client`, checks it is accepted and reads its
/// `connected` event (presence events are skipped, see [`SseClient::new`]).
pub async fn open_stream(client: &reqwest::Client, url: String) -> SseClient {
    let response = client.get(url).send().await.expect("stream request");
    assert_eq!(response.status(), 200, "opening a stream");
    let mut stream = SseClient::new(response);
    stream.connected().await;
    stream
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    livehub::engine::clock::unix_now()
}

/// A client that sends `token` as a Bearer token with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    with_token(token).build().unwrap()
}

/// Like [`client_with_token`], opening a new connection for every request.
pub fn fresh_connections(token: &str) -> reqwest::Client {
    with_token(token).pool_max_idle_per_host(0).build().unwrap()
}

fn with_token(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder().default_headers(headers)
}

/// Builds a server. A persistent database released by a server that just
/// stopped is unlocked by a background task, so a locked one is retried.
async fn build_server(config: Config) -> livehub::Server {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match livehub::Server::build(config.clone()).await {
            Ok(server) => return server,
            Err(error)
                if format!("{error:#}").contains("locked")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("server builds: {error:#}"),
        }
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(test_config()).await
    }

    pub async fn spawn_with(config: Config) -> TestApp {
        // The listener is bound before the server starts, so no sleeps are
        // needed to wait for readiness.
        let listener = livehub::listen(config.addr).expect("bind");
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = build_server(config).await;
        let store = server.state().store.clone();
        let hub = server.state().hub.clone();
        let auth = server.state().auth.clone();
        let admin_token = auth
            .sign(&json!({"sub": "admin", "role": "admin", "exp": now_secs() + 3600}))
            .unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.serve(listener, async move {
            let _ = signal.await;
        }));
        TestApp {
            address,
            // No pooled connections: each of its streams is the first
            // request of its connection, which the front serves itself
            // (other clients reuse connections, so hyper serves theirs).
            client: fresh_connections(&admin_token),
            anonymous: reqwest::Client::new(),
            auth,
            store,
            hub,
            shutdown: Some(shutdown),
            server: Some(handle),
        }
    }

    /// A server on a runtime and thread of its own, for tests of what could
    /// stall it: the test's own timers (the hang guard) then keep running
    /// even if every worker of the server is stuck (the hub's lock is a std
    /// mutex, which blocks a worker that waits for it). A stalled server's
    /// thread is left behind when the test ends.
    pub async fn spawn_isolated(config: Config) -> TestApp {
        let (ready, started) = oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = livehub::listen(config.addr).expect("bind");
                let address = format!("http://{}", listener.local_addr().unwrap());
                let server = build_server(config).await;
                let state = server.state().clone();
                let (shutdown, signal) = oneshot::channel::<()>();
                let _ = ready.send((address, state, shutdown));
                let _ = server
                    .serve(listener, async move {
                        let _ = signal.await;
                    })
                    .await;
            });
        });
        let (address, state, shutdown) = started.await.expect("the server starts");
        let admin_token = state
            .auth
            .sign(&json!({"sub": "admin", "role": "admin", "exp": now_secs() + 3600}))
            .unwrap();
        TestApp {
            address,
            // No pooled connections: each of its streams is the first
            // request of its connection, which the front serves itself
            // (other clients reuse connections, so hyper serves theirs).
            client: fresh_connections(&admin_token),
            anonymous: reqwest::Client::new(),
            auth: state.auth.clone(),
            store: state.store.clone(),
            hub: state.hub.clone(),
            shutdown: Some(shutdown),
            server: None,
        }
    }

    /// A token for `claims`, signed as the server expects; valid for an hour
    /// unless `claims` has its own `exp`.
    pub fn token(&self, claims: Value) -> String {
        let mut claims = claims;
        if claims.get("exp").is_none() {
            claims["exp"] = json!(now_secs() + 3600);
        }
        self.auth.sign(&claims).unwrap()
    }

    /// A client for the user `sub` (no role).
    pub fn user(&self, sub: &str) -> reqwest::Client {
        client_with_token(&self.token(json!({ "sub": sub })))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }

    pub async fn create_collection(&self, name: &str) {
        let response = self
            .post("/api/v1/collections", &json!({ "name": name }))
            .await;
        assert_eq!(response.status(), 201, "creating collection {name}");
    }

    /// Creates a collection anyone may read.
    pub async fn create_public_collection(&self, name: &str) {
        let response = self
            .post(
                "/api/v1/collections",
                &json!({"name": name, "rules": {"read": "true"}}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }

    /// Creates a record and returns it as the API answered.
    pub async fn create_record(&self, collection: &str, body: Value) -> Value {
        let response = self
            .post(&format!("/api/v1/collections/{collection}/records"), &body)
            .await;
        assert_eq!(response.status(), 201, "creating a record in {collection}");
        response.json().await.unwrap()
    }

    /// Opens an SSE stream; `last_event_id` is sent as the header.
    pub async fn stream(&self, path: &str, last_event_id: Option<&str>) -> SseClient {
        let mut request = self.client.get(self.url(path));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), 200, "opening stream {path}");
        SseClient::new(response)
    }

    /// Triggers shutdown and waits for the server to return.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(HANG_GUARD, server)
                .await
                .expect("server stops")
                .expect("server task")
                .expect("server result");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// A Server-Sent Events client over a real HTTP response.
pub struct SseClient {
    events: EventStream,
    /// Whether `user.joined`/`user.left` are passed on (the stream of every
    /// collection carries them; most tests are about something else).
    presence: bool,
}

impl SseClient {
    /// A client that skips presence events.
    pub fn new(response: reqwest::Response) -> SseClient {
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|item| item.map_err(|error| error.to_string()));
        SseClient {
            events: Box::pin(events),
            presence: false,
        }
    }

    /// A client that passes every event on, presence included.
    pub fn with_presence(response: reqwest::Response) -> SseClient {
        SseClient {
            presence: true,
            ..SseClient::new(response)
        }
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let event = tokio::time::timeout(HANG_GUARD, self.events.next())
                .await
                .expect("an event or the end of the stream")
                .map(|item| item.expect("a well-formed event"));
            match event {
                Some(event) if !self.presence && event.event.starts_with("user.") => continue,
                other => return other,
            }
        }
    }

    /// The next event; panics if the stream ends.
    pub async fn event(&mut self) -> Event {
        self.next().await.expect("the stream ended early")
    }

    /// The next event's type and parsed data.
    pub async fn json_event(&mut self) -> (String, Value) {
        let event = self.event().await;
        let data = serde_json::from_str(&event.data).expect("JSON data");
        (event.event, data)
    }

    /// Reads the `connected` event every stream starts with.
    pub async fn connected(&mut self) -> Event {
        let event = self.event().await;
        assert_eq!(event.event, "connected", "first event: {event:?}");
        event
    }

    /// The next record event, skipping collection events. (A new stream
    /// starts at its `connected` position, which can be just before the
    /// request: the creation of the collection may still arrive.)
    pub async fn record_event(&mut self) -> Event {
        loop {
            let event = self.event().await;
            if event.event.starts_with("record.") {
                return event;
            }
            assert!(
                event.event.starts_with("collection."),
                "unexpected {event:?}"
            );
        }
    }

    /// Reads `count` record events and returns their record ids.
    pub async fn record_ids(&mut self, count: usize) -> Vec<String> {
        self.records(count)
            .await
            .iter()
            .map(|event| event["record_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Reads events until `count` record events arrived; returns them.
    pub async fn records(&mut self, count: usize) -> Vec<Value> {
        let mut records = Vec::with_capacity(count);
        while records.len() < count {
            let (kind, data) = self.json_event().await;
            if kind.starts_with("record.") {
                records.push(data);
            }
        }
        records
    }
}

/// A client of one node's stream of `posts` that resumes from its last id
/// whenever the stream ends, as `EventSource` does.
pub struct Follower<'a> {
    node: &'a TestApp,
    stream: Option<SseClient>,
    last_id: Option<String>,
    /// Record ids received, in order.
    pub seen: Vec<String>,
}

impl<'a> Follower<'a> {
    pub async fn open(node: &'a TestApp) -> Follower<'a> {
        let mut follower = Follower {
            node,
            stream: None,
            last_id: None,
            seen: Vec::new(),
        };
        follower.connect().await;
        follower
    }

    async fn connect(&mut self) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let mut request = self
                .node
                .client
                .get(self.node.url("/api/v1/realtime/posts"));
            if let Some(id) = &self.last_id {
                request = request.header("Last-Event-ID", id);
            }
            match request.send().await {
                Ok(response) if response.status() == 200 => {
                    let mut stream = SseClient::new(response);
                    // While the database is away the node answers an empty
                    // stream that asks to come back later.
                    if let Some(first) = stream.next().await {
                        assert_eq!(first.event, "connected", "first event: {first:?}");
                        self.stream = Some(stream);
                        return;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "the stream reopens");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The node refuses while the database is away: retry.
                _ => {
                    assert!(tokio::time::Instant::now() < deadline, "the stream reopens");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Reads until every id of `expected` has arrived; panics on a repeat.
    pub async fn until_seen(&mut self, expected: &BTreeSet<String>) {
        let mut have: BTreeSet<String> = self.seen.iter().cloned().collect();
        let mut missing = expected.iter().filter(|key| !have.contains(*key)).count();
        while missing > 0 {
            let event = self.stream.as_mut().unwrap().next().await;
            match event {
                Some(event) if event.event.starts_with("record.") => {
                    let data: Value = serde_json::from_str(&event.data).unwrap();
                    let key = data["record_id"].as_str().unwrap().to_owned();
                    assert!(have.insert(key.clone()), "{key} came twice");
                    if expected.contains(&key) {
                        missing -= 1;
                    }
                    self.seen.push(key);
                    self.last_id = Some(event.id);
                }
                Some(event) => {
                    assert!(
                        event.event.starts_with("collection."),
                        "unexpected {event:?}"
                    );
                }
                None => self.connect().await,
            }
        }
    }
}

/// A collection name for the store's API (as an outside writer would use it).
pub fn name(text: &str) -> livehub::engine::collection::CollectionName {
    livehub::engine::collection::CollectionName::new(text).unwrap()
}

/// A record key for the store's API.
pub fn key(text: &str) -> livehub::engine::collection::RecordKey {
    livehub::engine::collection::RecordKey::new(text).unwrap()
}

/// The seconds of a history page's `Cache-Control: private, max-age=N,
/// immutable`; panics on any other value.
pub fn private_max_age(control: &str) -> u64 {
    control
        .strip_prefix("private, max-age=")
        .and_then(|rest| rest.strip_suffix(", immutable"))
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("a private history page: {control}"))
}
