//! Stopping without failing a client. On the first SIGTERM or SIGINT the server drains: for
//! `[http] draintime` every request is still served, but `/health` answers 503 so that load
//! balancers stop sending it new ones, and HTTP/1.1 answers say `Connection: close` so that
//! clients and balancers open their next connection elsewhere ([`close_while_draining`]). A
//! second signal ends the drain early. Then the server stops accepting and lets in-flight
//! requests finish, for at most `[http] shutdowntimeout` (see [`crate::connection::accept_loop`];
//! hyper answers with `Connection: close` or an HTTP/2 `GOAWAY` meanwhile).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::mpsc;

use crate::AppState;

/// Whether the server is draining; shared by the health check and every connection.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Whether the drain has begun.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// SIGINT and SIGTERM, one message each time either arrives. Must be called inside a Tokio
/// runtime.
pub fn signals() -> mpsc::UnboundedReceiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut interrupt, mut terminate) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot watch for SIGINT and SIGTERM: the server stops only when killed");
                // Keeping the sender: a closed channel would read as a request to stop.
                let _keep = tx;
                return std::future::pending().await;
            }
        };
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Completes when the server should stop accepting: after the first of `signals`, the drain
/// (`draintime`, or until the next signal). A closed channel counts as a signal.
pub async fn after_drain(mut signals: mpsc::UnboundedReceiver<()>, draining: Draining, draintime: Duration) {
    signals.recv().await;
    draining.begin();
    if !draintime.is_zero() {
        tracing::info!(
            ?draintime,
            "draining: /health answers 503 so load balancers stop sending requests; every request is \
             still served (a second signal ends the drain)"
        );
        tokio::select! {
            () = tokio::time::sleep(draintime) => {}
            _ = signals.recv() => tracing::info!("second signal: the drain ends now"),
        }
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
}

/// While draining, marks HTTP/1 answers `Connection: close`: the client's next request opens a
/// new connection, which a balancer sends to another server, instead of reusing one that this
/// server will close when it stops (a request sent on it just then would fail).
pub async fn close_while_draining(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let http1 = request.version() < Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 && state.ops.draining.is_on() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_lasts_its_time_or_until_a_second_signal() {
        let ms = Duration::from_millis;
        let (tx, rx) = mpsc::unbounded_channel();
        let draining = Draining::default();
        let stop = tokio::spawn(after_drain(rx, draining.clone(), ms(400)));
        tokio::time::sleep(ms(100)).await;
        assert!(!draining.is_on() && !stop.is_finished(), "no signal, no drain");
        tx.send(()).expect("send");
        tokio::time::sleep(ms(200)).await;
        assert!(draining.is_on() && !stop.is_finished(), "draining for 400 ms");
        tokio::time::sleep(ms(400)).await;
        assert!(stop.is_finished(), "stopped once the drain time is over");

        let (tx, rx) = mpsc::unbounded_channel();
        let stop = tokio::spawn(after_drain(rx, Draining::default(), Duration::from_secs(60)));
        tx.send(()).expect("send");
        tokio::time::sleep(ms(100)).await;
        assert!(!stop.is_finished());
        tx.send(()).expect("send");
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("a second signal ends the drain")
            .expect("the drain task");
    }
}
