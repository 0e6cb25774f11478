//! Hostile-load tool: what one client's bad input or stalled socket costs
//! every other client, measured over HTTP against a running server.
//!
//!     cargo run --release --example hostile -- --url http://127.0.0.1:8000 \
//!         --token "$TOKEN" --pid "$SERVER_PID" substring
//!
//! Scenarios:
//!
//! * `substring`: 16 anonymous streams of every collection with distinct
//!   4,000-character `~` needles, then one 900 KB record in a collection
//!   they may read; reports how late an ordinary client's event on another
//!   collection arrives, and how long `/healthz` takes meanwhile.
//! * `long-string`: a record with a 30,000-character string updated to
//!   another one; reports the update's duration and how late an ordinary
//!   client's event on another collection arrives.
//! * `stalled`: 64 records of 1 MB with no stream (the control), then 64
//!   streams that never read and 64 more such records; reports how much
//!   each grew the server's resident memory (needs `--pid`), again after
//!   `--settle`, and the open streams before and after.
//!
//! Loopback only: the tool refuses any other address.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

#[derive(Parser, Debug)]
#[command(about = "Measure what hostile clients cost the others")]
struct Options {
    /// The server (loopback only).
    #[arg(long)]
    url: String,
    /// An admin token.
    #[arg(long, env = "LIVEHUB_TOKEN", hide_env_values = true)]
    token: String,
    /// The server's process id, to read its memory.
    #[arg(long)]
    pid: Option<u32>,
    /// How long to wait before the last memory reading (`stalled`).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    settle: Duration,
    scenario: Scenario,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    Substring,
    LongString,
    Stalled,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let host = options
        .url
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        bail!("--url must be a loopback address, not {}", options.url);
    }
    let base = options.url.trim_end_matches('/').to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", options.token).parse()?,
    );
    let admin = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(600))
        .build()?;
    let tag = std::process::id();
    let other = format!("other{tag}");
    create_collection(&admin, &base, &other, json!({})).await?;
    match options.scenario {
        Scenario::Substring => substring(&admin, &base, tag, &other).await,
        Scenario::LongString => long_string(&admin, &base, tag, &other).await,
        Scenario::Stalled => stalled(&admin, &base, tag, &options).await,
    }
}

async fn create_collection(
    admin: &reqwest::Client,
    base: &str,
    name: &str,
    rules: Value,
) -> anyhow::Result<()> {
    let response = admin
        .post(format!("{base}/api/v1/collections"))
        .json(&json!({ "name": name, "rules": rules }))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("creating {name}: {}", response.status());
    }
    Ok(())
}

async fn create_record(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let response = admin
        .post(format!("{base}/api/v1/collections/{collection}/records"))
        .json(body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("writing to {collection}: {}", response.status());
    }
    Ok(response.json().await?)
}

/// An ordinary client: a stream of `collection`, connected.
async fn ordinary_stream(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
) -> anyhow::Result<impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin> {
    let response = admin
        .get(format!("{base}/api/v1/realtime/{collection}"))
        .send()
        .await?;
    let mut body = response.bytes_stream();
    let first = body.next().await.context("the stream opens")??;
    if !String::from_utf8_lossy(&first).contains("connected") {
        bail!("expected `connected` first");
    }
    Ok(body)
}

/// Writes to `collection` and returns how long its event took to arrive
/// on `stream`.
async fn ordinary_latency(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> anyhow::Result<Duration> {
    let marker = format!("m{}", rand::random::<u64>());
    let started = Instant::now();
    create_record(admin, base, collection, &json!({ "marker": marker })).await?;
    while let Some(chunk) = stream.next().await {
        if String::from_utf8_lossy(&chunk?).contains(&marker) {
            return Ok(started.elapsed());
        }
    }
    bail!("the ordinary stream ended")
}

/// `len` pseudo-random letters (two seeds share little: a string diff's
/// worst case).
fn letters(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'a' + ((state >> 33) % 26) as u8)
        })
        .collect()
}

