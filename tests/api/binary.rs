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

#[tokio::test]
async fn sigterm_ends_open_streams_and_the_process() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--heartbeat", "1h"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // Ready when /healthz answers (the binary binds, then opens its database).
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
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

    let response = client
        .get(format!("{base}/api/v1/realtime"))
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    stream.connected().await;

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(stream.next().await.is_none(), "the stream ends cleanly");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
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
