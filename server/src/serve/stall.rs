//! A limit on how long a client may stop reading: a response it does not take for a minute
//! fails, so that a client which stopped reading frees its task, its buffers and, at
//! shutdown, the server (which waits for every connection). HTTP/1 answers wrap the socket
//! for their writes; an HTTP/2 connection keeps it wrapped for its life.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Sleep, sleep},
};

/// How long a write may wait for the client to take anything (nginx's `send_timeout`).
pub const WRITE_STALL: Duration = Duration::from_secs(60);

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

    /// The time's-up check for a write that is pending.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
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
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(done) => {
                this.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(done) => {
                this.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(done) => {
                this.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(done) => {
                this.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => this.pending(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        time::Instant,
    };

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    /// More than loopback's socket buffers hold, so that a client which reads nothing stalls
    /// the writer.
    const LARGE: usize = 64 * 1024 * 1024;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_fails_the_write_after_the_limit() {
        let (_client, mut server) = pair().await;
        let started = Instant::now();
        let written = StallLimit::new(&mut server)
            .write_all(&vec![b'x'; LARGE])
            .await;
        let error = written.expect_err("nobody reads: the write must give up");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= WRITE_STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_a_stalled_one() {
        let (mut client, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let mut scratch = vec![0; 1024 * 1024];
            let mut total = 0;
            loop {
                // Slowly, but never a whole limit without reading (a quarter of it: with time
                // paused, the writer may see the room a read made only at the next timer).
                tokio::time::sleep(WRITE_STALL / 4).await;
                match client.read(&mut scratch).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let size = 8 * 1024 * 1024;
        StallLimit::new(&mut server)
            .write_all(&vec![b'x'; size])
            .await
            .expect("a reader that keeps reading gets the whole answer");
        drop(server);
        assert_eq!(reader.await.expect("reader"), size);
    }
}
