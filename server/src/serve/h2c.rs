//! HTTP/2 with prior knowledge (h2c): once a connection opens with the HTTP/2 preface, it is
//! handed to hyper's HTTP/2 server, replaying the bytes already read. Its writes and request
//! bodies have the HTTP/1 limits on stalling, and at shutdown its open streams get as long
//! again to finish: a client that stops reading or sending, or never opens its flow-control
//! window, cannot hold the server. A connection is pinged after a minute without traffic
//! and closed when the ping goes unanswered, so that peers which vanished (a phone gone off
//! the network) do not keep their sockets for ever.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use bytes::Bytes;
use futures_util::FutureExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};
use tower::ServiceExt;

use super::stall::{BodyStallLimit, StallLimit, WRITE_STALL};

/// How long a connection may go without traffic before it is pinged.
const PING_AFTER: Duration = Duration::from_secs(60);
/// How long the answer to that ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The first bytes of every HTTP/2 connection.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves HTTP/2 on `stream`, whose first bytes (`read`) were already taken off it.
pub async fn serve<S>(
    stream: S,
    read: Bytes,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(|body| axum::body::Body::new(BodyStallLimit::new(body)));
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_AFTER)
        .keep_alive_timeout(PING_TIMEOUT)
        .serve_connection(
            TokioIo::new(Rewind {
                read,
                stream: StallLimit::new(stream),
            }),
            TowerToHyperService::new(service),
        );
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stop.wait_for(|stop| *stop).map(drop) => {}
    }
    // Stopping: refuse new streams, finish the open ones — in a bounded time, since a stream
    // may wait for a window the client never opens.
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(WRITE_STALL, connection).await;
}

/// A stream that first gives back bytes already read from it.
struct Rewind<S> {
    read: Bytes,
    stream: StallLimit<S>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        let replay = self.read.split_to(n);
        buf.put_slice(&replay);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use tokio::{
        io::{AsyncWriteExt, DuplexStream, duplex},
        time::{Instant, timeout},
    };

    use super::*;
    use crate::serve::stall::BODY_STALL;

    /// What the pipe between client and server holds: more than a stream's first window
    /// (64 KiB), so that only a client that stops reading fills it.
    const PIPE: usize = 1024 * 1024;
    /// More than the pipe holds.
    const LARGE: usize = 16 * PIPE;

    /// A client's end, the server's end and the client's address. An in-memory pipe, not a
    /// socket: whether it has room or data is known to the runtime at once, so paused time
    /// cannot run ahead of a write or read that already happened.
    fn socket_pair() -> (DuplexStream, DuplexStream, SocketAddr) {
        let (client, server) = duplex(PIPE);
        (client, server, SocketAddr::from(([127, 0, 0, 1], 40_000)))
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// A client's first bytes: the preface, its settings (a window of `window` bytes for
    /// each stream and for the connection) and `GET /big` on stream 1.
    fn opening(window: Option<u32>) -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        let mut settings = Vec::new();
        if let Some(window) = window {
            settings.extend_from_slice(&4u16.to_be_bytes());
            settings.extend_from_slice(&window.to_be_bytes());
        }
        bytes.extend(frame(0x4, 0, 0, &settings));
        if let Some(window) = window {
            bytes.extend(frame(0x8, 0, 0, &(window - 65_535).to_be_bytes()));
        }
        // HPACK: GET, http, then :path and :authority as literals with indexed names.
        let mut headers = vec![0x82, 0x86, 0x04, 4];
        headers.extend_from_slice(b"/big");
        headers.extend_from_slice(&[0x01, 9]);
        headers.extend_from_slice(b"localhost");
        bytes.extend(frame(0x1, 0x1 | 0x4, 1, &headers));
        bytes
    }

    /// An HTTP/2 connection being served, and the client's end of it.
    async fn connection(
        window: Option<u32>,
    ) -> (
        DuplexStream,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let (mut client, server, peer) = socket_pair();
        let app = Router::new().route("/big", get(|| async { vec![b'x'; LARGE] }));
        let (stop, stopped) = watch::channel(false);
        let served = tokio::spawn(serve(server, Bytes::new(), peer, app, stopped));
        client
            .write_all(&opening(window))
            .await
            .expect("client writes");
        (client, stop, served)
    }

