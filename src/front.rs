//! The front door: accepts connections, and serves event streams opened on
//! a fresh HTTP/1.1 connection itself, handing everything else to hyper.
//!
//! # Why
//!
//! A stream lives for hours and its client sends nothing after its request,
//! yet hyper keeps a connection's read buffer (about 16 KiB once a request
//! has been parsed) and its header write buffer (8 KiB) for the
//! connection's life: two thirds of an idle stream's memory (heap profile
//! in BENCHMARKS.md). So a connection whose first request is a plain
//! `GET /api/v1/realtime…` is answered here instead: its head is read into a
//! small buffer and parsed with `httparse`, the request goes through the
//! same router (every layer, extractor and handler), and the stream's body
//! is written straight to the socket, delimited by closing the connection
//! (`Connection: close`), which every SSE client and proxy understands.
//! Nothing but the stream's own state stays behind.
//!
//! Every other connection (another route, a body, HTTP/1.0, HTTP/2, an
//! upgrade, anything unusual) is handed to hyper with the bytes already
//! read put back in front ([`Rewind`]), so it sees the connection as sent.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A socket whose writes time out: a client that stops reading (a zero TCP
/// window) is disconnected after `--write-timeout` without progress, rather
/// than holding its stream's buffers for ever.
type Socket = Pin<Box<TimeoutStream<TcpStream>>>;

/// Largest request head read here; a longer one goes to hyper, which
/// answers it.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most headers a stream request may have here (more: hyper).
const MAX_HEADERS: usize = 48;

/// Connections the kernel may hold for us before we accept them, at most
/// (it caps this at `net.core.somaxconn`). The 128 of a plain bind overflow
/// when thousands of clients reconnect at once (after a deploy, say): each
/// connection dropped then waits a second or more to retry its handshake.
const BACKLOG: u32 = 65_535;

/// A listener on `addr` with a backlog for reconnect storms.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The listener hyper (through `axum::serve`) accepts from: connections the
/// front did not keep.
pub struct Front {
    handed_over: mpsc::Receiver<(Rewind<Socket>, SocketAddr)>,
    local: SocketAddr,
    tasks: TaskTracker,
}

impl Front {
    /// Accepts on `listener` until `shutdown`, serving streams with `router`.
    pub fn new(
        listener: TcpListener,
        router: Router,
        write_timeout: Duration,
        shutdown: CancellationToken,
    ) -> io::Result<Front> {
        let local = listener.local_addr()?;
        let (hand_over, handed_over) = mpsc::channel(64);
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(
            listener,
            router,
            write_timeout,
            hand_over,
            shutdown,
            tasks.clone(),
        ));
        Ok(Front {
            handed_over,
            local,
            tasks,
        })
    }

    /// The accept loop and every connection the front serves or is reading
    /// the head of: after shutdown, [`TaskTracker::wait`] (once closed)
    /// returns when the last has ended.
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }
}

impl axum::serve::Listener for Front {
    type Io = Rewind<Socket>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handed_over.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): hyper gets nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    write_timeout: Duration,
    hand_over: mpsc::Sender<(Rewind<Socket>, SocketAddr)>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    // Failures since the last warning, and when it was given.
    let mut failures = 0u64;
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin, and
                // warn once a second at most.
                failures += 1;
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(%error, failures, "accepting connections fails");
                    warned = Some(tokio::time::Instant::now());
                    failures = 0;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut socket = TimeoutStream::new(tcp);
        socket.set_write_timeout(Some(write_timeout));
        let mut socket: Socket = Box::pin(socket);
        let (router, hand_over, shutdown) = (router.clone(), hand_over.clone(), shutdown.clone());
        tasks.spawn(async move {
            // A head still coming at shutdown is not waited for.
            let head = tokio::select! {
                _ = shutdown.cancelled() => return,
                head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut socket)) => head,
            };
            let Ok(Ok(head)) = head else {
                return;
            };
            match stream_request(&head, peer) {
                Some(request) => {
                    // The request owns copies: the head's buffer goes now,
                    // not when the stream ends.
                    drop(head);
                    serve_stream(socket, router, request).await
                }
                // After shutdown hyper takes no more connections: drop it.
                None => tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = hand_over.send((Rewind::new(socket, head), peer)) => {}
                },
            }
        });
    }
}

