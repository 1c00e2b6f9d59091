//! One HTTP/1.1 connection: read a request head, feed its body to the handler as it reads
//! it, write the response, repeat. While a handler waits (a long-polling `/sync`), the
//! connection holds no buffer at all — only a watch for the client hanging up.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo, response::Response};
use bytes::{Buf, BytesMut};
use http::Method;
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    sync::{oneshot, watch},
    time::{Instant, sleep_until},
};
use tower::ServiceExt;

use super::{
    body::{BodyError, BodySender, Framing, RequestBody, Step},
    h2c,
    request::{self, Head, Refusal},
    response::{self, Asked},
    stall::{BODY_STALL, StallLimit},
};

/// How long a kept-alive connection may sit between requests (longer than the 90 s clients
/// such as reqwest keep idle connections, so that they close first).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a request head may take to arrive once it has begun.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How much is read at once while a head arrives.
const HEAD_READ: usize = 4096;
/// How much is read at once while a body arrives.
const BODY_READ: usize = 16 * 1024;
/// After refusing or cutting short a request, how long and how much of what the client still
/// sends is read and dropped, so that closing does not reset the connection before the
/// client has read the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// What a client's first bytes turned out to be.
#[allow(
    clippy::large_enum_variant,
    reason = "lives only until the request is built"
)]
enum Incoming {
    Http1(Head),
    /// The HTTP/2 connection preface (prior knowledge).
    H2,
}

/// What happened on the reading side while the handler ran.
enum Reading {
    /// The whole body was handed over.
    BodyDone,
    /// The handler dropped the body before its end, or it broke: no further request can be
    /// read from this connection.
    BodyStopped,
    /// The client sent the next request already; it waits in the buffer.
    Pipelined,
    /// The client hung up.
    Gone,
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read and not yet used; empty (and unallocated) between requests.
    buf: BytesMut,
}

/// Serves HTTP/1.1 requests on `stream` until the client leaves or the server stops.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connection = Connection {
        stream,
        peer,
        buf: BytesMut::new(),
    };
    let mut first = true;
    loop {
        let head = match connection.read_head(&mut stop, first).await {
            Ok(Some(Incoming::Http1(head))) => head,
            Ok(Some(Incoming::H2)) => {
                let read = connection.buf.freeze();
                // Boxed: HTTP/2 is rare here, and its state would make every connection larger.
                return Box::pin(h2c::serve(connection.stream, read, peer, app, stop)).await;
            }
            Ok(None) => return,
            Err(refusal) => {
                if response::refuse(&mut StallLimit::new(&mut connection.stream), &refusal)
                    .await
                    .is_ok()
                {
                    connection.linger().await;
                }
                return;
            }
        };
        first = false;
        match connection.exchange(&app, head, &stop).await {
            Ok(true) => {}
            Ok(false) => {
                connection.linger().await;
                return;
            }
            Err(_) => return,
        }
        connection.release_buffer();
    }
}