    /// Reads frames, answering pings and settings as a live client does, until an answer's
    /// head arrives: its HPACK block (none when the connection ended first).
    async fn next_answer(client: &mut DuplexStream) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut head = [0; 9];
        loop {
            client.read_exact(&mut head).await.ok()?;
            let length =
                usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0; length];
            client.read_exact(&mut payload).await.ok()?;
            let answer = match (head[3], head[4] & 0x1) {
                (0x1, _) => return Some(payload),
                (0x6, 0) => frame(0x6, 0x1, 0, &payload),
                (0x4, 0) => frame(0x4, 0x1, 0, &[]),
                _ => continue,
            };
            client.write_all(&answer).await.ok()?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stops_arriving_fails() {
        use axum::{http::StatusCode, routing::post};
        let (mut client, server, peer) = socket_pair();
        let app = Router::new().route(
            "/up",
            post(|body: axum::body::Body| async move {
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(bytes) => (StatusCode::OK, bytes.len().to_string()),
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        );
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(serve(server, Bytes::new(), peer, app, stopped));
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(0x4, 0, 0, &[]));
        // POST /up: its head, then three bytes of a body that never ends.
        let mut headers = vec![0x83, 0x86, 0x04, 3];
        headers.extend_from_slice(b"/up");
        headers.extend_from_slice(&[0x01, 9]);
        headers.extend_from_slice(b"localhost");
        opening.extend(frame(0x1, 0x4, 1, &headers));
        opening.extend(frame(0x0, 0, 1, b"abc"));
        client.write_all(&opening).await.expect("client writes");
        let started = Instant::now();
        let head = timeout(BODY_STALL * 10, next_answer(&mut client))
            .await
            .expect("the server gives up on the body")
            .expect("an answer");
        // HPACK's static table entry 12 is `:status: 400`.
        assert_eq!(head.first(), Some(&0x8c), "{head:?}");
        assert!(started.elapsed() >= BODY_STALL);
    }

    /// A client that says its preface and settings and then nothing, answering pings (and
    /// acknowledging settings) only when `alive`: its socket (a task holds it when alive)
    /// and the connection's task.
    async fn silent_client(alive: bool) -> (Option<DuplexStream>, tokio::task::JoinHandle<()>) {
        let (mut client, server, peer) = socket_pair();
        let (stop, stopped) = watch::channel(false);
        let served = tokio::spawn(async move {
            serve(server, Bytes::new(), peer, Router::new(), stopped).await;
            drop(stop);
        });
        let mut opening = PREFACE.to_vec();
        opening.extend(frame(0x4, 0, 0, &[]));
        client.write_all(&opening).await.expect("client writes");
        if !alive {
            return (Some(client), served);
        }
        // No request, so no answer: this answers pings until the connection ends.
        tokio::spawn(async move { next_answer(&mut client).await });
        (None, served)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_vanished_is_found_out() {
        let (_client, served) = silent_client(false).await;
        let started = Instant::now();
        timeout(PING_AFTER * 10, served)
            .await
            .expect("the unanswered ping closes the connection")
            .expect("served");
        assert!(started.elapsed() >= PING_AFTER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_peer_that_answers_pings_stays() {
        let (_client, served) = silent_client(true).await;
        tokio::time::sleep(PING_AFTER * 10).await;
        assert!(!served.is_finished(), "an idle, live connection stays open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_off() {
        // The client opens every window and then reads nothing: the writes fill the socket.
        let (_client, _stop, served) = connection(Some(i32::MAX as u32)).await;
        let started = Instant::now();
        timeout(WRITE_STALL * 10, served)
            .await
            .expect("the connection ends once the writes stall for the limit")
            .expect("served");
        assert!(started.elapsed() >= WRITE_STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_for_a_window_does_not_hold_shutdown() {
        // The default 64 KiB window, never opened further: the answer waits for ever.
        let (_client, stop, served) = connection(None).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!served.is_finished(), "the stream waits for its window");
        stop.send_replace(true);
        let started = Instant::now();
        timeout(WRITE_STALL * 10, served)
            .await
            .expect("shutdown ends the connection in bounded time")
            .expect("served");
        assert!(started.elapsed() <= WRITE_STALL + Duration::from_secs(1));
    }
}
