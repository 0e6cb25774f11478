//! Live-query benchmark: snapshots against list pages, the server's memory
//! while many clients take snapshots, and the bytes `diff=true` saves.
//! Measured over HTTP against a running server.
//!
//!     cargo run --release --example snapshot -- --url http://127.0.0.1:8000 \
//!         --token "$TOKEN" --pid "$SERVER_PID" all
//!
//! Scenarios:
//!
//! * `time`: a collection of `--records` records (10,000); the time until a
//!   stream with `snapshot=true` has received `snapshot.done`, against the
//!   time to page `GET .../records?limit=1000` through the same records;
//!   run alternately `--rounds` times.
//! * `memory`: `--clients` (100) streams take that snapshot at once, each
//!   reading it whole; the server's resident memory before, at its peak
//!   (the kernel's high-water mark, reset first) and after (needs `--pid`).
//! * `diff`: a record of 20 fields, one of which changes `--rounds` times;
//!   the bytes of each `record.updated` message with and without
//!   `diff=true`.
//!
//! Loopback only: the tool refuses any other address.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Measure snapshots, their memory, and diffs")]
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
    #[arg(long, default_value_t = 10_000)]
    records: u32,
    #[arg(long, default_value_t = 100)]
    clients: u32,
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    scenario: Scenario,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Scenario {
    Time,
    Memory,
    Diff,
    All,
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
    let scenario = options.scenario;
    if matches!(scenario, Scenario::Time | Scenario::Memory | Scenario::All) {
        let collection = format!("snap{tag}");
        fill(&admin, &base, &collection, options.records).await?;
        if matches!(scenario, Scenario::Time | Scenario::All) {
            time(&admin, &base, &collection, &options).await?;
        }
        if matches!(scenario, Scenario::Memory | Scenario::All) {
            memory(&admin, &base, &collection, &options).await?;
        }
    }
    if matches!(scenario, Scenario::Diff | Scenario::All) {
        diff(&admin, &base, &format!("diff{tag}"), options.rounds.max(20)).await?;
    }
    Ok(())
}

