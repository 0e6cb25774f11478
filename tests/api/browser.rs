//! The browser library (`/livehub.js`) and its React and Vue bindings in
//! real headless Chromium (Debian's `chromium`, driven by Playwright from
//! `tests/browser/driver.mjs`), against the real binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::helpers::{HANG_GUARD, TEST_SECRET, client_with_token};

/// One Chromium page, driven line by line.
pub(crate) struct Browser {
    _child: Child,
    /// Its profile on disk, removed when the browser is dropped.
    _profile: tempfile::TempDir,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "run `npm ci` in tests/browser first (.ci/run does)"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .env("LIVEHUB_BROWSER_PROFILE", profile.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (.ci/run installs Node.js)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser {
            _child: child,
            _profile: profile,
            stdin,
            stdout,
        }
    }

    pub(crate) async fn send(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(HANG_GUARD * 3, self.stdout.next_line())
            .await
            .expect("the driver answered")
            .unwrap()
            .expect("the driver is running");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        if let Some(error) = answer.get("error") {
            panic!("{command}: {error}\n{}", answer["log"]);
        }
        answer["ok"].clone()
    }

    pub(crate) async fn open(&mut self, origin: &str, html: String) {
        self.send(json!({"open": origin, "html": html})).await;
    }

    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        self.send(json!({"eval": expression})).await
    }

    /// Waits until `expression` is true in the page (a guard, not a timing
    /// assertion: only a stalled page misses it).
    pub(crate) async fn wait(&mut self, expression: &str) {
        self.send(json!({"wait": expression, "timeout": HANG_GUARD.as_millis() as u64}))
            .await;
    }
}

/// The real binary on a fixed port, restartable on its data.
pub(crate) struct Server {
    child: Option<std::process::Child>,
    port: u16,
    data: PathBuf,
}

impl Server {
    pub(crate) async fn start(data: PathBuf) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Server {
            child: None,
            port,
            data,
        };
        server.run().await;
        server
    }

    pub(crate) fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_livehub"))
            .args(["--addr", &format!("127.0.0.1:{}", self.port)])
            .args(["--db", &format!("surrealkv://{}", self.data.display())])
            .args(["--retry", "200ms", "--presence-grace", "200ms"])
            .env("LIVEHUB_JWT_SECRET", TEST_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Ok(response) = reqwest::get(format!("{}/readyz", self.origin())).await
                && response.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "the binary never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Destroys every open TCP connection of the server (`ss -K`), as a
    /// network failure would.
    fn cut_connections(&self) {
        let status = std::process::Command::new("ss")
            .args(["-K", "-t", "state", "established"])
            .arg(format!("( sport = :{} )", self.port))
            .stdout(Stdio::null())
            .status()
            .expect("ss runs (iproute2)");
        assert!(status.success());
    }

    /// Kills it (SIGKILL), for good.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Kills it at once (SIGKILL) and starts it again on `data`.
    async fn restart_on(&mut self, data: PathBuf) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.data = data;
        self.run().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn token(sub: &str, admin: bool) -> String {
    let settings = livehub::config::AuthSettings {
        jwt_secret: Some(livehub::config::Secret::from(TEST_SECRET.to_owned())),
        ..Default::default()
    };
    let (auth, _) = livehub::auth::Authenticator::from_settings(&settings).unwrap();
    let mut claims = json!({"sub": sub, "exp": crate::helpers::now_secs() + 3600});
    if admin {
        claims["role"] = json!("admin");
    }
    auth.sign(&claims).unwrap()
}

/// A page that loads the library with `script` after it: `hub` is a hub
/// that authenticates with tickets (or, once `staleTicket` is set, with
/// that ticket first), and `window.streams` counts the EventSources made.
pub(crate) fn page(token: &str, script: &str) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><body><div id="app"></div>
<script src="/vendor/react.js"></script>
<script src="/vendor/react-dom.js"></script>
<script type="module">
const Native = window.EventSource;
window.streams = 0;
window.EventSource = class extends Native {{
  constructor(url) {{ super(url); window.streams += 1; }}
}};
const {{ connect }} = await import('/livehub.js');
const token = {token:?};
async function ticket() {{
  const response = await fetch('/api/v1/realtime/tickets', {{
    method: 'POST', headers: {{ authorization: `Bearer ${{token}}` }},
  }});
  return (await response.json()).ticket;
}}
window.ticket = ticket;
window.staleTicket = null;
window.hub = connect({{
  auth: async () => {{
    const stale = window.staleTicket;
    window.staleTicket = null;
    return {{ ticket: stale || await ticket(), token }};
  }},
  retry: {{ initial: 100, max: 1000 }},
}});
window.ids = (query) => query.getSnapshot().records.map((record) => record.id).join(',');
window.patches = 0;
window.hub.onEvent = (type, data) => {{ if (data && data.patch) window.patches += 1; }};
{script}
window.ready = true;
</script>"#
    )
}

