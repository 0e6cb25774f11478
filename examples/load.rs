//! Load tool: opens many SSE streams, writes records through the API, and
//! measures how long each event takes to reach each stream, and how many
//! events per second are delivered in all.
//!
//!     cargo run --release --example load -- --streams 1000 --writes 2000 --rate 200
//!
//! Without `--url` it starts a livehub server in this process on a loopback
//! port (in-memory database), so one command measures everything; with
//! `--url` it loads a server that is already running, or several nodes of
//! one database (`--url a,b`: streams and writers take turns over them;
//! `--write-url` sends every write to one node, to measure delivery across
//! nodes). Loopback only: the tool refuses any other address.
//!
//! Latency is measured from the moment a write request is sent to the moment
//! a stream has read the event: an upper bound on commit-to-client latency,
//! since the commit happens after the request is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{Barrier, watch};

#[derive(Parser, Debug)]
#[command(about = "Load livehub's SSE streams and measure delivery latency and throughput")]
struct Options {
    /// Running servers to load (loopback only), comma-separated: nodes of
    /// one database, over which streams and writers are spread. Default:
    /// start one here.
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// Write through this node only (loopback only); streams stay on `--url`.
    #[arg(long)]
    write_url: Option<String>,
    /// An admin token for `--url` (the one the server printed at start).
    #[arg(long, env = "LIVEHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Open streams.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Records to write.
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Target writes per second over all writers; 0 writes as fast as possible.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Give up waiting for deliveries after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Stream only records whose `room` is this (with `--rooms`, records are
    /// spread over that many rooms): measures filtered fan-out.
    #[arg(long)]
    room_filter: Option<u64>,
    /// Spread written records over this many rooms.
    #[arg(long, default_value_t = 1)]
    rooms: u64,
    /// Once every stream is open, all of them drop their connections and
    /// reconnect at once with their `Last-Event-ID` (a network blip, a load
    /// balancer failing over): reports how long until every stream is back,
    /// then writes, so the delivery check covers the storm too.
    #[arg(long)]
    storm: bool,
}

/// `url` without a trailing slash, if it is a loopback address.
fn loopback(url: &str) -> anyhow::Result<String> {
    let host = url
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        bail!("--url and --write-url must be loopback addresses, not {url}");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// What one stream saw: latencies (microseconds from the write request) of
/// the events it received.
struct StreamReport {
    latencies_us: Vec<u32>,
    last_receive: Option<Instant>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let (bases, token, _server) = if options.url.is_empty() {
        let (url, token, handle) = start_server().await?;
        (vec![url], token, Some(handle))
    } else {
        let token = options
            .token
            .clone()
            .context("--url needs --token (or LIVEHUB_TOKEN): an admin token")?;
        let bases: Vec<String> = options
            .url
            .iter()
            .map(|url| loopback(url))
            .collect::<anyhow::Result<_>>()?;
        (bases, token, None)
    };
    let write_bases = match &options.write_url {
        Some(url) => vec![loopback(url)?],
        None => bases.clone(),
    };
    let base = bases[0].clone();
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let client = reqwest::Client::builder()
        .default_headers(auth.clone())
        .pool_max_idle_per_host(options.writers * 2)
        .build()?;
    let collection = format!("load{}", std::process::id());
    let response = client
        .post(format!("{base}/api/v1/collections"))
        .json(&json!({ "name": collection }))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("creating the collection failed: {}", response.status());
    }
    // Other nodes learn of the collection from the changefeed.
    for node in bases.iter().chain(&write_bases) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = format!("{node}/api/v1/collections/{collection}/records?limit=1");
        while client.get(&url).send().await?.status() != 200 {
            if Instant::now() > deadline {
                bail!("{node} never saw the collection");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Send times, by sequence number, in microseconds since `origin`.
    let origin = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..options.writes).map(|_| AtomicU64::new(0)).collect());
    let expected_per_stream = match options.room_filter {
        Some(room) => (0..options.writes as u64)
            .filter(|n| n % options.rooms == room)
            .count(),
        None => options.writes,
    };

    // Open every stream and wait until all are connected.
    let ready = Arc::new(Barrier::new(options.streams + 1));
    let mut streams = Vec::with_capacity(options.streams);
    let stream_path = match options.room_filter {
        Some(room) => format!("/api/v1/realtime/{collection}?query=room%3D{room}"),
        None => format!("/api/v1/realtime/{collection}"),
    };
    // One client for every stream: a response being streamed holds its
    // connection, so each stream still gets a connection of its own. (A
    // client per stream spent about 4 ms per stream parsing root
    // certificates, which this tool then reported as the server's opening
    // time.)
    let streams_client = reqwest::Client::builder()
        .default_headers(auth.clone())
        .build()?;
    let (storm_signal, storm_watch) = watch::channel(false);
    let back = Arc::new(Barrier::new(options.streams + 1));
    let opened = Instant::now();
    for index in 0..options.streams {
        let stream = Stream {
            client: streams_client.clone(),
            url: format!("{}{stream_path}", bases[index % bases.len()]),
            ready: ready.clone(),
            sent_at: sent_at.clone(),
            origin,
            expected: expected_per_stream,
            deadline: options.timeout,
        };
        let storm = options.storm.then(|| Storm {
            signal: storm_watch.clone(),
            back: back.clone(),
            stage: StormStage::Waiting,
        });
        streams.push(tokio::spawn(stream.read(storm)));
    }
    // A stream that fails never reaches the barrier: give up rather than
    // wait for ever.
    if tokio::time::timeout(options.timeout, ready.wait())
        .await
        .is_err()
    {
        bail!("not every stream opened within --timeout");
    }
    let open_time = opened.elapsed();
    let rss_streams_open = rss_kib();
    let storm_time = if options.storm {
        let storm = Instant::now();
        storm_signal.send_replace(true);
        if tokio::time::timeout(options.timeout, back.wait())
            .await
            .is_err()
        {
            bail!("not every stream came back from the storm within --timeout");
        }
        Some(storm.elapsed())
    } else {
        None
    };

    // Write, at the target rate.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for writer in 0..options.writers {
        let client = client.clone();
        let node = &write_bases[writer % write_bases.len()];
        let url = format!("{node}/api/v1/collections/{collection}/records");
        let next = next.clone();
        let sent_at = sent_at.clone();
        let (writes, rate, rooms) = (options.writes as u64, options.rate, options.rooms);
        writers.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= writes {
                    return Ok::<(), anyhow::Error>(());
                }
                if let Some(offset_us) = (seq * 1_000_000).checked_div(rate) {
                    let due = started + Duration::from_micros(offset_us);
                    tokio::time::sleep_until(due.into()).await;
                }
                sent_at[seq as usize].store(origin.elapsed().as_micros() as u64, Ordering::Relaxed);
                let body = json!({"id": format!("s{seq:09}"), "room": seq % rooms, "text": "hello, world"});
                let response = client.post(&url).json(&body).send().await?;
                if response.status() != 201 {
                    bail!("write {seq} failed: {}", response.status());
                }
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let write_time = started.elapsed();

    let mut latencies: Vec<u32> = Vec::with_capacity(options.streams * expected_per_stream);
    let mut last_receive = started;
    let mut short_streams = 0;
    for stream in streams {
        let report = stream.await??;
        if report.latencies_us.len() < expected_per_stream {
            short_streams += 1;
        }
        if let Some(last) = report.last_receive {
            last_receive = last_receive.max(last);
        }
        latencies.extend(report.latencies_us);
    }
    latencies.sort_unstable();
    let delivered = latencies.len();
    let delivery_time = last_receive.duration_since(started);
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[index]) / 1000.0
    };

    println!("streams            {}", options.streams);
    println!("streams opened in  {:.2} s", open_time.as_secs_f64());
    if let Some(storm_time) = storm_time {
        println!(
            "storm: all back in {:.2} s (every stream reconnected with its Last-Event-ID)",
            storm_time.as_secs_f64()
        );
    }
    println!(
        "writes             {} by {} writers, target {} /s",
        options.writes, options.writers, options.rate
    );
    println!(
        "write rate         {:.0} /s",
        options.writes as f64 / write_time.as_secs_f64()
    );
    println!(
        "events expected    {}",
        options.streams * expected_per_stream
    );
    println!("events delivered   {delivered}");
    println!("streams short      {short_streams}");
    println!(
        "delivery rate      {:.0} events/s",
        delivered as f64 / delivery_time.as_secs_f64()
    );
    println!(
        "latency ms         p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(1.0)
    );
    if let Some(rss) = rss_streams_open {
        println!(
            "rss with streams   {:.1} MiB (whole process)",
            rss as f64 / 1024.0
        );
    }
    if let Some(peak) = peak_rss_kib() {
        println!(
            "peak rss           {:.1} MiB (whole process)",
            peak as f64 / 1024.0
        );
    }
    if delivered < options.streams * expected_per_stream {
        bail!(
            "{} events were not delivered",
            options.streams * expected_per_stream - delivered
        );
    }
    Ok(())
}

