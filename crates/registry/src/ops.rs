//! The operations side of the HTTP application: one middleware ([`observe`]) that counts every
//! request into the [`Metrics`]; the `/metrics` and `/health` endpoints; and where the web UI
//! is mounted.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::AppState;
use crate::config::{Config, OpsEndpointConfig, UiConfig};
use crate::metrics::{AuthOutcome, Metrics, Route};
use crate::notify::Notifier;
use crate::routes::Endpoint;

/// How long the health check waits for storage.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Metrics, notifications, and the settings of the UI, `/metrics` and `/health`.
#[derive(Debug, Default)]
pub struct Ops {
    /// Counters and histograms, rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Webhook queues, when endpoints are configured.
    pub notifier: Option<Arc<Notifier>>,
    /// Where the operational endpoints live.
    pub settings: OpsSettings,
    /// Set once a shutdown signal arrived: `/health` then answers 503.
    pub draining: crate::shutdown::Draining,
}

/// Which operational endpoints are served, where, and with which authentication.
#[derive(Debug, Clone)]
pub struct OpsSettings {
    /// The web UI.
    pub ui: UiConfig,
    /// `/metrics`.
    pub metrics: OpsEndpointConfig,
    /// `/health`.
    pub health: OpsEndpointConfig,
    /// `https` when the server speaks TLS: the scheme of the URLs it builds, unless a trusted
    /// proxy says otherwise.
    pub scheme: &'static str,
    /// The peers whose forwarded headers are believed (`[http] proxies`).
    pub proxies: Vec<crate::config::Cidr>,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings::from_config(&Config::default())
    }
}

impl OpsSettings {
    /// The settings in `config`.
    pub fn from_config(config: &Config) -> OpsSettings {
        let tls = config.http.tls.certificate.is_some() || config.http.tls.letsencrypt.is_some();
        OpsSettings {
            ui: config.ui.clone(),
            metrics: config.metrics.0.clone(),
            health: config.health.0.clone(),
            scheme: if tls { "https" } else { "http" },
            proxies: config.http.proxies.clone(),
        }
    }
}

/// The operational routes: those behind authentication (the UI; `/metrics` and `/health` when
/// configured so) and those open to anyone.
pub fn routes(state: &AppState) -> (Router<AppState>, Router<AppState>) {
    let settings = &state.ops.settings;
    let (mut protected, mut open) = (Router::new(), Router::new());
    if settings.ui.enabled {
        protected = protected.merge(crate::ui::router(state.registry.clone()));
        open = open.route("/", get(|| async { Redirect::to("/ui/") }));
    }
    for (endpoint, handler) in [
        (&settings.metrics, get(metrics) as axum::routing::MethodRouter<AppState>),
        (&settings.health, get(health)),
    ] {
        if !endpoint.enabled {
            continue;
        }
        if endpoint.auth {
            protected = protected.route(&endpoint.path, handler);
        } else {
            open = open.route(&endpoint.path, handler);
        }
    }
    (protected, open)
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<AppState>) -> Response {
    let counts = state.auth.as_ref().map(|a| a.counts());
    let mut text = state.ops.metrics.render(counts);
    if let Some((hits, misses)) = state.registry.manifest_cache_stats() {
        crate::metrics::render_manifest_cache(&mut text, hits, misses);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `GET /health`: 200 when storage answers a listing within five seconds, else 503; 503 at
/// once, saying `draining`, while the server drains before stopping ([`crate::shutdown`]).
async fn health(State(state): State<AppState>) -> Response {
    let (status, body) = if state.ops.draining.is_on() {
        let body = serde_json::json!({"status": "draining", "version": env!("CARGO_PKG_VERSION")});
        (StatusCode::SERVICE_UNAVAILABLE, body)
    } else {
        storage_health(&state).await
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether storage answers a listing within [`HEALTH_TIMEOUT`]: the status and body of
/// `/health`.
async fn storage_health(state: &AppState) -> (StatusCode, serde_json::Value) {
    let started = Instant::now();
    let repositories = crate::layout::repositories();
    let check = state.registry.storage().list(&repositories);
    let (status, storage) = match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
        Ok(Ok(_)) => (StatusCode::OK, serde_json::json!({"status": "ok"})),
        Ok(Err(e)) => {
            // The details (bucket, key, endpoint, the AWS message with its account and role)
            // go to the log: `/health` answers anyone, by default without credentials.
            tracing::warn!(error = %e, "health check: storage failed");
            let error = "storage failed to answer a listing (the server log has the details)";
            (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "error", "error": error}))
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "error", "error": format!("no answer within {HEALTH_TIMEOUT:?}")}),
        ),
    };
    let mut storage = storage;
    storage["milliseconds"] = serde_json::json!(started.elapsed().as_secs_f64() * 1e3);
    let overall = if status == StatusCode::OK { "ok" } else { "unavailable" };
    (status, serde_json::json!({"status": overall, "storage": storage, "version": env!("CARGO_PKG_VERSION")}))
}

/// Counts every request, its bytes and its authentication outcome into the metrics. (What the
/// registry did is published by the registry itself: [`crate::registry::events`].)
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path();
    let route = if path == "/v2" || path.starts_with("/v2/") {
        match Endpoint::of(&mut request).as_ref() {
            Ok(endpoint) => endpoint.route(),
            Err(_) => Route::V2Unknown,
        }
    } else {
        state.ops.settings.route_of(path)
    };
    let method = request.method().clone();
    let had_credentials = request.headers().contains_key(header::AUTHORIZATION);

    let metrics = state.ops.metrics.clone();
    let request = request
        .map(|body| Body::new(Counted { inner: body, metrics: metrics.clone(), route, incoming: true }));
    let mut response = next.run(request).await;
    let status = response.status();
    if route == Route::Ui && status == StatusCode::UNAUTHORIZED {
        response = crate::ui::unauthorized(response);
    }
    metrics.request(route, &method, status, started.elapsed());
    match status {
        StatusCode::UNAUTHORIZED if had_credentials => metrics.auth(AuthOutcome::Invalid),
        StatusCode::UNAUTHORIZED => metrics.auth(AuthOutcome::Challenge),
        StatusCode::TOO_MANY_REQUESTS => metrics.auth(AuthOutcome::Throttled),
        _ => {}
    }
    response.map(|body| Body::new(Counted { inner: body, metrics, route, incoming: false }))
}

impl OpsSettings {
    /// The metrics route of a path outside `/v2`.
    fn route_of(&self, path: &str) -> Route {
        if path == self.metrics.path {
            Route::Metrics
        } else if path == self.health.path {
            Route::Health
        } else if path == "/" || path == "/ui" || path.starts_with("/ui/") {
            Route::Ui
        } else {
            Route::Other
        }
    }
}

/// A body that counts the bytes going through it, keeping the inner body's size hint (so
/// `Content-Length` stays exact).
struct Counted {
    inner: Body,
    metrics: Arc<Metrics>,
    route: Route,
    incoming: bool,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            if self.incoming {
                self.metrics.bytes_in(self.route, n);
            } else {
                self.metrics.bytes_out(self.route, n);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_outside_v2() {
        let s = OpsSettings::default();
        assert_eq!(s.route_of("/metrics"), Route::Metrics);
        assert_eq!(s.route_of("/health"), Route::Health);
        assert_eq!(s.route_of("/ui/repositories/x"), Route::Ui);
        assert_eq!(s.route_of("/favicon.ico"), Route::Other);
    }
}
