//! Limits on how long a client may stall: a response it does not take for a minute fails, and
//! so does a request body that stops arriving for a minute, so that such a client frees its
//! task, its buffers, its handler and, at shutdown, the server (which waits for every
//! connection). HTTP/1 answers wrap the socket for their writes, and HTTP/1 bodies are timed
//! where they are read; an HTTP/2 connection keeps its socket wrapped for its life, and each
//! of its request bodies in [`BodyStallLimit`].

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Sleep, sleep},
};

use super::body::BodyError;

/// How long a write may wait for the client to take anything (nginx's `send_timeout`).
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// How long a request body may stop arriving before it fails (nginx's `client_body_timeout`).
pub const BODY_STALL: Duration = Duration::from_secs(60);

/// A request body that fails with [`BodyError::Stalled`] once nothing of it has arrived for
/// [`BODY_STALL`] while the handler waits for it.
pub struct BodyStallLimit<B> {
    inner: B,
    /// Runs only while the handler waits for the next piece.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<B> BodyStallLimit<B> {
    /// Wraps a request's body.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            stalled: None,
        }
    }
}

impl<B> http_body::Body for BodyStallLimit<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stalled = None;
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let timer = this
                    .stalled
                    .get_or_insert_with(|| Box::pin(sleep(BODY_STALL)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Writes to `io`, failing with `TimedOut` once a write has made no progress for
/// [`WRITE_STALL`]; the clock restarts whenever the client takes some bytes.
pub struct StallLimit<W> {
    io: W,
    /// Runs only while a write waits for room (a timer costs nothing on the usual path).
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<W> StallLimit<W> {
    /// Wraps `io` (a `&mut` socket for the writes of one answer, or a whole connection's).
    pub fn new(io: W) -> Self {
        Self { io, stalled: None }
    }

    /// A write's outcome: done restarts the clock; pending starts it, or says time is up.
    fn settle<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(sleep(WRITE_STALL)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reads pass through: only writes wait on the client.
impl<W: AsyncRead + Unpin> AsyncRead for StallLimit<W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallLimit<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.settle(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.settle(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.settle(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.settle(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt, duplex},
        time::Instant,
    };

    use super::*;

    /// An in-memory pipe holding this much: unlike a socket, whether it has room is known to
    /// the runtime at once, so paused time cannot run ahead of a read that made room.
    const PIPE: usize = 64 * 1024;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_fails_the_write_after_the_limit() {
        let (_client, mut server) = duplex(PIPE);
        let started = Instant::now();
        let written = StallLimit::new(&mut server)
            .write_all(&vec![b'x'; 4 * PIPE])
            .await;
        let error = written.expect_err("nobody reads: the write must give up");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= WRITE_STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_a_stalled_one() {
        let (mut client, mut server) = duplex(PIPE);
        let reader = tokio::spawn(async move {
            let mut scratch = vec![0; PIPE];
            let mut total = 0;
            loop {
                // Slowly, but never a whole limit without reading.
                tokio::time::sleep(WRITE_STALL * 9 / 10).await;
                match client.read(&mut scratch).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let size = 8 * PIPE;
        StallLimit::new(&mut server)
            .write_all(&vec![b'x'; size])
            .await
            .expect("a reader that keeps reading gets the whole answer");
        drop(server);
        assert_eq!(reader.await.expect("reader"), size);
    }
}
