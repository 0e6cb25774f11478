//! Change-page benchmark: how fast one consumer catches up on a long
//! history with `GET /api/v1/changes`, and how soon a long poll answers
//! after a write. Measured over HTTP against a running server.
//!
//!     cargo run --release --example pages -- --url http://127.0.0.1:8000 \
//!         --token "$TOKEN" --events 1000000
//!
//! * Writes `--events` records (1,000,000) into a fresh public collection
//!   with `--writers` (32) concurrent writers (skipped with `--reuse`, which
//!   reads the collection a run before wrote).
//! * Catch-up: one consumer reads every page from `since=earliest` with
//!   `limit=--limit` (10,000) until it is caught up; events per second,
//!   `--rounds` times.
//! * Long poll: a consumer waits with `wait=30s` while a writer writes one
//!   record every 50 ms, `--samples` (200) times; the time from sending a
//!   write to receiving the page that holds it (p50, p99, max).
//!
//! Loopback only: the tool refuses any other address.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

const COLLECTION: &str = "bench_pages";

#[derive(Parser, Debug)]
#[command(about = "Measure change pages: catch-up throughput and long-poll latency")]
struct Options {
    /// The server (loopback only).
    #[arg(long)]
    url: String,
    /// An admin token.
    #[arg(long, env = "LIVEHUB_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 32)]
    writers: u64,
    #[arg(long, default_value_t = 10_000)]
    limit: u32,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Read the collection a run before wrote instead of writing it.
    #[arg(long)]
    reuse: bool,
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
    let anonymous = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;

    if !options.reuse {
        write_history(&admin, &base, &options).await?;
    }
    for round in 1..=options.rounds {
        let (events, bytes, pages, took) = catch_up(&anonymous, &base, options.limit).await?;
        println!(
            "catch-up {round}: {events} events in {pages} pages, {:.1} MB, {:.2} s: {:.0} events/s",
            bytes as f64 / 1e6,
            took.as_secs_f64(),
            events as f64 / took.as_secs_f64()
        );
    }
    long_poll_latency(&admin, &anonymous, &base, options.samples).await
}

async fn write_history(
    admin: &reqwest::Client,
    base: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let created = admin
        .post(format!("{base}/api/v1/collections"))
        .json(&json!({"name": COLLECTION, "rules": {"read": "true"}}))
        .send()
        .await?;
    if !created.status().is_success() {
        bail!("creating {COLLECTION}: {} (use --reuse?)", created.status());
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..options.writers {
        let (admin, next, total) = (admin.clone(), next.clone(), options.events);
        let url = format!("{base}/api/v1/collections/{COLLECTION}/records");
        writers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(());
                }
                let body = json!({"id": format!("r{n:08}"), "n": n, "title": "a record of a long history"});
                let response = admin.post(&url).json(&body).send().await?;
                if response.status() != 201 {
                    bail!("write {n}: {}", response.status());
                }
                if n > 0 && n % 100_000 == 0 {
                    eprintln!("{n} written");
                }
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let took = started.elapsed();
    println!(
        "wrote {} records in {:.0} s ({:.0} writes/s)",
        options.events,
        took.as_secs_f64(),
        options.events as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Pages from `since=earliest` until caught up: events, bytes, pages, time.
async fn catch_up(
    client: &reqwest::Client,
    base: &str,
    limit: u32,
) -> anyhow::Result<(u64, u64, u64, Duration)> {
    let started = Instant::now();
    let (mut events, mut bytes, mut pages) = (0u64, 0u64, 0u64);
    let mut since = "earliest".to_owned();
    loop {
        let url =
            format!("{base}/api/v1/changes?collections={COLLECTION}&since={since}&limit={limit}");
        let body = client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        bytes += body.len() as u64;
        pages += 1;
        let page: Value = serde_json::from_slice(&body).context("a page is JSON")?;
        events += page["events"].as_array().map_or(0, Vec::len) as u64;
        since = page["next"]
            .as_str()
            .context("a page has `next`")?
            .to_owned();
        if page["caught_up"] == true {
            return Ok((events, bytes, pages, started.elapsed()));
        }
    }
}

/// Write-to-page latency of a long-polling consumer.
async fn long_poll_latency(
    admin: &reqwest::Client,
    client: &reqwest::Client,
    base: &str,
    samples: usize,
) -> anyhow::Result<()> {
    let edge: Value = client
        .get(format!(
            "{base}/api/v1/changes?collections={COLLECTION}&since=now"
        ))
        .send()
        .await?
        .json()
        .await?;
    let mut since = edge["next"].as_str().context("`next`")?.to_owned();
    let sent_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let writer = tokio::spawn({
        let (admin, sent_at) = (admin.clone(), sent_at.clone());
        let url = format!("{base}/api/v1/collections/{COLLECTION}/records");
        async move {
            for n in 0..samples {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let id = format!("poll{n:05}-{}", std::process::id());
                sent_at.lock().unwrap().insert(id.clone(), Instant::now());
                admin.post(&url).json(&json!({"id": id})).send().await?;
            }
            anyhow::Ok(())
        }
    });
    let mut latencies = Vec::with_capacity(samples);
    while latencies.len() < samples {
        let url = format!("{base}/api/v1/changes?collections={COLLECTION}&since={since}&wait=30s");
        let page: Value = client.get(&url).send().await?.json().await?;
        let received = Instant::now();
        for event in page["events"].as_array().into_iter().flatten() {
            let id = event["record_id"].as_str().unwrap_or_default();
            if let Some(sent) = sent_at.lock().unwrap().get(id) {
                latencies.push(received - *sent);
            }
        }
        since = page["next"].as_str().context("`next`")?.to_owned();
    }
    writer.await??;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "long poll: {} writes, write-to-page latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
