//! Early answers on HTTP/1.1. A handler may answer before reading the request body: a 401
//! challenge to a `PUT` that carries a layer, a 416 to an out-of-order `PATCH`. hyper then
//! closes the connection (the unread body is in the way of the next request) without telling
//! the client, and a Go client (docker, containerd, podman) that reuses it for its next `PUT`
//! gets `EOF`, which Go does not retry. Like Go's own server, the rest of a small body is read
//! and thrown away so the connection lives on; when that cannot be done quickly, the answer says
//! `Connection: close`, so the client knows not to reuse the connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Response, header};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The most of an unread body read to keep its connection (Go's server reads 256 KiB).
pub(crate) const DRAIN_LIMIT: u64 = 256 << 10;
/// How long the rest of a body may take to arrive before the connection is given up instead.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(1);

/// A request body shared by the application (which may drop its handle unread) and the
/// connection (which reads what is left once the answer is ready).
#[derive(Debug, Clone)]
pub(crate) struct SharedBody(Arc<Mutex<Shared>>);

#[derive(Debug)]
struct Shared {
    body: Incoming,
    /// Whether anyone asked for the body: until then, hyper has not sent `100 Continue`.
    polled: bool,
    /// The body ended, or failed (which ends the connection anyway).
    finished: bool,
}

impl SharedBody {
    /// Shares `body`.
    pub(crate) fn new(body: Incoming) -> SharedBody {
        SharedBody(Arc::new(Mutex::new(Shared { body, polled: false, finished: false })))
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finished(&self) -> bool {
        let shared = self.lock();
        shared.finished || shared.body.is_end_stream()
    }

    /// Reads and discards the rest of the body; true when it ended within [`DRAIN_LIMIT`] bytes
    /// and [`DRAIN_TIME`].
    async fn drain(&mut self) -> bool {
        if self.size_hint().lower() > DRAIN_LIMIT {
            return false;
        }
        let mut left = DRAIN_LIMIT;
        let read = async {
            loop {
                match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await {
                    None => return true,
                    Some(Err(_)) => return false,
                    Some(Ok(frame)) => {
                        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                        match left.checked_sub(len) {
                            Some(rest) => left = rest,
                            None => return false,
                        }
                    }
                }
            }
        };
        tokio::time::timeout(DRAIN_TIME, read).await.unwrap_or(false)
    }
}

impl Body for SharedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut shared = self.lock();
        shared.polled = true;
        let polled = Pin::new(&mut shared.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            shared.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.finished()
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().body.size_hint()
    }
}

/// Makes an HTTP/1 connection reusable after `response` whatever the handler read of its
/// request's body: reads the rest of it if it is small and quick to come, and otherwise marks
/// the answer `Connection: close`. A client waiting for `100 Continue` has sent no body and is
/// told to close rather than invited to send one that would only be thrown away.
pub(crate) async fn settle<B>(mut body: SharedBody, request: &HeaderMap, response: &mut Response<B>) {
    if body.finished() {
        return;
    }
    let waits_for_continue =
        request.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
            && !body.lock().polled;
    if waits_for_continue || !body.drain().await {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}