async fn substring(
    admin: &reqwest::Client,
    base: &str,
    tag: u32,
    other: &str,
) -> anyhow::Result<()> {
    let posts = format!("posts{tag}");
    create_collection(admin, base, &posts, json!({ "read": "true" })).await?;
    let mut ordinary = ordinary_stream(admin, base, other).await?;
    let quiet = ordinary_latency(admin, base, other, &mut ordinary).await?;
    let anonymous = reqwest::Client::new();
    let mut hostile = Vec::new();
    for n in 0..16 {
        let needle = format!("{}{n}", "a".repeat(4000));
        let query = serde_urlencoded::to_string([("query", format!("body~\"{needle}\""))])?;
        let response = anonymous
            .get(format!("{base}/api/v1/realtime?{query}"))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("a hostile stream was refused: {}", response.status());
        }
        hostile.push(response);
    }
    let writer = {
        let (admin, base, posts) = (admin.clone(), base.to_owned(), posts.clone());
        tokio::spawn(async move {
            create_record(
                &admin,
                &base,
                &posts,
                &json!({ "body": "a".repeat(900_000) }),
            )
            .await
        })
    };
    // Let the large record reach the feed first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = {
        let base = base.to_owned();
        tokio::spawn(async move {
            let started = Instant::now();
            let status = reqwest::get(format!("{base}/healthz"))
                .await
                .map(|r| r.status());
            (status, started.elapsed())
        })
    };
    let late = ordinary_latency(admin, base, other, &mut ordinary).await?;
    writer.await??;
    let (status, health_took) = health.await?;
    println!(
        "substring: ordinary event {:.1} ms when quiet, {:.1} ms under hostile load; /healthz {:?} in {:.1} ms",
        quiet.as_secs_f64() * 1e3,
        late.as_secs_f64() * 1e3,
        status.ok(),
        health_took.as_secs_f64() * 1e3,
    );
    drop(hostile);
    Ok(())
}

async fn long_string(
    admin: &reqwest::Client,
    base: &str,
    tag: u32,
    other: &str,
) -> anyhow::Result<()> {
    let images = format!("images{tag}");
    create_collection(admin, base, &images, json!({})).await?;
    let record = create_record(
        admin,
        base,
        &images,
        &json!({ "image": letters(1, 30_000) }),
    )
    .await?;
    let id = record["id"].as_str().context("an id")?.to_owned();
    let mut ordinary = ordinary_stream(admin, base, other).await?;
    let quiet = ordinary_latency(admin, base, other, &mut ordinary).await?;
    let patch = {
        let (admin, url) = (
            admin.clone(),
            format!("{base}/api/v1/collections/{images}/records/{id}"),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let status = admin
                .patch(url)
                .json(&json!({ "image": letters(2, 30_000) }))
                .send()
                .await
                .map(|r| r.status());
            (status, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late = ordinary_latency(admin, base, other, &mut ordinary).await?;
    let (status, patch_took) = patch.await?;
    println!(
        "long-string: PATCH {:?} in {:.1} ms; ordinary event {:.1} ms when quiet, {:.1} ms during the PATCH",
        status.ok(),
        patch_took.as_secs_f64() * 1e3,
        quiet.as_secs_f64() * 1e3,
        late.as_secs_f64() * 1e3,
    );
    Ok(())
}

async fn stalled(
    admin: &reqwest::Client,
    base: &str,
    tag: u32,
    options: &Options,
) -> anyhow::Result<()> {
    let pid = options
        .pid
        .context("`stalled` reads the server's memory: give --pid")?;
    let blob = "x".repeat(1_000_000);
    // The control: the same writes with nobody stalled, so what the
    // database itself keeps is not counted against the streams.
    let control = format!("control{tag}");
    create_collection(admin, base, &control, json!({})).await?;
    let before = rss_mib(pid)?;
    for n in 0..64 {
        create_record(admin, base, &control, &json!({ "n": n, "blob": blob })).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let control_growth = rss_mib(pid)? - before;

    let blobs = format!("blobs{tag}");
    create_collection(admin, base, &blobs, json!({})).await?;
    let address: std::net::SocketAddr = base.trim_start_matches("http://").parse()?;
    let mut sockets = Vec::new();
    for _ in 0..64 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut stream = socket.connect(address).await?;
        stream
            .write_all(
                format!(
                    "GET /api/v1/realtime/{blobs}?token={} HTTP/1.1\r\nHost: {address}\r\n\r\n",
                    options.token
                )
                .as_bytes(),
            )
            .await?;
        sockets.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_before = open_streams(admin, base).await?;
    let start = rss_mib(pid)?;
    for n in 0..64 {
        create_record(admin, base, &blobs, &json!({ "n": n, "blob": blob })).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_mib(pid)? - start;
    tokio::time::sleep(options.settle).await;
    let settled = rss_mib(pid)? - start;
    let open_after = open_streams(admin, base).await?;
    println!(
        "stalled: 64 x 1 MB records grew the server by {control_growth:.0} MiB with no stream; \
         with 64 stalled streams by {loaded:.0} MiB, {settled:.0} MiB {:?} later; \
         open streams {open_before} then {open_after}",
        options.settle
    );
    drop(sockets);
    Ok(())
}

/// `livehub_streams_open` from `/metrics`.
async fn open_streams(admin: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let text = admin
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("livehub_streams_open "))
        .unwrap_or("?")
        .trim()
        .to_owned())
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .split_whitespace()
        .next()
        .context("a number")?
        .parse()?;
    Ok(kib / 1024.0)
}
