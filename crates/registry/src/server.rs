//! Running the server: build the state from a [`Config`], bind, serve until a shutdown signal,
//! then let in-flight requests finish. Every connection, plain or TLS, is served by
//! [`serve_connection`], which bounds what a slow or silent client can hold: the time to send
//! request headers and the pauses within a request body.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
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

use crate::auth::{self, Htpasswd, HtpasswdError};
use crate::config::{Config, HttpConfig};
use crate::storage::{FsStorage, S3Storage, Storage};
use crate::{AppState, Registry, app};
use activity::Activity;

mod activity;
mod drain;
mod progress;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The htpasswd file could not be loaded.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// HTTPS could not be set up (settings, certificate files, ACME cache, port 80).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Builds the shared state from `config`: storage (counted into the metrics), users, and the
/// notification queues (started here, so this needs a Tokio runtime).
pub async fn state(config: &Config) -> Result<AppState, ServeError> {
    let storage: Arc<dyn Storage> = match &config.storage.s3 {
        Some(s3) => Arc::new(S3Storage::new(s3).await),
        None => Arc::new(FsStorage::new(&config.storage.filesystem.rootdirectory)),
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let storage: Arc<dyn Storage> =
        Arc::new(crate::metrics::InstrumentedStorage::new(storage, metrics.clone()));
    let auth = match &config.auth.htpasswd {
        Some(h) => Some(Arc::new(Htpasswd::load(&h.path, &h.realm)?)),
        None => None,
    };
    let notifier = crate::notify::Notifier::start(
        &config.notifications,
        storage.clone(),
        config.http.addr.clone(),
        metrics.clone(),
    );
    let ops = crate::ops::Ops { metrics, notifier, settings: crate::ops::OpsSettings::from_config(config) };
    let registry = Registry::new(storage).with_max_blob_size(config.storage.maxblobsize);
    Ok(AppState { registry: Arc::new(registry), auth, ops: Arc::new(ops) })
}

/// Serves the registry described by `config` until `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = state(&config).await?;
    let ops = state.ops.clone();
    crate::gc::spawn_watch(state.registry.clone());
    crate::gc::spawn_tidy(state.registry.clone(), config.gc.uploadmaxage);
    crate::memory::spawn_idle_trim(ops.metrics.clone());
    if let Some(interval) = config.gc.interval {
        let options = crate::gc::GcOptions::from_config(&config.gc);
        crate::gc::spawn_scheduled(state.registry.clone(), options, interval, ops.metrics.clone());
    }
    let tls = crate::tls::TlsSettings::from_config(&config.http.tls)?;
    let limits = ConnLimits::from_config(&config.http);
    let listener = tokio::net::TcpListener::bind(&config.http.addr)
        .await
        .map_err(|source| ServeError::Bind { addr: config.http.addr.clone(), source })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    let root = match &config.storage.s3 {
        Some(s3) => format!("s3://{}/{}", s3.bucket, s3.rootdirectory.trim_matches('/')),
        None => config.storage.filesystem.rootdirectory.display().to_string(),
    };
    match &state.auth {
        Some(auth) => {
            tracing::info!(users = auth.user_count(), realm = auth.realm(), "htpasswd authentication on");
            let auth = Arc::clone(auth);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(auth::RELOAD_INTERVAL);
                loop {
                    tick.tick().await;
                    let auth = Arc::clone(&auth);
                    let _ = tokio::task::spawn_blocking(move || auth.reload_if_changed()).await;
                }
            });
        }
        None => tracing::warn!(
            "authentication is off: anyone who can reach {local} can push and pull (set auth.htpasswd or --htpasswd)"
        ),
    }
    if let Some(tls) = tls {
        tracing::info!(storage = %root, "serving the registry over HTTPS");
        crate::tls::serve(listener, app(state), tls, config.http.hsts, limits, shutdown).await?;
        if let Some(notifier) = &ops.notifier {
            notifier.flush().await;
        }
        tracing::info!("registry stopped");
        return Ok(());
    }
    tracing::info!(addr = %local, storage = %root, "registry listening on http://{local}");
    let app = app(state);
    accept_loop(listener, shutdown, move |tcp, remote, watcher| {
        serve_connection(tcp, remote, app.clone(), limits, watcher)
    })
    .await;
    // Events not yet delivered are in storage; a restart resumes them.
    if let Some(notifier) = &ops.notifier {
        notifier.flush().await;
    }
    tracing::info!("registry stopped");
    Ok(())
}

/// How long a connection may keep the server waiting (from `[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// To send a request's headers, and between requests; `None` waits forever.
    pub header_timeout: Option<Duration>,
    /// The longest pause within a request body; `None` waits forever.
    pub body_timeout: Option<Duration>,
}

impl ConnLimits {
    /// The limits configured in `[http]`.
    pub fn from_config(http: &HttpConfig) -> ConnLimits {
        ConnLimits { header_timeout: http.headertimeout, body_timeout: http.bodytimeout }
    }
}

/// Accepts connections on `listener` until `shutdown` completes, running `handle` for each on
/// its own task; then waits for the connections' in-flight requests.
pub(crate) async fn accept_loop<F>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
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
    graceful.shutdown().await;
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
pub(crate) async fn serve_connection<I>(
    io: I,
    remote: SocketAddr,
    app: Router,
    limits: ConnLimits,
    watcher: Watcher,
) where
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

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
