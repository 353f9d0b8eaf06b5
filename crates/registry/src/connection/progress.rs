//! A connection's transport whose writes must make progress. A client that requests a blob and
//! never reads it leaves hyper waiting on a full socket, holding the response's buffers, for
//! ever; here a write (or flush) that stays blocked for the body timeout fails with `TimedOut`,
//! which ends the connection and frees what it held.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `io` whose blocked writes time out after `timeout` (`None`: they wait for ever).
#[derive(Debug)]
pub(crate) struct WriteProgress<I> {
    io: I,
    timeout: Option<Duration>,
    /// Runs while a write is blocked; reset by every write that goes through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteProgress<I> {
    /// Wraps `io`.
    pub(crate) fn new(io: I, timeout: Option<Duration>) -> WriteProgress<I> {
        WriteProgress { io, timeout, stalled: None }
    }

    /// After a write attempt: clears the stall timer when it went through, else fails once
    /// the stall has lasted the timeout.
    fn progress<T>(&mut self, cx: &mut Context<'_>, attempt: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if attempt.is_ready() {
            self.stalled = None;
            return attempt;
        }
        let Some(timeout) = self.timeout else { return Poll::Pending };
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteProgress<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteProgress<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let attempt = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, attempt)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let attempt = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, attempt)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let attempt = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, attempt)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let attempt = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(cx, attempt)
    }
}