/// Creates `collection` with `count` records of about 200 bytes, from 8
/// concurrent writers.
async fn fill(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
    count: u32,
) -> anyhow::Result<()> {
    create_collection(admin, base, collection).await?;
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let admin = admin.clone();
            let url = format!("{base}/api/v1/collections/{collection}/records");
            tokio::spawn(async move {
                for n in (writer..count).step_by(8) {
                    let record = json!({
                        "id": format!("r{n:06}"),
                        "title": format!("Record number {n}"),
                        "status": if n % 3 == 0 { "draft" } else { "published" },
                        "author": {"name": format!("author{}", n % 50), "id": n % 50},
                        "score": n,
                        "tags": ["alpha", "beta"],
                        "body": "x".repeat(80),
                    });
                    let response = admin.post(&url).json(&record).send().await?;
                    if !response.status().is_success() {
                        bail!("creating a record: {}", response.status());
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    println!(
        "filled {collection} with {count} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn create_collection(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
) -> anyhow::Result<()> {
    let response = admin
        .post(format!("{base}/api/v1/collections"))
        .json(&json!({ "name": collection }))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("creating {collection}: {}", response.status());
    }
    Ok(())
}

/// Reads a snapshot stream until `snapshot.done`: the records it held and
/// the bytes it took.
async fn take_snapshot(
    client: &reqwest::Client,
    base: &str,
    collection: &str,
) -> anyhow::Result<(u64, usize)> {
    let response = client
        .get(format!("{base}/api/v1/realtime/{collection}?snapshot=true"))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("snapshot stream: {}", response.status());
    }
    let mut body = response.bytes_stream();
    let mut pending = Vec::new();
    let mut bytes = 0;
    let mut records = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len();
        pending.extend_from_slice(&chunk);
        // Count whole messages; keep a partial one for the next chunk.
        while let Some(end) = find(&pending, b"\n\n") {
            let message = &pending[..end];
            if message.starts_with(b"event: record.snapshot") {
                records += 1;
            } else if find(message, b"event: snapshot.done").is_some() {
                return Ok((records, bytes));
            }
            pending.drain(..end + 2);
        }
    }
    bail!("the stream ended before snapshot.done")
}

/// Pages through a collection with `GET .../records`: the records read.
async fn page_through(
    client: &reqwest::Client,
    base: &str,
    collection: &str,
) -> anyhow::Result<u64> {
    let mut cursor: Option<String> = None;
    let mut records = 0;
    loop {
        let mut url = format!("{base}/api/v1/collections/{collection}/records?limit=1000&sort=id");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client.get(&url).send().await?.json().await?;
        records += page["items"].as_array().context("a page of items")?.len() as u64;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(records),
        }
    }
}

async fn time(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let mut streamed = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..options.rounds {
        let started = Instant::now();
        let (records, bytes) = take_snapshot(admin, base, collection).await?;
        streamed.push(started.elapsed());
        anyhow::ensure!(
            records == u64::from(options.records),
            "snapshot held {records}"
        );
        let started = Instant::now();
        let listed = page_through(admin, base, collection).await?;
        paged.push(started.elapsed());
        anyhow::ensure!(listed == u64::from(options.records), "pages held {listed}");
        println!(
            "snapshot {:.0} ms ({} KiB), pages {:.0} ms",
            streamed.last().unwrap().as_secs_f64() * 1e3,
            bytes / 1024,
            paged.last().unwrap().as_secs_f64() * 1e3
        );
    }
    println!(
        "{} records: snapshot stream median {:.0} ms, GET pages of 1,000 median {:.0} ms",
        options.records,
        median(&mut streamed).as_secs_f64() * 1e3,
        median(&mut paged).as_secs_f64() * 1e3
    );
    Ok(())
}

async fn memory(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let pid = options.pid.context("`memory` needs --pid")?;
    let before = rss_mib(pid)?;
    // Resets the kernel's high-water mark of the server's memory, so the
    // peak read after is this scenario's.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("resetting the server's peak memory (needs its owner or root)")?;
    let started = Instant::now();
    let clients: Vec<_> = (0..options.clients)
        .map(|_| {
            let admin = admin.clone();
            let base = base.to_owned();
            let collection = collection.to_owned();
            tokio::spawn(async move { take_snapshot(&admin, &base, &collection).await })
        })
        .collect();
    for client in clients {
        let (records, _) = client.await??;
        anyhow::ensure!(
            records == u64::from(options.records),
            "snapshot held {records}"
        );
    }
    let elapsed = started.elapsed();
    let peak = status_field(pid, "VmHWM:").unwrap_or(f64::NAN);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(pid)?;
    println!(
        "{} clients took a {}-record snapshot at once in {:.1} s: server RSS {before:.0} MiB before, peak (VmHWM) {peak:.0} MiB, {after:.0} MiB 2 s after",
        options.clients,
        options.records,
        elapsed.as_secs_f64()
    );
    Ok(())
}

async fn diff(
    admin: &reqwest::Client,
    base: &str,
    collection: &str,
    rounds: u32,
) -> anyhow::Result<()> {
    create_collection(admin, base, collection).await?;
    let mut record = serde_json::Map::new();
    record.insert("id".into(), json!("r"));
    for n in 0..19 {
        record.insert(
            format!("field{n:02}"),
            json!(format!("a value of field {n} that is typical")),
        );
    }
    let records_url = format!("{base}/api/v1/collections/{collection}/records");
    admin
        .post(&records_url)
        .json(&record)
        .send()
        .await?
        .error_for_status()?;
    let mut sizes = Vec::new();
    for diff in [false, true] {
        let response = admin
            .get(format!("{base}/api/v1/realtime/{collection}?diff={diff}"))
            .send()
            .await?;
        let mut body = response.bytes_stream();
        let mut pending = Vec::new();
        let mut total = 0;
        let mut seen = 0;
        for round in 0..rounds {
            admin
                .patch(format!("{records_url}/r"))
                .json(&json!({ "field07": format!("changed {diff} {round}") }))
                .send()
                .await?
                .error_for_status()?;
            // Read until this update's message has arrived.
            while seen <= round {
                let chunk = body.next().await.context("the stream ended")??;
                pending.extend_from_slice(&chunk);
                while let Some(end) = find(&pending, b"\n\n") {
                    if find(&pending[..end], b"event: record.updated").is_some() {
                        total += end + 2;
                        seen += 1;
                    }
                    pending.drain(..end + 2);
                }
            }
        }
        sizes.push(total as f64 / f64::from(rounds));
    }
    println!(
        "a 20-field record, one field changed: {:.0} bytes per record.updated message without diff, {:.0} with diff=true ({:.0}% of it)",
        sizes[0],
        sizes[1],
        sizes[1] / sizes[0] * 100.0
    );
    Ok(())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_field(pid, "VmRSS:").context("reading the server's memory")
}

fn status_field(pid: u32, name: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
