//! The front door over raw TCP: streams opened on a fresh connection are
//! served without hyper (close-delimited), everything else by hyper.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{HANG_GUARD, TestApp};

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until `text` has arrived; returns everything read.
async fn read_until(socket: &mut TcpStream, text: &str) -> String {
    let mut read = Vec::new();
    tokio::time::timeout(HANG_GUARD, async {
        while !String::from_utf8_lossy(&read).contains(text) {
            let mut buf = [0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {text:?}: {}",
                String::from_utf8_lossy(&read)
            );
            read.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server answered");
    String::from_utf8(read).unwrap()
}

fn admin(app: &TestApp) -> String {
    app.token(json!({"sub": "admin", "role": "admin", "exp": crate::helpers::now_secs() + 600}))
}

async fn read_to_end(socket: &mut TcpStream) -> String {
    let mut read = Vec::new();
    tokio::time::timeout(HANG_GUARD, socket.read_to_end(&mut read))
        .await
        .expect("the server closed the connection")
        .unwrap();
    String::from_utf8(read).unwrap()
}

#[tokio::test]
async fn a_stream_on_a_fresh_connection_is_close_delimited_and_ends_when_the_client_goes() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let before = app.hub.subscriptions().0;
    let mut socket = connect(&app).await;
    let request = format!(
        "GET /api/v1/realtime/posts HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
        admin(&app)
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let head = read_until(&mut socket, "event: connected").await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("x-accel-buffering: no"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    app.create_record("posts", json!({"id": "p1"})).await;
    let events = read_until(&mut socket, "event: record.created").await;
    assert!(events.contains("\"record_id\":\"p1\""));
    assert_eq!(app.hub.subscriptions().0, before + 1);
    // The client hangs up: its stream ends at once, not at its next write.
    drop(socket);
    tokio::time::timeout(HANG_GUARD, async {
        while app.hub.subscriptions().0 > before {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stream ended when its client hung up");
}

#[tokio::test]
async fn a_refused_stream_gets_its_json_error_and_the_connection_closes() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app).await;
    let request = format!(
        "GET /api/v1/realtime/missing HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
        admin(&app)
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_end(&mut socket).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
}

#[tokio::test]
async fn other_requests_and_later_streams_on_a_kept_connection_go_to_hyper() {
    let app = TestApp::spawn().await;
    app.create_collection("posts").await;
    let mut socket = connect(&app).await;
    // Two requests on one connection: hyper keeps it alive.
    for _ in 0..2 {
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until(&mut socket, "\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .to_ascii_lowercase()
            .split("content-length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("a content length");
        let mut rest = vec![0u8; length - body.len()];
        socket.read_exact(&mut rest).await.unwrap();
    }
    // A stream as a later request on it is hyper's: chunked.
    let request = format!(
        "GET /api/v1/realtime/posts HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
        admin(&app)
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let head = read_until(&mut socket, "event: connected").await;
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
}

/// A request head with bare LF line endings is answered as hyper would
/// (it used to wait for a CRLF blank line until the head's 30 s timeout).
#[tokio::test]
async fn a_request_head_with_bare_line_feeds_is_answered() {
    let app = TestApp::spawn().await;
    app.create_public_collection("p").await;
    let mut socket = connect(&app).await;
    socket
        .write_all(b"GET /api/v1/realtime/p HTTP/1.1\nHost: x\n\n")
        .await
        .unwrap();
    let answer = read_until(&mut socket, "event: connected").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // One for hyper (not a stream) too.
    let mut socket = connect(&app).await;
    socket
        .write_all(b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n")
        .await
        .unwrap();
    let answer = read_to_end(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Shutdown waits for the front's connections, and a request head still
/// coming is not waited for: once the server has stopped, no connection of
/// the front is left open (before, a half-sent head kept its connection,
/// and a task, for the head timeout after the server was gone).
#[tokio::test]
async fn shutdown_ends_the_fronts_connections_before_it_returns() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app).await;
    socket
        .write_all(b"GET /api/v1/realtime/posts HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The front has the connection and waits for the rest of the head.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.shutdown().await;
    // The server has returned: the connection is already closed (the
    // bound is far below the 30 s a head may take).
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("the connection was closed when the server stopped");
    assert_eq!(read.unwrap_or(0), 0);
}
