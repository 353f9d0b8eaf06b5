//! Serving HTTP on a connection, plain or TLS: accepting with graceful shutdown, and bounding
//! what a slow, silent or careless client can hold (see [`serve`]). Used by [`crate::server`]
//! for plain HTTP and by [`crate::tls`] for HTTPS.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::config::HttpConfig;
use activity::Activity;

mod activity;
mod drain;
mod progress;

/// How long a connection may keep the server waiting (from `[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// To send a request's headers, and between requests; `None` waits forever.
    pub header_timeout: Option<Duration>,
    /// The longest pause within a request body; `None` waits forever.
    pub body_timeout: Option<Duration>,
    /// How long in-flight requests may hold up shutdown once the server stops accepting.
    pub shutdown_timeout: Duration,
}

impl ConnLimits {
    /// The limits configured in `[http]`.
    pub fn from_config(http: &HttpConfig) -> ConnLimits {
        ConnLimits {
            header_timeout: http.headertimeout,
            body_timeout: http.bodytimeout,
            shutdown_timeout: http.shutdowntimeout,
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes, running `handle` for each on
/// its own task; then closes the listener (new connections are refused, and a balancer tries
/// another server) and waits up to `limits.shutdown_timeout` for the connections' in-flight
/// requests. Meanwhile hyper answers them with `Connection: close` (HTTP/1.1) or sends `GOAWAY`
/// (HTTP/2), and closes idle connections, so clients open their next one elsewhere.
pub async fn accept_loop<F>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    limits: ConnLimits,
    handle: impl Fn(TcpStream, SocketAddr, Watcher) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small HTTP/2 frames and TLS records must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handle(tcp, remote, graceful.watcher()));
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            timeout = ?limits.shutdown_timeout,
            "requests still in flight when the shutdown timeout ran out: their connections are closed"
        );
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection from `remote` until it closes, watched by
/// `watcher` so shutdown waits for its requests.
///
/// What a slow, silent or careless client can hold is bounded here:
/// - hyper's header timeout covers each HTTP/1 request head and the wait for the next one; a
///   connection with no request in flight for the header timeout is closed here too, which
///   covers HTTP/2 (whose idle connections hyper keeps for ever) and a client that connects and
///   never starts a request ([`activity`]);
/// - a request body may not pause longer than the body timeout;
/// - a response the client stops reading fails once the socket has accepted nothing for the
///   body timeout ([`progress`]);
/// - an HTTP/1 answer given before the request body was read keeps the connection usable, or
///   says `Connection: close` ([`drain`]).
pub async fn serve<I>(io: I, remote: SocketAddr, app: Router, limits: ConnLimits, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let tracker = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let http1 = request.version() < axum::http::Version::HTTP_2;
        let (parts, body) = request.into_parts();
        let shared = drain::SharedBody::new(body);
        let body = match limits.body_timeout {
            Some(timeout) => Body::new(tower_http::timeout::TimeoutBody::new(timeout, shared.clone())),
            None => Body::new(shared.clone()),
        };
        let request_headers = http1.then(|| parts.headers.clone());
        let mut request = hyper::Request::from_parts(parts, body);
        request.extensions_mut().insert(ConnectInfo(remote));
        let app = app.clone();
        let tracker = tracker.clone();
        let in_flight = tracker.start();
        async move {
            let mut response = app.oneshot(request).await.unwrap_or_else(|e| match e {});
            if let Some(headers) = request_headers {
                drain::settle(shared, &headers, &mut response).await;
            }
            Ok::<_, Infallible>(response.map(|body| in_flight.track(body)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let io = TokioIo::new(progress::WriteProgress::new(io, limits.body_timeout));
    let conn = watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
    let idle = async {
        match limits.header_timeout {
            Some(timeout) => activity.idle_for(timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = conn => if let Err(e) = result {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        },
        () = idle => tracing::debug!(%remote, "connection idle for the header timeout: closed"),
    }
}
