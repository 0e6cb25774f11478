//! README.md's examples, run as written against the real binary on a
//! loopback port: every shell block with bash, curl and jq, every
//! JavaScript block in Node.js (its real `EventSource`) or in Chromium, or
//! both. Each block is marked in the README by the comment before it,
//! `<!-- readme-test: <name> -->`, or `<!-- readme-test: not run: <why> -->`;
//! a block with neither fails `every_example_is_run_or_says_why_not`.
//!
//! What a reader would change is changed, and nothing else: the port
//! (`localhost:8000` and `127.0.0.1:8000` become the test server's),
//! `$TOKEN` and `$ANN_TOKEN` are set as the server's banner says to paste
//! them, and the placeholder `"eyJ..."` in JavaScript is a user's token.
//! Every curl that gets an error status fails its block (as if it were
//! run with `--fail-with-body`), and each test checks what its block shows
//! or says it does: so a missing header or a wrong path fails the test.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use regex::Regex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use crate::binary::{start_binary, stop_binary};
use crate::browser::{Browser, token};
use crate::helpers::{HANG_GUARD, TEST_SECRET, client_with_token};

const README: &str = include_str!("../../README.md");

/// The blocks that a test below runs, by the name the README gives them.
const RUN: &[&str] = &[
    "try-it",
    "url-encoding",
    "token-command",
    "browser-ticket",
    "live-list",
    "library",
    "local-first",
    "changes-page",
    "changes-consumer",
    "rules",
    "batch",
    "nodes",
];

/// A fenced block of the README.
struct Block {
    language: String,
    /// What its `readme-test` comment says, if it has one.
    mark: Option<String>,
    code: String,
}

fn blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = README.lines();
    let mut previous = "";
    while let Some(line) = lines.next() {
        if let Some(language) = line.strip_prefix("```")
            && !language.is_empty()
        {
            let mark = previous
                .strip_prefix("<!-- readme-test: ")
                .and_then(|rest| rest.strip_suffix(" -->"))
                .map(str::to_owned);
            let code: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
            blocks.push(Block {
                language: language.to_owned(),
                mark,
                code: code.join("\n") + "\n",
            });
            previous = "";
            continue;
        }
        previous = line;
    }
    blocks
}

/// The block the README names `name`.
fn block(name: &str) -> String {
    let mut found = blocks()
        .into_iter()
        .filter(|block| block.mark.as_deref() == Some(name));
    let block = found
        .next()
        .unwrap_or_else(|| panic!("no README block `{name}`"));
    assert!(found.next().is_none(), "two README blocks `{name}`");
    block.code
}

#[test]
fn every_example_is_run_or_says_why_not() {
    let mut named = Vec::new();
    for block in blocks() {
        if !matches!(block.language.as_str(), "sh" | "js" | "jsx" | "vue") {
            continue;
        }
        let mark = block.mark.unwrap_or_else(|| {
            panic!(
                "a README {} block has no `<!-- readme-test: ... -->` before it:\n{}",
                block.language, block.code
            )
        });
        match mark.strip_prefix("not run: ") {
            Some(why) => assert!(why.len() > 20, "say why `{mark}` is not run"),
            None => {
                assert!(RUN.contains(&mark.as_str()), "no test runs `{mark}`");
                named.push(mark);
            }
        }
    }
    for name in RUN {
        assert!(
            named.iter().any(|mark| mark == name),
            "the README has no block `{name}`"
        );
    }
}

/// The binary, started as a reader would start it (with a secret of ours,
/// so the test can sign tokens), with `args`.
struct Server {
    child: Option<std::process::Child>,
    base: String,
}

impl Server {
    async fn start(args: &[&str]) -> Server {
        let (child, base) = start_binary(args, &[("LIVEHUB_JWT_SECRET", TEST_SECRET)], None).await;
        Server {
            child: Some(child),
            base,
        }
    }

    /// A server whose collection `posts` holds `records`, as the examples
    /// before this one would have left it.
    async fn with_posts(records: &[Value]) -> Server {
        let server = Server::start(&[]).await;
        server
            .create("/api/v1/collections", json!({"name": "posts"}))
            .await;
        for record in records {
            server.post(record.clone()).await;
        }
        server
    }

