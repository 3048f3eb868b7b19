//! A send timeout for one HTTP connection: a client that stops reading is dropped.
//!
//! hyper waits for a writable socket for as long as it takes, so a client that requests a large
//! file and never reads held its connection, its slot and hyper's buffered chunks forever (17
//! addresses × 64 such connections took 830 MB). [`SendDeadline`] wraps the socket: once a write
//! has made no progress for the timeout (the kernel accepted no byte because the peer's window
//! stayed shut), the write fails with `TimedOut` and hyper closes the connection. Any accepted
//! byte restarts the clock, so a slow but reading client is never cut off; a client that drips
//! a byte now and then does not free the kernel's send queue enough to make the socket writable
//! (Linux waits for a third of it), so it is cut off too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Sleep, sleep};

pub struct SendDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write is blocked; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> SendDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> SendDeadline<S> {
        SendDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// What a write that returned `result` means under the deadline. Only a completed write
    /// is progress; a completed flush or shutdown leaves the clock as it is.
    fn judge<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
        is_write: bool,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            if is_write {
                self.stalled = None;
            }
            return result;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(timed_out(timeout)))
    }
}

/// The error of a send that made no progress for `timeout`; the server counts its kind.
pub fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client read nothing for {} s", timeout.as_secs()),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.judge(cx, result, true)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.judge(cx, result, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.judge(cx, result, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.judge(cx, result, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_that_stops_is_cut_off_and_a_slow_reading_one_is_not() {
        // A pipe with a 64 KiB buffer stands in for the socket.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut server = SendDeadline::new(server, Duration::from_millis(300));
        // The client reads 16 KiB every 100 ms, then stops: 1.6 s of reading in all, far
        // longer than the timeout, but the writer is never blocked that long at a time.
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 16 * 1024];
            for _ in 0..16 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                client.read_exact(&mut got).await.unwrap();
            }
            client
        });
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..16 {
            server.write_all(&chunk).await.expect("a reading client");
        }
        let _client = reader.await.unwrap();
        // Now nobody reads: the pipe fills and the write fails after the timeout.
        let err = loop {
            if let Err(e) = server.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
