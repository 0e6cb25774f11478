//! The real binary: configuration from flags, readiness, and graceful
//! shutdown on SIGTERM with open streams.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{HANG_GUARD, SseClient};

/// A free loopback port (bound, then released for the binary to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary on a free port with `args` and `env`, its output to
/// `output` (or nowhere), and waits until it answers.
async fn start_binary(
    args: &[&str],
    env: &[(&str, &str)],
    output: Option<&std::fs::File>,
) -> (std::process::Child, String) {
    let port = free_port();
    let sink = |file: Option<&std::fs::File>| match file {
        Some(file) => Stdio::from(file.try_clone().unwrap()),
        None => Stdio::null(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(args)
        .envs(env.iter().copied())
        .stdout(sink(output))
        .stderr(sink(output))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // Ready when /healthz answers (the binary binds, then opens its database).
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/healthz")).await
            && response.status() == 200
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binary never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, base)
}

/// Sends SIGTERM and waits for a clean exit.
async fn stop_binary(mut child: std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_the_process() {
    let (child, base) = start_binary(&["--heartbeat", "1h"], &[("RUST_LOG", "warn")], None).await;
    let client = reqwest::Client::new();

    let response = client
        .get(format!("{base}/api/v1/realtime"))
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    stream.connected().await;

    let stopping = tokio::spawn(stop_binary(child));
    assert!(stream.next().await.is_none(), "the stream ends cleanly");
    stopping.await.unwrap();
}

#[tokio::test]
async fn tokens_and_tickets_in_urls_stay_out_of_the_logs() {
    const SECRET: &str = "a secret for the log test, 32+ bytes";
    let log = tempfile::NamedTempFile::new().unwrap();
    let (child, base) = start_binary(
        &[],
        &[("RUST_LOG", "debug"), ("LIVEHUB_JWT_SECRET", SECRET)],
        Some(log.as_file()),
    )
    .await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "ann", "exp": crate::helpers::now_secs() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let mut stream = SseClient::new(
        client
            .get(format!("{base}/api/v1/realtime?token={token}"))
            .send()
            .await
            .unwrap(),
    );
    stream.connected().await;
    let refused = client
        .get(format!("{base}/api/v1/collections?token={token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let ticket: serde_json::Value = client
        .post(format!("{base}/api/v1/realtime/tickets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let mut by_ticket = SseClient::new(
        client
            .get(format!("{base}/api/v1/realtime?ticket={ticket}"))
            .send()
            .await
            .unwrap(),
    );
    by_ticket.connected().await;
    drop((stream, by_ticket));
    stop_binary(child).await;

    let output = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        output.contains("token=[redacted]") && output.contains("ticket=[redacted]"),
        "the requests were logged, with their credentials blanked:\n{output}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!output.contains(signature), "a token reached the log");
    assert!(!output.contains(&ticket), "a ticket reached the log");
}

#[test]
fn help_documents_every_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--addr",
        "--db",
        "--db-user",
        "--db-pass",
        "--db-ns",
        "--db-name",
        "--heartbeat",
        "--retry",
        "--retention",
        "--poll-interval",
        "--settle",
        "--stream-buffer",
        "--max-replays",
        "--max-body-bytes",
        "--shutdown-grace",
        "--jwt-secret",
        "--jwt-public-key",
        "--jwt-algorithm",
        "--jwt-issuer",
        "--jwt-audience",
        "--auth-cookie",
        "--max-streams",
        "--max-streams-per-user",
        "--max-streams-per-ip",
        "--presence-grace",
        "--presence-ttl",
        "--presence-rule",
        "--anonymous-presence",
        "--channel-rules",
        "--cors-origins",
        "--cors-credentials",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&format!("`{flag}`")),
            "{flag} missing from the README's table"
        );
    }
    assert!(help.contains("LIVEHUB_DB"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let (child, base) = start_binary(
        &["--log-format", "json"],
        &[("RUST_LOG", "debug,surrealdb=warn")],
        Some(log.as_file()),
    )
    .await;
    reqwest::get(format!("{base}/api/v1/collections"))
        .await
        .unwrap();
    stop_binary(child).await;
    let text = std::fs::read_to_string(log.path()).unwrap();
    // Standard output also holds the development token's banner.
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
        .collect();
    let listening = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("livehub listening"))
        })
        .expect("the start is logged as JSON");
    assert_eq!(listening["level"], "INFO");
    // A request's log line carries its span, with the client's address.
    let request = lines
        .iter()
        .find(|line| line["span"]["path"] == "/api/v1/collections")
        .expect("a request is logged with its span");
    assert_eq!(request["span"]["client"], "127.0.0.1");
}

/// The binary listens with the largest backlog the kernel allows, not the
/// 128 of a plain bind: in a reconnect storm a full accept queue drops
/// handshakes, and each dropped client waits a second or more to retry.
#[tokio::test]
async fn the_binary_listens_with_the_kernels_largest_backlog() {
    let (child, base) = start_binary(&[], &[], None).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    // For a listening socket, `ss` shows the backlog as its Send-Q.
    let listing = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let backlog: u32 = listing
        .split_whitespace()
        .nth(2)
        .and_then(|column| column.parse().ok())
        .unwrap_or_else(|| panic!("no backlog in `ss` output: {listing:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog, somaxconn.min(65_535), "{listing}");
    stop_binary(child).await;
}