/// Reads until the end of the request head (or `MAX_HEAD` bytes, or the
/// end of the connection); an error if the client closed first.
async fn read_head(socket: &mut Socket) -> io::Result<Bytes> {
    let mut head = BytesMut::with_capacity(1024);
    loop {
        // A head ends at a blank line: CRLF CRLF, or bare LFs (which
        // hyper and httparse accept too, so they get the same answer).
        let ended = memchr::memmem::find(&head, b"\n\r\n").is_some()
            || memchr::memmem::find(&head, b"\n\n").is_some();
        if head.len() >= MAX_HEAD || ended {
            return Ok(head.freeze());
        }
        if socket.read_buf(&mut head).await? == 0 {
            if head.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(head.freeze());
        }
    }
}

/// The request, if `head` is exactly one plain HTTP/1.1 `GET` of a stream
/// route: no body, no upgrade, nothing after the head, headers that parse.
fn stream_request(head: &[u8], peer: SocketAddr) -> Option<Request<Body>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(length) = parsed.parse(head).ok()? else {
        return None;
    };
    let path = parsed.path?;
    let is_stream = crate::routes::is_stream_path(path);
    if length != head.len()
        || parsed.method != Some("GET")
        || parsed.version != Some(1)
        || !is_stream
    {
        return None;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.version_mut() = Version::HTTP_11;
    *request.uri_mut() = path.parse::<Uri>().ok()?;
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        if name == header::UPGRADE
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || (name == header::CONTENT_LENGTH && field.value != b"0")
        {
            return None;
        }
        let value = HeaderValue::from_bytes(field.value).ok()?;
        request.headers_mut().append(name, value);
    }
    request.extensions_mut().insert(ConnectInfo(peer));
    Some(request)
}

/// Answers a stream request: a stream's body goes to the socket as it is
/// produced; any other answer (an error) is sent whole. Either way the
/// connection closes after it.
///
/// What lives as long as the stream is kept small: the router's future is
/// boxed and gone once it answers, and the response's headers are dropped
/// once sent.
async fn serve_stream(mut socket: Socket, router: Router, request: Request<Body>) {
    let Ok(response) = Box::pin(router.oneshot(request)).await;
    let streaming = response.status().is_success()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    let (parts, mut body) = response.into_parts();
    if !streaming {
        let Ok(collected) = body.collect().await else {
            return;
        };
        let bytes = collected.to_bytes();
        let head = response_head(&parts, Some(bytes.len()));
        let _ = socket.write_all(&head).await;
        let _ = socket.write_all(&bytes).await;
        let _ = socket.shutdown().await;
        return;
    }
    let head = response_head(&parts, None);
    drop(parts);
    if socket.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && socket.write_all(&data).await.is_err()
                    {
                        return;
                    }
                }
                // The stream ended (or failed): close, and the client resumes.
                Some(Err(_)) | None => break,
            },
            _ = hung_up(&socket) => return,
        }
    }
    let _ = socket.shutdown().await;
}

/// The status line and headers of a response the front sends itself.
fn response_head(parts: &axum::http::response::Parts, length: Option<usize>) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let status = parts.status;
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(length) = length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n");
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// Resolves when the client has closed its side (or the socket failed), so
/// a stream ends at once rather than at its next write. Whatever else a
/// client sends on a stream's connection is ignored.
async fn hung_up(socket: &Socket) {
    let tcp = socket.get_ref();
    let mut probe = [0u8; 64];
    loop {
        if tcp.readable().await.is_err() {
            return;
        }
        match tcp.try_read(&mut probe) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// A connection with bytes already read from it put back in front, so hyper
/// reads the request from its first byte.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    fn new(inner: T, prefix: Bytes) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..take]);
            self.prefix.advance(take);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn only_plain_stream_gets_are_served_here() {
        let stream = b"GET /api/v1/realtime/posts?query=a%3D1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
        let request = stream_request(stream, peer()).expect("a stream request");
        assert_eq!(request.uri(), "/api/v1/realtime/posts?query=a%3D1");
        assert_eq!(request.headers()["accept"], "text/event-stream");
        assert!(
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some()
        );
        assert!(stream_request(b"GET /api/v1/realtime HTTP/1.1\r\n\r\n", peer()).is_some());
        for other in [
            // Other routes, methods, versions.
            &b"GET /api/v1/collections HTTP/1.1\r\n\r\n"[..],
            b"GET /api/v1/realtimes HTTP/1.1\r\n\r\n",
            b"POST /api/v1/realtime/tickets HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"GET /api/v1/realtime HTTP/1.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // A body, an upgrade, a pipelined request, a partial head.
            b"GET /api/v1/realtime HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            b"GET /api/v1/realtime HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /api/v1/realtime HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /api/v1/realtime HTTP/1.1\r\nHost: x\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                stream_request(other, peer()).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[tokio::test]
    async fn rewind_replays_the_bytes_read_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut rewound = Rewind::new(server, Bytes::from_static(b"hello"));
        let mut all = String::new();
        rewound.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