impl Connection {
    /// Reads the next request head; none when the client left, stayed idle too long, or the
    /// server is stopping between requests.
    async fn read_head(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        first: bool,
    ) -> Result<Option<Incoming>, Refusal> {
        let idle_until = Instant::now() + IDLE_TIMEOUT;
        let mut head_until = None;
        loop {
            // Blank lines before a request are allowed (and some clients send one after a body).
            while self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
            }
            if !self.buf.is_empty() {
                if first
                    && h2c::PREFACE.starts_with(&self.buf[..self.buf.len().min(h2c::PREFACE.len())])
                {
                    if self.buf.len() >= h2c::PREFACE.len() {
                        return Ok(Some(Incoming::H2));
                    }
                } else if let Some(head) = request::parse(&mut self.buf)? {
                    return Ok(Some(Incoming::Http1(head)));
                }
                head_until.get_or_insert_with(|| Instant::now() + HEAD_TIMEOUT);
            } else if *stop.borrow() {
                return Ok(None);
            }
            let idle = self.buf.is_empty();
            tokio::select! {
                ready = self.stream.readable() => if ready.is_err() {
                    return Ok(None);
                },
                () = sleep_until(head_until.unwrap_or(idle_until)) => {
                    return if idle { Ok(None) } else { Err(Refusal::TIMEOUT) };
                }
                _ = stop.changed(), if idle => return Ok(None),
            }
            match self.try_read(HEAD_READ) {
                Ok(Some(0)) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// Runs one request through `app` and writes its response; true when the connection can
    /// carry another request.
    async fn exchange(
        &mut self,
        app: &Router,
        head: Head,
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<bool> {
        let Head {
            request,
            mut framing,
            keep_alive,
            expect_continue,
        } = head;
        let mut asked = Asked {
            version: request.version(),
            head_only: request.method() == Method::HEAD,
            keep_alive,
        };
        let (mut request, feeder) = if framing.is_done() {
            (request.map(|()| Body::empty()), None)
        } else {
            let (feeder, wanted, body) = RequestBody::channel(&framing, expect_continue);
            (request.map(|()| Body::new(body)), Some((feeder, wanted)))
        };
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.release_buffer();
        let call = app.clone().oneshot(request);
        let Some(response) = self.wait(call, &mut framing, feeder).await else {
            return Ok(false);
        };
        // Answered without reading the whole body (a 401, say): what has already arrived of
        // it is skipped, so that the connection can carry the next request.
        while let Ok(Step::Data(_)) = framing.decode(&mut self.buf) {}
        asked.keep_alive = asked.keep_alive && framing.is_done() && !*stop.borrow();
        response::write(&mut StallLimit::new(&mut self.stream), response, asked).await
    }

    /// Waits for the handler while feeding it the body, then watching for the client leaving
    /// (which drops the handler); none when the client left.
    async fn wait<F>(
        &mut self,
        call: F,
        framing: &mut Framing,
        mut feeder: Option<(BodySender, Option<oneshot::Receiver<()>>)>,
    ) -> Option<Response>
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        let mut call = std::pin::pin!(call);
        let mut watching = true;
        loop {
            let reading = async {
                match &mut feeder {
                    Some((feeder, wanted)) => self.feed(framing, feeder, wanted).await,
                    None if watching => self.watch().await,
                    None => std::future::pending().await,
                }
            };
            let reading = tokio::select! {
                biased;
                response = &mut call => return Some(response.unwrap_or_else(|never| match never {})),
                reading = reading => reading,
            };
            match reading {
                Reading::BodyDone => {
                    feeder = None;
                    self.release_buffer();
                }
                Reading::BodyStopped => {
                    feeder = None;
                    watching = false;
                }
                Reading::Pipelined => watching = false,
                Reading::Gone => return None,
            }
        }
    }

    /// Hands the body to the handler piece by piece, as fast as it takes them; first, when
    /// the client waits for it, says `100 Continue` once the handler asks for the body.
    async fn feed(
        &mut self,
        framing: &mut Framing,
        feeder: &BodySender,
        wanted: &mut Option<oneshot::Receiver<()>>,
    ) -> Reading {
        if let Some(asked) = wanted.as_mut() {
            if asked.await.is_err() {
                // The handler dropped the body unread.
                return Reading::BodyStopped;
            }
            *wanted = None;
            if StallLimit::new(&mut self.stream)
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return Reading::Gone;
            }
        }
        loop {
            let failure = match framing.decode(&mut self.buf) {
                Ok(Step::Data(piece)) => {
                    if feeder.send(Ok(piece)).await.is_err() {
                        return Reading::BodyStopped;
                    }
                    continue;
                }
                Ok(Step::Done) => return Reading::BodyDone,
                Ok(Step::NeedMore) => {
                    match tokio::time::timeout(BODY_STALL, self.read(BODY_READ)).await {
                        Ok(Ok(0) | Err(_)) => BodyError::Incomplete,
                        Ok(Ok(_)) => continue,
                        Err(_) => BodyError::Stalled,
                    }
                }
                Err(error) => error,
            };
            let _ = feeder.send(Err(failure)).await;
            return Reading::BodyStopped;
        }
    }

    /// Waits for the client to hang up, holding no buffer meanwhile.
    async fn watch(&mut self) -> Reading {
        loop {
            if self.stream.readable().await.is_err() {
                return Reading::Gone;
            }
            let mut probe = [0; 512];
            match self.stream.try_read(&mut probe) {
                Ok(0) => return Reading::Gone,
                Ok(n) => {
                    self.buf.extend_from_slice(&probe[..n]);
                    return Reading::Pipelined;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Reading::Gone,
            }
        }
    }

    /// Gives the read buffer back when it holds nothing: a waiting request keeps none.
    fn release_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Reads what has arrived into the buffer, waiting for something to arrive.
    async fn read(&mut self, at_least: usize) -> std::io::Result<usize> {
        loop {
            self.stream.readable().await?;
            if let Some(n) = self.try_read(at_least)? {
                return Ok(n);
            }
        }
    }

    /// Reads what has arrived into the buffer without waiting; none when nothing had.
    fn try_read(&mut self, at_least: usize) -> std::io::Result<Option<usize>> {
        if self.buf.capacity() - self.buf.len() < at_least / 4 {
            self.buf.reserve(at_least);
        }
        match self.stream.try_read_buf(&mut self.buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Closes after the last answer: stops sending, then reads and drops what the client
    /// still sends for a short while, so that it reads the answer before the connection closes.
    async fn linger(mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let until = Instant::now() + LINGER;
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            tokio::select! {
                ready = self.stream.readable() => if ready.is_err() { return },
                () = sleep_until(until) => return,
            }
            let mut scratch = [0; 1024];
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => dropped += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiting request keeps this future (and the handler's own) per connection: it must
    /// stay small, whatever is added to the connection's states later (2.4 KiB in a debug
    /// build when written).
    #[tokio::test]
    async fn a_connection_costs_little_while_its_request_waits() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (_stop, stopped) = watch::channel(false);
        let connection = serve(stream, addr, Router::new(), stopped);
        let size = std::mem::size_of_val(&connection);
        println!("connection future: {size} bytes");
        assert!(size <= 3072, "a connection's future takes {size} bytes");
    }

    /// A connection to `serve` whose one route answers with the length of the body it read,
    /// or 400 with why it could not read it.
    async fn uploads() -> TcpStream {
        use axum::{body::Body, http::StatusCode, routing::post};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route(
            "/up",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(bytes) => (StatusCode::OK, bytes.len().to_string()),
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        );
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (stream, peer) = accepted.expect("accept");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            serve(stream, peer, app, stopped).await;
            drop(stop);
        });
        client.expect("connect")
    }

    async fn answer(client: &mut TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stops_arriving_fails() {
        use tokio::io::AsyncWriteExt;
        let mut client = uploads().await;
        let started = Instant::now();
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .expect("write");
        let answer = tokio::time::timeout(BODY_STALL * 10, answer(&mut client))
            .await
            .expect("the server gives up on the body");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("stopped arriving"), "{answer}");
        assert!(started.elapsed() >= BODY_STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_upload_that_keeps_arriving_is_read() {
        use tokio::io::AsyncWriteExt;
        let mut client = uploads().await;
        client
            .write_all(
                b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\n",
            )
            .await
            .expect("write");
        for _ in 0..5 {
            tokio::time::sleep(BODY_STALL / 4).await;
            client.write_all(b"x").await.expect("write");
        }
        let answer = answer(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n5"), "{answer}");
    }
}
