//! Requests in flight on one connection, to close it once it has been idle for the header
//! timeout. hyper's header timeout does that for HTTP/1.1 between requests; nothing does for
//! HTTP/2, whose connections would otherwise stay open (and hold their buffers) for as long as
//! the client likes, and neither covers a connection that never starts a request.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

/// How busy a connection is: requests in flight, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    /// A connection that has just opened.
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity { in_flight: AtomicUsize::new(0), last: Mutex::new(Instant::now()) })
    }

    /// Counts a request as in flight from now until its response body is finished or
    /// dropped (see [`InFlight::track`]).
    pub(crate) fn start(self: &Arc<Activity>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Completes once no request has been in flight for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                // Busy: look again a timeout after the request in flight ends, at the latest.
                tokio::time::sleep(timeout).await;
            } else {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

/// One request in flight; the count goes down when this is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    /// Keeps the request in flight until `response` is finished or dropped.
    pub(crate) fn track(self, response: Body) -> Body {
        Body::new(Tracked { body: response, _in_flight: self })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
