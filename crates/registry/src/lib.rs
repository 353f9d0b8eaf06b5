//! An OCI distribution-spec v1.1 container registry server.
//!
//! A map of the crate:
//! - [`oci`]: validated OCI types (digests, names, tags, references, manifests).
//! - [`storage`]: the backend trait and the filesystem backend.
//! - [`layout`]: where blobs, links and uploads live, in CNCF distribution's layout.
//! - [`registry`]: the OCI logic over storage (uploads, manifests, tags, catalog, referrers).
//! - [`routes`]: HTTP: a request path parsed into an [`routes::Endpoint`], then a handler.
//! - [`auth`]: htpasswd users with a verification cache and failed-attempt throttling.
//! - [`error`]: the spec's error codes and statuses.
//! - [`config`]: the TOML file and `REGISTRY_*` variables.
//! - [`server`]: binding, background tasks and graceful shutdown; [`memory`] gives freed heap
//!   memory back once the server goes quiet.
//! - [`tls`]: HTTPS with rustls: certificate files (reloaded) or ACME (HTTP-01, TLS-ALPN-01).
//! - [`ops`]: the request-observing middleware, `/metrics` and `/health`; with [`metrics`],
//!   [`notify`] (webhooks in distribution's envelope), [`ui`] (the read-only web UI) and
//!   [`gc`] (garbage collection that is safe while pushes continue).

#![deny(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod gc;
pub mod layout;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod ops;
pub mod registry;
pub mod routes;
pub mod server;
pub mod storage;
pub mod tls;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use config::Config;
pub use registry::Registry;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The registry logic and its storage.
    pub registry: Arc<Registry>,
    /// htpasswd users, when authentication is on.
    pub auth: Option<Arc<auth::Htpasswd>>,
    /// Metrics, notifications and the settings of the UI, `/metrics` and `/health`.
    pub ops: Arc<ops::Ops>,
}

impl AppState {
    /// State with default operations settings (UI, `/metrics`, `/health` on; no webhooks).
    pub fn new(registry: Arc<Registry>, auth: Option<Arc<auth::Htpasswd>>) -> AppState {
        AppState { registry, auth, ops: Arc::new(ops::Ops::default()) }
    }
}

/// The registry's HTTP application: every `/v2` route and the web UI behind authentication,
/// `/metrics` and `/health` as configured, every request counted and turned into notification
/// events ([`ops::observe`]), plus the `Docker-Distribution-API-Version` header and a log line
/// per request.
pub fn app(state: AppState) -> Router {
    let (protected, open) = ops::routes(&state);
    Router::new()
        .route("/v2", axum::routing::any(routes::dispatch))
        .route("/v2/", axum::routing::any(routes::dispatch))
        .route("/v2/{*path}", axum::routing::any(routes::dispatch))
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .merge(open)
        .layer(middleware::from_fn_with_state(state.clone(), ops::observe))
        .layer(middleware::from_fn(api_version_and_log))
        .with_state(state)
}

/// Rejects requests without valid credentials when authentication is on.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(auth) = &state.auth {
        let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        match auth.check(authorization, client).await {
            Ok(()) => {}
            Err(error::Error::Unauthorized { realm, rejected, .. }) => {
                let access = routes::Endpoint::parse(request.uri().path())
                    .ok()
                    .map(|endpoint| endpoint.access(request.method()))
                    .into_iter()
                    .collect();
                return error::Error::Unauthorized { realm, rejected, access }.into_response();
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(request).await
}

/// Adds the API version header to every response and logs each request.
async fn api_version_and_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}