pub(crate) async fn create(client: &reqwest::Client, origin: &str, collection: &str, body: Value) {
    let response = client
        .post(format!("{origin}/api/v1/collections/{collection}/records"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn delete(client: &reqwest::Client, origin: &str, collection: &str, id: &str) {
    let response = client
        .delete(format!(
            "{origin}/api/v1/collections/{collection}/records/{id}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

pub(crate) async fn public_collection(client: &reqwest::Client, origin: &str, name: &str) {
    let response = client
        .post(format!("{origin}/api/v1/collections"))
        .json(&json!({"name": name, "rules": {"read": "true"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// Waits until the page's query `name` holds exactly `ids`, in order.
async fn until_holds(browser: &mut Browser, name: &str, ids: &[&str]) {
    let expected = ids.join(",");
    browser
        .wait(&format!("window.ids({name}) === {expected:?}"))
        .await;
}

#[tokio::test]
async fn a_live_query_stays_exact_across_restarts_disconnects_expired_tickets_and_resets() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path().join("one")).await;
    let origin = server.origin();
    let admin = client_with_token(&token("root", true));
    public_collection(&admin, &origin, "posts").await;
    for id in ["a", "b", "x"] {
        create(&admin, &origin, "posts", json!({"id": id, "n": 1})).await;
    }
    let mut browser = Browser::start().await;
    let script = "window.posts = hub.liveQuery('posts', { query: 'n >= 1', fields: 'n,t', diff: true });\n\
                  window.held = await ticket();";
    browser
        .open(&origin, page(&token("ann", false), script))
        .await;
    browser.wait("window.ready").await;
    let held_at = Instant::now();
    until_holds(&mut browser, "posts", &["a", "b", "x"]).await;
    // Changes arrive; a record that stops matching leaves.
    create(
        &admin,
        &origin,
        "posts",
        json!({"id": "c", "n": 2, "t": "x"}),
    )
    .await;
    // An update in the view comes as a patch, which the page merges.
    let response = admin
        .patch(format!("{origin}/api/v1/collections/posts/records/c"))
        .json(&json!({"t": null, "u": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = admin
        .patch(format!("{origin}/api/v1/collections/posts/records/x"))
        .json(&json!({"n": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    until_holds(&mut browser, "posts", &["a", "b", "c"]).await;
    // Only the fields asked for, the patch merged (the update of `x`, which
    // made it leave, came after the patch of `c`, and has been applied).
    browser
        .wait(r#"JSON.stringify(posts.getSnapshot().records[2]) === '{"id":"c","n":2}'"#)
        .await;
    assert!(
        browser.eval("window.patches > 0").await.as_bool().unwrap(),
        "updates came as patches"
    );

    // The server killed and restarted on its data: the page resumes, and
    // sees what was written while it was away.
    server.restart_on(dir.path().join("one")).await;
    create(&admin, &origin, "posts", json!({"id": "d", "n": 1})).await;
    delete(&admin, &origin, "posts", "a").await;
    until_holds(&mut browser, "posts", &["b", "c", "d"]).await;

    // The page's connection cut, the page off the network for a while
    // (its reconnects fail and back off), and changes made meanwhile.
    let streams = browser.eval("window.streams").await.as_u64().unwrap();
    browser.send(json!({"offline": true})).await;
    server.cut_connections();
    // (This client's pooled connections were cut too.)
    let admin = client_with_token(&token("root", true));
    create(&admin, &origin, "posts", json!({"id": "e", "n": 1})).await;
    delete(&admin, &origin, "posts", "b").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.send(json!({"offline": false})).await;
    until_holds(&mut browser, "posts", &["c", "d", "e"]).await;
    assert!(
        browser.eval("window.streams").await.as_u64().unwrap() > streams,
        "the page reconnected"
    );

    // A ticket that expired (held past its 30 s): refused, so the hub asks
    // for fresh credentials and goes on.
    let expired = Duration::from_secs(31).saturating_sub(held_at.elapsed());
    tokio::time::sleep(expired).await;
    browser
        .eval("window.staleTicket = window.held; hub.reconnectNow(); true")
        .await;
    create(&admin, &origin, "posts", json!({"id": "f", "n": 1})).await;
    until_holds(&mut browser, "posts", &["c", "d", "e", "f"]).await;
    // It was expired indeed: the server refuses it.
    let held = browser.eval("window.held").await;
    let refused = reqwest::get(format!(
        "{origin}/api/v1/realtime/posts?ticket={}",
        held.as_str().unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);

    // A reset: the server comes back on a new, empty database, so the
    // page's last id is from before it. The page takes the new state.
    server.restart_on(dir.path().join("two")).await;
    public_collection(&admin, &origin, "posts").await;
    create(&admin, &origin, "posts", json!({"id": "z", "n": 5})).await;
    until_holds(&mut browser, "posts", &["z"]).await;
}

#[tokio::test]
async fn every_subscription_of_a_page_shares_one_stream_and_changes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin = client_with_token(&token("root", true));
    for name in ["posts", "comments", "notes", "later"] {
        public_collection(&admin, &origin, name).await;
    }
    for n in 0..5 {
        let id = format!("m{n}");
        create(&admin, &origin, "comments", json!({"id": id, "n": n})).await;
    }
    create(&admin, &origin, "later", json!({"id": "l1"})).await;
    let mut browser = Browser::start().await;
    let script = "window.posts = hub.liveQuery('posts');\n\
        window.top3 = hub.liveQuery('comments', { limit: 3, sort: '-n' });\n\
        window.messages = [];\n\
        window.room = hub.channel('room.1', (message) => window.messages.push(message));\n\
        window.changes = [];\n\
        window.noteEvents = hub.events('notes', null, (event) => window.changes.push(event.record_id));";
    browser
        .open(&origin, page(&token("ann", false), script))
        .await;
    browser.wait("window.ready").await;
    until_holds(&mut browser, "top3", &["m4", "m3", "m2"]).await;
    browser
        .wait("hub.status.getSnapshot().state === 'open'")
        .await;
    // Added later, on the same stream, with its snapshot.
    browser
        .eval("window.later = hub.liveQuery('later'); true")
        .await;
    until_holds(&mut browser, "later", &["l1"]).await;
    // Writes all along while subscriptions come and go.
    for n in 0..20 {
        create(&admin, &origin, "posts", json!({"id": format!("p{n:02}")})).await;
        if n == 5 {
            browser.eval("window.noteEvents.close(); true").await;
        }
        if n == 10 {
            browser
                .eval("window.extra = hub.channel('room.2', () => {}); true")
                .await;
        }
    }
    let posts: Vec<String> = (0..20).map(|n| format!("p{n:02}")).collect();
    let posts: Vec<&str> = posts.iter().map(String::as_str).collect();
    until_holds(&mut browser, "posts", &posts).await;
    // The first N stay the first N when one of them goes.
    delete(&admin, &origin, "comments", "m4").await;
    until_holds(&mut browser, "top3", &["m3", "m2", "m1"]).await;
    // A channel message, published from the page.
    browser
        .eval("room.publish({ text: 'hi' }).then(() => true)")
        .await;
    browser
        .wait("window.messages.some((message) => message.message && message.message.text === 'hi')")
        .await;
    assert_eq!(
        browser.eval("window.streams").await,
        json!(1),
        "one stream carried everything"
    );
}

#[tokio::test]
async fn the_react_and_vue_bindings_render_a_live_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin = client_with_token(&token("root", true));
    public_collection(&admin, &origin, "posts").await;
    create(
        &admin,
        &origin,
        "posts",
        json!({"id": "a", "title": "First", "status": "published"}),
    )
    .await;
    create(
        &admin,
        &origin,
        "posts",
        json!({"id": "b", "title": "Draft", "status": "draft"}),
    )
    .await;
    let script = r#"
const { createHooks } = await import('/livehub-react.js');
const { useLiveQuery } = createHooks(React);
function Posts() {
  const { records } = useLiveQuery(hub, 'posts', { query: 'status = "published"' });
  return React.createElement('ul', { id: 'react' },
    records.map((post) => React.createElement('li', { key: post.id }, post.title)));
}
const reactRoot = document.createElement('div');
document.body.append(reactRoot);
ReactDOM.createRoot(reactRoot).render(React.createElement(Posts));

const Vue = await import('/vendor/vue.js');
const { createComposables } = await import('/livehub-vue.js');
const { useLiveQuery: useVueQuery } = createComposables(Vue);
const vueRoot = document.createElement('div');
document.body.append(vueRoot);
Vue.createApp({
  setup() {
    const posts = useVueQuery(hub, 'posts', { query: 'status = "published"' });
    return { posts };
  },
  template: '<ul id="vue"><li v-for="post in posts.records" :key="post.id">{{ post.title }}</li></ul>',
}).mount(vueRoot);
window.rendered = (id) => [...document.querySelectorAll(`#${id} li`)].map((li) => li.textContent).join(',');
"#;
    let mut browser = Browser::start().await;
    browser
        .open(&origin, page(&token("ann", false), script))
        .await;
    browser.wait("window.ready").await;
    for id in ["react", "vue"] {
        browser
            .wait(&format!("window.rendered('{id}') === 'First'"))
            .await;
    }
    create(
        &admin,
        &origin,
        "posts",
        json!({"id": "c", "title": "Second", "status": "published"}),
    )
    .await;
    let response = admin
        .patch(format!("{origin}/api/v1/collections/posts/records/b"))
        .json(&json!({"status": "published", "title": "Now out"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for id in ["react", "vue"] {
        browser
            .wait(&format!(
                "window.rendered('{id}') === 'First,Now out,Second'"
            ))
            .await;
    }
    // Both share the page's one stream (the same query, one subscription).
    assert_eq!(browser.eval("window.streams").await, json!(1));
}

#[tokio::test]
async fn a_refused_subscription_reports_its_error_and_spares_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin = client_with_token(&token("root", true));
    public_collection(&admin, &origin, "posts").await;
    create(&admin, &origin, "posts", json!({"id": "a"})).await;
    // Both in the stream's first request: the server refuses it whole.
    let script = "window.bad = hub.liveQuery('posts', { query: 'title = ' });\n\
                  window.missing = hub.liveQuery('nothing');\n\
                  window.good = hub.liveQuery('posts', { fields: 'id' });";
    let mut browser = Browser::start().await;
    browser
        .open(&origin, page(&token("ann", false), script))
        .await;
    browser.wait("window.ready").await;
    until_holds(&mut browser, "good", &["a"]).await;
    browser
        .wait("bad.getSnapshot().status === 'error' && missing.getSnapshot().status === 'error'")
        .await;
    assert_eq!(
        browser.eval("bad.getSnapshot().error.code").await,
        json!("invalid_filter")
    );
    assert_eq!(
        browser.eval("missing.getSnapshot().error.code").await,
        json!("not_found")
    );
    // Added once the stream is open, a bad one is refused alone too.
    browser
        .eval("window.late = hub.liveQuery('nothing2'); true")
        .await;
    browser.wait("late.getSnapshot().status === 'error'").await;
    create(&admin, &origin, "posts", json!({"id": "b"})).await;
    until_holds(&mut browser, "good", &["a", "b"]).await;
}

#[tokio::test]
async fn the_demo_page_keeps_its_table_live_with_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin_token = token("root", true);
    let admin = client_with_token(&admin_token);
    public_collection(&admin, &origin, "posts").await;
    for id in ["a", "b"] {
        create(&admin, &origin, "posts", json!({"id": id, "n": 1})).await;
    }
    let mut browser = Browser::start().await;
    // The token is set on the origin first (the page reads it at start).
    browser
        .send(json!({"goto": format!("{origin}/healthz")}))
        .await;
    browser
        .eval(&format!(
            "localStorage.setItem('livehub-token', {admin_token:?}); true"
        ))
        .await;
    browser
        .send(json!({"goto": format!("{origin}/#posts")}))
        .await;
    let rows =
        "[...document.querySelectorAll('#records tr td.id')].map((td) => td.textContent).join(',')";
    browser.wait(&format!("{rows} === 'b,a'")).await;
    create(&admin, &origin, "posts", json!({"id": "c", "n": 2})).await;
    browser.wait(&format!("{rows} === 'c,b,a'")).await;
    delete(&admin, &origin, "posts", "a").await;
    browser.wait(&format!("{rows} === 'c,b'")).await;
    // The table's filter is the live query's.
    browser
        .eval("document.getElementById('rec-filter').value = 'n = 2'; document.getElementById('rec-filter-form').requestSubmit(); true")
        .await;
    browser.wait(&format!("{rows} === 'c'")).await;
}

/// The ids of a collection's records as the server lists them by `sort`
/// (the first `limit`).
async fn listed(
    client: &reqwest::Client,
    origin: &str,
    collection: &str,
    sort: &str,
    limit: u32,
) -> String {
    let page: Value = client
        .get(format!(
            "{origin}/api/v1/collections/{collection}/records?sort={sort}&limit={limit}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    ids.join(",")
}

/// Waits until each of the page's queries holds what the server lists for
/// its sort (and limit).
async fn until_sorted_as_listed(
    browser: &mut Browser,
    admin: &reqwest::Client,
    origin: &str,
    queries: &[(&str, &str, &str, u32)],
) {
    for (name, collection, sort, limit) in queries {
        let expected = listed(admin, origin, collection, sort, *limit).await;
        let waited = format!("window.ids({name}) === {expected:?}");
        browser
            .send(json!({"wait": waited, "timeout": HANG_GUARD.as_millis() as u64}))
            .await;
    }
}

#[tokio::test]
async fn a_live_query_sorts_as_the_server_lists_ties_and_mixed_values_included() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin = client_with_token(&token("root", true));
    public_collection(&admin, &origin, "items").await;
    public_collection(&admin, &origin, "ties").await;
    // Ties, written out of id order, then a value of every JSON type (and
    // strings that UTF-16 and code points order differently), one missing.
    let values = [
        ("n5", json!(1)),
        ("n9", json!(2)),
        ("n1", json!(1)),
        ("n3", json!(2)),
        ("n7", json!(1)),
        ("v0", json!(null)),
        ("v1", json!(true)),
        ("v2", json!(false)),
        ("v3", json!(-1)),
        ("v4", json!(2.5)),
        ("v5", json!("10")),
        ("v6", json!("B")),
        ("v7", json!("a")),
        ("v8", json!("é")),
        ("v9", json!("\u{FF5E}")),
        ("va", json!("\u{1F600}")),
        ("vb", json!([1])),
        ("vc", json!([1, 0])),
        ("vd", json!({"k": 1})),
    ];
    for (id, rank) in values.iter().rev() {
        create(&admin, &origin, "items", json!({"id": id, "rank": rank})).await;
    }
    create(&admin, &origin, "items", json!({"id": "m0"})).await;
    for (id, rank) in &values[..5] {
        let id = id.replace('n', "t");
        create(&admin, &origin, "ties", json!({"id": id, "rank": rank})).await;
    }
    let script = "window.up = hub.liveQuery('items', { sort: 'rank' });\n\
        window.down = hub.liveQuery('items', { sort: '-rank' });\n\
        window.first4 = hub.liveQuery('ties', { sort: '-rank', limit: 4 });\n\
        window.last4 = hub.liveQuery('ties', { sort: 'rank', limit: 4 });\n\
        window.projected = hub.liveQuery('ties', { sort: '-rank', limit: 4, fields: 'label' });";
    let queries = [
        ("up", "items", "rank", 100),
        ("down", "items", "-rank", 100),
        ("first4", "ties", "-rank", 4),
        ("last4", "ties", "rank", 4),
        // A projection without the sort's field: the hub adds it.
        ("projected", "ties", "-rank", 4),
    ];
    let mut browser = Browser::start().await;
    browser
        .open(&origin, page(&token("ann", false), script))
        .await;
    browser.wait("window.ready").await;
    // From the snapshots.
    until_sorted_as_listed(&mut browser, &admin, &origin, &queries).await;
    // And after live changes: records joining ties from either end, one
    // moving into a tie, one more without the field.
    for (collection, body) in [
        ("items", json!({"id": "n0", "rank": 1})),
        ("items", json!({"id": "n8", "rank": 2})),
        ("items", json!({"id": "m1"})),
        ("items", json!({"id": "w0", "rank": "a"})),
        ("ties", json!({"id": "t0", "rank": 1})),
        ("ties", json!({"id": "t8", "rank": 2})),
    ] {
        create(&admin, &origin, collection, body).await;
    }
    let response = admin
        .patch(format!("{origin}/api/v1/collections/items/records/n5"))
        .json(&json!({"rank": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    until_sorted_as_listed(&mut browser, &admin, &origin, &queries).await;
}

#[tokio::test]
async fn the_demo_page_shows_the_token_banner_and_write_controls_by_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin_token = token("root", true);
    let admin = client_with_token(&admin_token);
    // Anyone reads `posts`, only admins write there; in `notes` any
    // signed-in user adds records and deletes their own.
    public_collection(&admin, &origin, "posts").await;
    for id in ["a", "b"] {
        create(&admin, &origin, "posts", json!({"id": id})).await;
    }
    let response = admin
        .post(format!("{origin}/api/v1/collections"))
        .json(&json!({"name": "notes", "rules": {
            "read": "true", "create": "$auth.sub != null", "delete": "owner = $auth.sub",
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    create(
        &admin,
        &origin,
        "notes",
        json!({"id": "n1", "owner": "bob"}),
    )
    .await;

    let mut browser = Browser::start().await;
    browser
        .send(json!({"goto": format!("{origin}/#posts")}))
        .await;
    let rows =
        "[...document.querySelectorAll('#records tr td.id')].map((td) => td.textContent).join(',')";
    browser.wait(&format!("{rows} === 'b,a'")).await;
    // What the page shows (`innerText` leaves hidden elements out).
    let shows = |text: &str| format!("document.body.innerText.includes({text:?})");
    let no_token = "Without a token";
    browser.wait(&shows(no_token)).await;
    let use_token = |value: &str| {
        format!(
            "document.getElementById('token').value = {value:?}; \
             document.getElementById('token-form').requestSubmit(); true"
        )
    };
    // The admin's token: the banner goes, and every control is there.
    browser.eval(&use_token(&admin_token)).await;
    browser
        .wait(&format!(
            "!{} && document.querySelectorAll('#records button.danger').length === 2 \
             && document.querySelectorAll('#collections button.danger').length === 2 \
             && !document.getElementById('new-record').hidden \
             && !document.getElementById('new-collection').hidden",
            shows(no_token)
        ))
        .await;
    // A token the server refuses: the banner says so.
    browser.eval(&use_token("not-a-token")).await;
    browser.wait(&shows("The token was refused")).await;
    // Cleared: anonymous again, told so, and without write controls (the
    // rules would refuse every write).
    browser.eval(&use_token("")).await;
    browser
        .wait(&format!(
            "{} && !{} && document.querySelectorAll('button.danger').length === 0 \
             && document.getElementById('new-record').hidden \
             && document.getElementById('new-collection').hidden",
            shows(no_token),
            shows("The token was refused")
        ))
        .await;

    // A signed-in user: no controls in `posts`; in `notes`, adding, and
    // deleting (the rule decides record by record: a refusal shows the
    // server's own message).
    let ann = token("ann", false);
    browser.eval(&use_token(&ann)).await;
    browser
        .wait(&format!(
            "{} && !{} && document.querySelectorAll('button.danger').length === 0 \
             && document.getElementById('new-record').hidden",
            shows("Read-only: this collection's rules let your token"),
            shows(no_token)
        ))
        .await;
    browser
        .eval(
            "[...document.querySelectorAll('#collections .pick')]\
             .find((button) => button.textContent.startsWith('notes')).click(); true",
        )
        .await;
    browser.wait(&format!("{rows} === 'n1'")).await;
    browser
        .wait(
            "document.querySelectorAll('#records button.danger').length === 1 \
             && !document.getElementById('new-record').hidden \
             && document.querySelectorAll('#collections button.danger').length === 0",
        )
        .await;
    let refused = client_with_token(&ann)
        .delete(format!("{origin}/api/v1/collections/notes/records/n1"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    let message = refused["error"]["message"].as_str().unwrap().to_owned();
    browser
        .eval("document.querySelector('#records button.danger').click(); true")
        .await;
    browser.wait(&shows(&message)).await;
}

#[tokio::test]
async fn the_library_runs_in_node_with_its_eventsource() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin = client_with_token(&token("root", true));
    public_collection(&admin, &origin, "posts").await;
    create(&admin, &origin, "posts", json!({"id": "a"})).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node.mjs");
    let node = Command::new("node")
        .arg("--experimental-eventsource")
        .arg(script)
        .args([&origin, &token("ann", false), "a,b"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    // A change after it subscribed, which it must take up too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    create(&admin, &origin, "posts", json!({"id": "b"})).await;
    let output = tokio::time::timeout(HANG_GUARD, node.wait_with_output())
        .await
        .expect("node saw both records")
        .unwrap();
    assert!(output.status.success());
    let records: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(records, json!([{"id": "a"}, {"id": "b"}]));
}

#[tokio::test]
async fn presence_is_a_live_list_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path().join("data")).await;
    let origin = server.origin();
    let admin = client_with_token(&token("root", true));
    public_collection(&admin, &origin, "posts").await;
    let script = "window.posts = hub.liveQuery('posts');\n\
        window.online = hub.presence();\n\
        window.users = () => online.getSnapshot().users.map((user) => user.user_id).join(',');";
    let mut browser = Browser::start().await;
    browser
        .open(&origin, page(&token("ann", false), script))
        .await;
    browser.wait("window.ready").await;
    // The page's own user, from the list read once its stream is open.
    browser.wait("window.users() === 'ann'").await;
    // Someone else opens a stream, then closes it.
    let bob = client_with_token(&token("bob", false));
    let response = bob
        .get(format!("{origin}/api/v1/realtime/posts"))
        .send()
        .await
        .unwrap();
    let mut stream = crate::helpers::SseClient::new(response);
    stream.connected().await;
    browser.wait("window.users() === 'ann,bob'").await;
    drop(stream);
    browser.wait("window.users() === 'ann'").await;
}