/// One stream to read.
struct Stream {
    client: reqwest::Client,
    url: String,
    /// Waited at once the stream is first connected.
    ready: Arc<Barrier>,
    sent_at: Arc<Vec<AtomicU64>>,
    origin: Instant,
    /// Record events to read before the stream is done.
    expected: usize,
    deadline: Duration,
}

/// A stream's part in a reconnect storm (`--storm`).
struct Storm {
    /// Turns true when every stream is to reconnect.
    signal: watch::Receiver<bool>,
    /// Waited at once connected again.
    back: Arc<Barrier>,
    stage: StormStage,
}

#[derive(PartialEq)]
enum StormStage {
    Waiting,
    Reconnecting,
    Over,
}

/// What reading a stream gave next.
enum Next {
    Chunk(bytes::Bytes),
    /// The stream ended, failed or timed out.
    End,
    Storm,
}

impl Stream {
    /// Reads until `expected` record events arrived (or the deadline),
    /// reconnecting once with its `Last-Event-ID` if a storm is signalled.
    async fn read(self, mut storm: Option<Storm>) -> anyhow::Result<StreamReport> {
        let mut report = StreamReport {
            latencies_us: Vec::with_capacity(self.expected),
            last_receive: None,
        };
        let give_up = tokio::time::Instant::now() + self.deadline;
        let mut last_id: Option<String> = None;
        let mut first = true;
        'connection: loop {
            let mut request = self.client.get(&self.url);
            if let Some(id) = &last_id {
                request = request.header("last-event-id", id);
            }
            let response = request.send().await.context("opening a stream")?;
            if response.status() != 200 {
                bail!("stream answered {}", response.status());
            }
            let mut body = response.bytes_stream();
            let mut buffer: Vec<u8> = Vec::with_capacity(4096);
            let mut connected = false;
            while report.latencies_us.len() < self.expected {
                let next = {
                    let storm_now = async {
                        match storm.as_mut() {
                            Some(storm) if connected && storm.stage == StormStage::Waiting => {
                                let _ = storm.signal.wait_for(|go| *go).await;
                            }
                            _ => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        chunk = tokio::time::timeout_at(give_up, body.next()) => match chunk {
                            Ok(Some(chunk)) => Next::Chunk(chunk?),
                            Ok(None) | Err(_) => Next::End,
                        },
                        () = storm_now => Next::Storm,
                    }
                };
                let chunk = match next {
                    Next::Chunk(chunk) => chunk,
                    Next::End => break 'connection,
                    Next::Storm => {
                        if let Some(storm) = storm.as_mut() {
                            storm.stage = StormStage::Reconnecting;
                        }
                        continue 'connection;
                    }
                };
                let now = Instant::now();
                buffer.extend_from_slice(&chunk);
                // Complete messages end with a blank line.
                let mut consumed = 0;
                while let Some(end) = find(&buffer[consumed..], b"\n\n") {
                    let message = &buffer[consumed..consumed + end];
                    if let Some(id) = message
                        .split(|byte| *byte == b'\n')
                        .find_map(|line| line.strip_prefix(b"id: "))
                    {
                        last_id = Some(String::from_utf8_lossy(id).into_owned());
                    }
                    if !connected && find(message, b"event: connected").is_some() {
                        connected = true;
                        if first {
                            first = false;
                            self.ready.wait().await;
                        } else if let Some(storm) = storm.as_mut()
                            && storm.stage == StormStage::Reconnecting
                        {
                            storm.stage = StormStage::Over;
                            storm.back.wait().await;
                        }
                    } else if let Some(seq) = sequence_number(message) {
                        let sent = self
                            .sent_at
                            .get(seq)
                            .map(|t| t.load(Ordering::Relaxed))
                            .unwrap_or(0);
                        let received = now.duration_since(self.origin).as_micros() as u64;
                        report
                            .latencies_us
                            .push(received.saturating_sub(sent) as u32);
                        report.last_receive = Some(now);
                    }
                    consumed += end + 2;
                }
                buffer.drain(..consumed);
            }
            break;
        }
        Ok(report)
    }
}

/// The sequence number in a `record.created` message's `"record_id":"s…"`.
fn sequence_number(message: &[u8]) -> Option<usize> {
    find(message, b"event: record.created")?;
    let key = b"\"record_id\":\"s";
    let start = find(message, key)? + key.len();
    let digits = &message[start..start + 9];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Starts a livehub server on a loopback port in this process.
/// A server in this process, with no stream limits; its URL and admin token.
async fn start_server()
-> anyhow::Result<(String, String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let mut config = livehub::Config::defaults();
    config.addr = "127.0.0.1:0".parse()?;
    config.max_streams = 0;
    config.max_streams_per_user = 0;
    config.max_streams_per_ip = 0;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = livehub::Server::build(config).await?;
    let token = server
        .dev_token()
        .context("a server without a configured key makes an admin token")?
        .to_owned();
    let handle = tokio::spawn(server.serve(listener, std::future::pending()));
    Ok((url, token, handle))
}

fn rss_kib() -> Option<u64> {
    status_field("VmRSS:")
}

fn peak_rss_kib() -> Option<u64> {
    status_field("VmHWM:")
}

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