    /// `host:port`, for `localhost:8000` in the examples.
    fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn admin(&self) -> reqwest::Client {
        client_with_token(&token("admin", true))
    }

    async fn create(&self, path: &str, body: Value) {
        let response = self
            .admin()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    /// Writes `body` into `posts`.
    async fn post(&self, body: Value) {
        self.create("/api/v1/collections/posts/records", body).await;
    }

    /// Waits until exactly `users` are online (a guard: only a stalled
    /// server misses it).
    async fn until_present(&self, users: &[&str]) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let online: Value = self
                .admin()
                .get(format!("{}/api/v1/presence", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ids: Vec<&str> = online["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|user| user["user_id"].as_str().unwrap())
                .collect();
            if ids == users {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "online: {online}, not {users:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The example as it runs against this server.
    fn local(&self, code: &str) -> String {
        code.replace("localhost:8000", self.host())
            .replace("127.0.0.1:8000", self.host())
            .replace("\"eyJ...\"", &format!("{:?}", token("ann", false)))
    }

    async fn stop(mut self) {
        stop_binary(self.child.take().unwrap()).await;
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

/// Bash with the examples' environment: the banner's tokens, and curl
/// failing on an error status.
fn bash(code: &str) -> tokio::process::Command {
    let script = format!(
        "set -euo pipefail\n\
         curl() {{\n\
           case \" $* \" in\n\
             *' -f '*|*' -sf '*|*' --fail'*) command curl \"$@\" ;;\n\
             *) command curl --fail-with-body \"$@\" ;;\n\
           esac\n\
         }}\n\
         {code}"
    );
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .env("TOKEN", token("admin", true))
        .env("ANN_TOKEN", token("ann", false))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `code` to its end and returns what it printed; a failure shows
/// the block and its error output.
async fn run(code: &str) -> String {
    let output = tokio::time::timeout(HANG_GUARD * 3, bash(code).output())
        .await
        .unwrap_or_else(|_| panic!("the example never finished:\n{code}"))
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "the example failed ({}):\n{code}\nprinted: {printed}\nerrors: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

/// The JSON values a block printed (curl prints its bodies without a line
/// break between them).
fn printed_json(printed: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(printed)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("the example printed no JSON ({error}): {printed}"))
}

/// The outputs a block's comments say its commands print: a comment line
/// that is JSON (`# {"items": ...}`).
fn shown_json(code: &str) -> Vec<Value> {
    code.lines()
        .filter_map(|line| line.trim().strip_prefix("# "))
        .filter_map(|comment| serde_json::from_str(comment).ok())
        .collect()
}

/// Runs `code` and checks that it printed what its comments show.
async fn run_and_check(code: &str) -> Vec<Value> {
    let printed = printed_json(&run(code).await);
    let shown = shown_json(code);
    assert!(!shown.is_empty(), "the example shows no output:\n{code}");
    for value in &shown {
        assert!(
            printed.contains(value),
            "the example shows {value} but printed {printed:?}:\n{code}"
        );
    }
    printed
}

/// The ids of a record list's items.
fn item_ids(list: &Value) -> Vec<&str> {
    let items = list["items"].as_array().expect("a record list");
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect()
}

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

/// A command running in the background (as in a second terminal), its
/// output read as it comes.
struct Background {
    child: tokio::process::Child,
    output: String,
    stdout: tokio::process::ChildStdout,
}

impl Background {
    fn start(code: &str) -> Background {
        let mut child = bash(code).stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        Background {
            child,
            output: String::new(),
            stdout,
        }
    }

    /// Reads until `done` holds of what it printed (a guard, not a timing
    /// assertion: only a stalled server misses it).
    async fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> &str {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        let mut chunk = [0u8; 8192];
        while !done(&self.output) {
            let read = tokio::time::timeout_at(deadline, self.stdout.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("never printed {what}; printed:\n{}", self.output))
                .unwrap();
            assert!(read > 0, "ended before printing {what}:\n{}", self.output);
            self.output
                .push_str(std::str::from_utf8(&chunk[..read]).unwrap());
        }
        &self.output
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[tokio::test]
async fn try_it_streams_what_the_readme_shows() {
    let shown = README
        .split("The stream prints:\n\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README shows the stream's output");
    let server = Server::start(&[]).await;
    let code = server.local(&block("try-it"));
    // Run as the README says: the stream in a second terminal, opened
    // before the write.
    let stream_at = code.find("curl -N").expect("the walkthrough streams");
    let stream_end = code[stream_at..].find('\n').unwrap() + stream_at;
    run(&code[..stream_at]).await;
    let mut stream = Background::start(&code[stream_at..stream_end]);
    stream
        .until("`connected`", |output| {
            output.contains("event: connected") && output.ends_with("\n\n")
        })
        .await;
    run(&code[stream_end..]).await;
    let printed = stream
        .until("the record", |output| {
            output.contains("event: record.created") && output.ends_with("\n\n")
        })
        .await
        .to_owned();
    stream.stop().await;
    // A new stream may also see the collection's creation first; the README
    // shows the common case.
    let messages: Vec<&str> = printed
        .split("\n\n")
        .filter(|message| !message.contains("event: collection.created"))
        .collect();
    assert_eq!(normalize(&messages.join("\n\n")), normalize(shown));
    server.stop().await;
}

#[tokio::test]
async fn a_filter_with_spaces_and_ands_goes_through_curl_encoded() {
    let server = Server::with_posts(&[
        json!({"id": "hello", "title": "Hello world", "status": "published"}),
        json!({"id": "other", "title": "Another", "status": "published"}),
        json!({"id": "draft", "title": "Hello draft", "status": "draft"}),
    ])
    .await;
    let printed = printed_json(&run(&server.local(&block("url-encoding"))).await);
    assert_eq!(item_ids(&printed[0]), ["hello"]);

    // The message the README quotes is the server's.
    let quoted = README
        .split("(`unknown parameter \"query\"")
        .nth(1)
        .and_then(|rest| rest.split("`)").next())
        .map(|rest| format!("unknown parameter \"query\"{rest}"))
        .expect("the README quotes the unknown-parameter error");
    let response = server
        .admin()
        .get(format!(
            "{}/api/v1/collections/posts/records?query=owner%3Dnobody",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&quoted), "{message} / {quoted}");
    server.stop().await;
}

#[tokio::test]
async fn livehub_token_signs_with_the_servers_secret() {
    let port = crate::surreal::free_port();
    let code = block("token-command")
        .replace("localhost:8000", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"));
    // The server the block starts in the background stops with the block.
    let code = format!("trap 'kill $(jobs -p) 2>/dev/null' EXIT\n{code}");
    let binary = Path::new(env!("CARGO_BIN_EXE_livehub"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    // It writes the server's log into the directory it runs in.
    let here = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        HANG_GUARD * 3,
        bash(&code)
            .current_dir(here.path())
            .env("PATH", path)
            .env_remove("LIVEHUB_JWT_SECRET")
            .output(),
    )
    .await
    .expect("the example finished")
    .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{code}\n{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = printed_json(&printed);
    for shown in shown_json(&code) {
        assert!(printed.contains(&shown), "{shown} / {printed:?}");
    }
}

/// A page on the server's origin whose console lines land in
/// `window.printed` and the URLs of its streams in `window.opened`,
/// running `script` as a module.
fn page(script: &str) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><script>\n\
         window.printed = [];\n\
         const log = console.log.bind(console);\n\
         console.log = (...args) => {{ window.printed.push(args.map(String).join(' ')); log(...args); }};\n\
         window.opened = [];\n\
         const Native = window.EventSource;\n\
         window.EventSource = class extends Native {{\n\
           constructor(url, init) {{ window.opened.push(String(url)); super(url, init); }}\n\
         }};\n\
         </script>\n<script type=module>\n{script}\n</script>"
    )
}

/// Waits until a line the page printed matches `pattern` (a JavaScript
/// regular expression).
async fn printed_in(browser: &mut Browser, pattern: &str) {
    browser
        .wait(&format!(
            "window.printed.some((line) => /{pattern}/.test(line))"
        ))
        .await;
}

#[tokio::test]
async fn the_browser_ticket_example_hears_a_new_post() {
    let server = Server::with_posts(&[]).await;
    let mut browser = Browser::start().await;
    browser
        .open(&server.base, page(&server.local(&block("browser-ticket"))))
        .await;
    // The ticket's user is present once its stream is open.
    server.until_present(&["ann"]).await;
    server
        .post(json!({"id": "draft", "title": "Draft", "status": "draft"}))
        .await;
    server
        .post(json!({"id": "hello", "title": "Hello", "status": "published"}))
        .await;
    printed_in(&mut browser, "^new post hello ").await;
    let printed = browser.eval("window.printed").await;
    assert!(!printed.to_string().contains("new post draft"), "{printed}");
    server.stop().await;
}

/// The live list's setup: a readable `posts` with one published post and
/// one draft.
async fn live_list_server() -> Server {
    Server::with_posts(&[
        json!({"id": "p1", "status": "published", "title": "One"}),
        json!({"id": "p2", "status": "draft", "title": "Two"}),
    ])
    .await
}

/// The writes the live list must follow, ending with only `p2`, edited.
async fn live_list_changes(server: &Server) {
    let admin = server.admin();
    let record = |id: &str| format!("{}/api/v1/collections/posts/records/{id}", server.base);
    server
        .post(json!({"id": "p3", "status": "published", "title": "Three"}))
        .await;
    for (id, patch) in [
        ("p1", json!({"title": "One, edited"})),
        ("p2", json!({"status": "published"})),
        ("p3", json!({"status": "draft"})),
        ("p2", json!({"title": "Two, edited", "extra": {"a": 1}})),
    ] {
        let response = admin.patch(record(id)).json(&patch).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = admin.delete(record("p1")).send().await.unwrap();
    assert_eq!(response.status(), 204);
}

const LIVE_LIST_END: &str =
    r#"[{"id":"p2","status":"published","title":"Two, edited","extra":{"a":1}}]"#;

#[tokio::test]
async fn the_live_list_keeps_exactly_the_matching_records_in_node() {
    let snippet = block("live-list");
    assert!(
        snippet.lines().count() < 32,
        "the README promises a short live list"
    );
    let server = live_list_server().await;
    let file = tempfile::Builder::new().suffix(".mjs").tempfile().unwrap();
    std::fs::write(file.path(), server.local(&snippet)).unwrap();
    let mut node = tokio::process::Command::new("node")
        .arg("--experimental-eventsource")
        .arg("--no-warnings")
        .arg(file.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("Node.js runs (tools/test.sh installs it)");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let mut until = async |expected: &str| loop {
        let line = tokio::time::timeout(HANG_GUARD, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the list never became {expected}"))
            .unwrap()
            .expect("node is running");
        let (shown, expected): (Value, Value) = (
            serde_json::from_str(&line).unwrap_or(Value::Null),
            serde_json::from_str(expected).unwrap(),
        );
        if shown == expected {
            return;
        }
    };
    until(r#"[{"id":"p1","status":"published","title":"One"}]"#).await;
    live_list_changes(&server).await;
    until(LIVE_LIST_END).await;
    server.stop().await;
}

#[tokio::test]
async fn the_live_list_keeps_exactly_the_matching_records_in_chromium() {
    let server = live_list_server().await;
    let mut browser = Browser::start().await;
    browser
        .open(&server.base, page(&server.local(&block("live-list"))))
        .await;
    let last = "JSON.parse(window.printed.at(-1) ?? 'null')";
    browser
        .wait(&format!("JSON.stringify({last}) === '[{{\"id\":\"p1\",\"status\":\"published\",\"title\":\"One\"}}]'"))
        .await;
    live_list_changes(&server).await;
    browser
        .wait(&format!(
            "JSON.stringify({last}) === JSON.stringify({LIVE_LIST_END})"
        ))
        .await;
    server.stop().await;
}

#[tokio::test]
async fn the_local_first_example_writes_at_once_and_confirms() {
    let server = Server::start(&[]).await;
    let rules =
        json!({"read": "true", "create": "$auth.sub != null", "update": null, "delete": null});
    server
        .create(
            "/api/v1/collections",
            json!({"name": "notes", "rules": rules}),
        )
        .await;
    server
        .create(
            "/api/v1/collections/notes/records",
            json!({"id": "n1", "text": "milk", "length": 4}),
        )
        .await;
    let mut browser = Browser::start().await;
    browser
        .open(&server.base, page(&server.local(&block("local-first"))))
        .await;
    // The list the page read with the new note, shown before the server
    // confirms it, then as confirmed (a new id sorts first).
    printed_in(&mut browser, r"^notes: buy figs \(saving\), milk$").await;
    printed_in(&mut browser, "^notes: buy figs, milk$").await;
    let listed: Value = server
        .admin()
        .get(format!("{}/api/v1/collections/notes/records", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|note| note["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2, "{listed}");
    assert!(texts.contains(&"buy figs"), "{listed}");
    let printed = browser.eval("window.printed").await;
    assert!(!printed.to_string().contains("refused"), "{printed}");
    let log = browser.send(json!({"log": true})).await;
    assert!(!log.to_string().contains("pageerror"), "{log}");
    server.stop().await;
}

#[tokio::test]
async fn the_library_example_lists_posts_and_talks_in_a_room() {
    let server = Server::with_posts(&[
        json!({"id": "a", "title": "Apples", "status": "published"}),
        json!({"id": "b", "title": "Bananas", "status": "draft"}),
        json!({"id": "c", "title": "Cherries", "status": "published"}),
    ])
    .await;
    let mut browser = Browser::start().await;
    browser
        .open(&server.base, page(&server.local(&block("library"))))
        .await;
    // The first 50 by `-title`, published only.
    printed_in(&mut browser, "^live Cherries, Apples$").await;
    // The room hears what is said in it, once it is on the stream
    // (channels are live only: what is said before is not heard).
    let heard = r#"window.printed.some((line) => /^room\.1: .*"text":"hi ann"/.test(line))"#;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while browser.eval(heard).await != json!(true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room never heard"
        );
        let said = server
            .admin()
            .post(format!("{}/api/v1/channels/room.1/messages", server.base))
            .json(&json!({"text": "hi ann"}))
            .send()
            .await
            .unwrap();
        assert_eq!(said.status(), 201);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its own publish went through: it is in the room's history.
    let history: Value = server
        .admin()
        .get(format!(
            "{}/api/v1/changes?channels=room.1&since=earliest",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let from_ann = history["events"].as_array().unwrap().iter().any(|event| {
        event["data"]["sender"]["user_id"] == "ann" && event["data"]["message"]["text"] == "hello"
    });
    assert!(from_ann, "{history}");
    let log = browser.send(json!({"log": true})).await;
    assert!(!log.to_string().contains("pageerror"), "{log}");
    server
        .post(json!({"id": "d", "title": "Dates", "status": "published"}))
        .await;
    printed_in(&mut browser, "^live Dates, Cherries, Apples$").await;
    // The page is present as ann, on its one stream, opened with a ticket
    // (the token stays out of the URL).
    server.until_present(&["ann"]).await;
    let opened = browser.eval("window.opened").await;
    let opened = opened.as_array().unwrap();
    assert_eq!(opened.len(), 1, "{opened:?}");
    let url = opened[0].as_str().unwrap();
    assert!(url.contains("ticket=") && !url.contains("token="), "{url}");
    server.stop().await;
}

#[tokio::test]
async fn the_change_page_example_prints_the_history() {
    let server = Server::with_posts(&[json!({"id": "hello", "title": "Hello"})]).await;
    run_and_check(&server.local(&block("changes-page"))).await;
    server.stop().await;
}

#[tokio::test]
async fn the_change_consumer_example_follows_every_change() {
    let server = Server::with_posts(&[json!({"id": "first", "title": "First"})]).await;
    let mut consumer = Background::start(&server.local(&block("changes-consumer")));
    consumer
        .until("the first post", |output| {
            output.contains(r#""record_id":"first""#)
        })
        .await;
    // Then it long-polls: a new change arrives on the waiting page.
    server
        .post(json!({"id": "second", "title": "Second"}))
        .await;
    let printed = consumer
        .until("the second post", |output| {
            output.contains(r#""record_id":"second""#) && output.ends_with('\n')
        })
        .await
        .to_owned();
    consumer.stop().await;
    let events: Vec<Value> = printed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kinds: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|event| (event["type"].as_str().unwrap(), event["record_id"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("collection.created", None),
            ("record.created", Some("first")),
            ("record.created", Some("second")),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_rules_example_works_as_described() {
    let server = Server::start(&[]).await;
    run(&server.local(&block("rules"))).await;
    // As described: owners read their own notes and public ones.
    let ann = client_with_token(&token("ann", false));
    let bob = client_with_token(&token("bob", false));
    let records = format!("{}/api/v1/collections/notes/records", server.base);
    for (id, public) in [("private", false), ("shared", true)] {
        let response = ann
            .post(&records)
            .json(&json!({"id": id, "owner": "ann", "public": public}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // Nobody writes for another.
    let response = bob
        .post(&records)
        .json(&json!({"id": "forged", "owner": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let listed: Value = bob
        .get(&records)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item_ids(&listed), ["shared"]);
    server.stop().await;
}

#[tokio::test]
async fn the_batch_example_prints_what_it_says() {
    let server = Server::with_posts(&[]).await;
    run_and_check(&server.local(&block("batch"))).await;
    server.stop().await;
}

/// The README's two nodes on one SurrealDB server, each command in a
/// terminal of its own (here: in the background), on free ports: a write
/// through one node is on the other's change page.
#[tokio::test]
async fn two_nodes_on_one_surrealdb_server_as_the_readme_starts_them() {
    let code = block("nodes");
    // One command per terminal (a `\` continues a line).
    let commands: Vec<String> = code
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(commands.len(), 3, "a server and two nodes: {commands:?}");
    let ports = [8000, 8001, 8002].map(|port| (port, crate::surreal::free_port()));
    let local = |command: &str| {
        ports
            .iter()
            .fold(command.to_owned(), |command, (readme, free)| {
                command.replace(&format!(":{readme}"), &format!(":{free}"))
            })
    };
    let surreal = crate::surreal::binary();
    let livehub = Path::new(env!("CARGO_BIN_EXE_livehub"));
    let path = format!(
        "{}:{}:{}",
        surreal.parent().unwrap().display(),
        livehub.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let data = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    // The nodes' terminals, shown if a server never answers.
    let output = data.path().join("nodes.log");
    let log = std::fs::File::create(&output).unwrap();
    for command in &commands {
        let log = match running.is_empty() {
            true => std::fs::File::create(data.path().join("surreal.log")).unwrap(),
            false => log.try_clone().unwrap(),
        };
        let mut shell = bash(&format!("exec {}", local(command)));
        shell
            .current_dir(data.path())
            .env("PATH", &path)
            .env("LIVEHUB_JWT_SECRET", TEST_SECRET)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        running.push(shell.spawn().unwrap());
        if running.len() == 1 {
            wait_until_ok(&format!("http://127.0.0.1:{}/health", ports[1].1), &output).await;
        }
    }
    let first = format!("http://127.0.0.1:{}", ports[0].1);
    let second = format!("http://127.0.0.1:{}", ports[2].1);
    wait_until_ok(&format!("{first}/readyz"), &output).await;
    wait_until_ok(&format!("{second}/readyz"), &output).await;

    let admin = client_with_token(&token("admin", true));
    let response = admin
        .post(format!("{first}/api/v1/collections"))
        .json(&json!({"name": "posts"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = admin
        .post(format!("{first}/api/v1/collections/posts/records"))
        .json(&json!({"id": "shared", "title": "Through the first node"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The second node's change pages, followed until the write is there.
    let mut since = "earliest".to_owned();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let page: Value = admin
            .get(format!(
                "{second}/api/v1/changes?collections=posts&since={since}&wait=1s"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().expect("a page");
        if events.iter().any(|event| event["record_id"] == "shared") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second node never showed the write: {page}"
        );
        since = page["next"].as_str().unwrap().to_owned();
    }
    for mut child in running.into_iter().rev() {
        let _ = child.kill().await;
    }
}

/// Polls `url` until it answers 200 (a guard: only a stalled server misses
/// it); else fails with what the servers printed to `output`.
async fn wait_until_ok(url: &str, output: &Path) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD * 2;
    loop {
        if let Ok(response) = reqwest::get(url).await
            && response.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered; the terminals printed:\n{}",
            std::fs::read_to_string(output).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The README's table of statuses names every error code the contract has.
#[test]
fn the_readme_names_every_error_code() {
    let spec: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(include_str!("../../openapi.yaml")).unwrap();
    let codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
        ["enum"]
        .as_sequence()
        .expect("openapi.yaml lists the error codes");
    let table = README
        .split("| status | codes | when |")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("the README has a table of statuses");
    for code in codes {
        let code = code.as_str().unwrap();
        assert!(
            table.contains(&format!("`{code}`")),
            "the README's table of statuses lacks `{code}`"
        );
    }
}
