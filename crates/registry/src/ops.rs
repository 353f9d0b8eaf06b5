//! The operations side of the HTTP application: one middleware ([`observe`]) that counts every
//! request into the [`Metrics`] and turns successful API requests into notification events;
//! the `/metrics` and `/health` endpoints; and where the web UI is mounted.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;

use crate::AppState;
use crate::config::{Config, OpsEndpointConfig, UiConfig};
use crate::metrics::{AuthOutcome, Metrics, Route};
use crate::notify::{Actor, Notifier, Occurrence, RequestInfo, Target};
use crate::oci::{Digest, Reference, RepoName};
use crate::routes::Endpoint;

/// Media type reported for blobs in events, as distribution does.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";
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
    /// `https` when the server speaks TLS, for the URLs in events.
    pub scheme: &'static str,
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
        }
    }
}

/// The operational routes: those behind authentication (the UI; `/metrics` and `/health` when
/// configured so) and those open to anyone.
pub fn routes(state: &AppState) -> (Router<AppState>, Router<AppState>) {
    let settings = &state.ops.settings;
    let (mut protected, mut open) = (Router::new(), Router::new());
    if settings.ui.enabled {
        protected = protected.merge(crate::ui::router());
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
    let cache = state.auth.as_ref().map(|a| a.cache_stats());
    let text = state.ops.metrics.render(cache);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `GET /health`: 200 when storage answers a listing within five seconds, else 503.
async fn health(State(state): State<AppState>) -> Response {
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
    let body =
        serde_json::json!({"status": overall, "storage": storage, "version": env!("CARGO_PKG_VERSION")});
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What an event needs from the request, taken before the handler consumes it.
struct Facts {
    info: RequestInfo,
    actor: Actor,
    content_type: Option<String>,
    content_length: Option<u64>,
    mount_from: Option<String>,
    mount: bool,
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The user of a `Basic` `Authorization` header (already verified by the auth middleware).
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = header_str(headers, header::AUTHORIZATION)?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(user, _)| user.to_string())
}

fn facts(request: &Request, authenticated: bool) -> Facts {
    let headers = request.headers();
    let query: Vec<(String, String)> =
        request.uri().query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let addr = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string());
    let request_id = header_str(headers, header::HeaderName::from_static("x-request-id"))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    Facts {
        info: RequestInfo {
            id: request_id,
            addr: addr.unwrap_or_default(),
            host: header_str(headers, header::HOST).unwrap_or_default().to_string(),
            method: request.method().to_string(),
            useragent: header_str(headers, header::USER_AGENT).unwrap_or_default().to_string(),
        },
        actor: Actor {
            name: if authenticated { basic_user(headers).unwrap_or_default() } else { String::new() },
        },
        content_type: header_str(headers, header::CONTENT_TYPE)
            .map(|ct| ct.split(';').next().unwrap_or(ct).trim().to_string())
            .filter(|ct| !ct.is_empty()),
        content_length: header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        mount_from: param("from"),
        mount: param("mount").is_some(),
    }
}

/// Counts every request, and turns successful API requests into notification events.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path();
    let endpoint = (path == "/v2" || path.starts_with("/v2/")).then(|| Endpoint::parse(path));
    let route = match &endpoint {
        Some(Ok(endpoint)) => Route::of(endpoint),
        Some(Err(_)) => Route::V2Unknown,
        None => state.ops.settings.route_of(path),
    };
    let endpoint = endpoint.and_then(Result::ok);
    let method = request.method().clone();
    let had_credentials = request.headers().contains_key(header::AUTHORIZATION);
    let notifier = state.ops.notifier.clone().filter(|_| endpoint.is_some());
    let facts = notifier.as_ref().map(|_| facts(&request, state.auth.is_some()));

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
    if let Some(endpoint) = &endpoint {
        count_uploads(&metrics, endpoint, &method, status);
    }
    if let (Some(notifier), Some(facts), Some(endpoint)) = (notifier, facts, endpoint)
        && status.is_success()
    {
        let occurrences = occurrences(&state, &endpoint, &method, status, response.headers(), &facts).await;
        notifier.notify(occurrences, &facts.info, &facts.actor);
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

/// Upload sessions: started (202 to a POST, or 201 to a monolithic POST), committed, cancelled.
fn count_uploads(metrics: &Metrics, endpoint: &Endpoint, method: &Method, status: StatusCode) {
    match (endpoint, method, status) {
        (Endpoint::UploadStart(_), &Method::POST, StatusCode::ACCEPTED) => metrics.upload_started(),
        (Endpoint::UploadStart(_), &Method::POST, StatusCode::CREATED) => {}
        (Endpoint::Upload(..), &Method::PUT, StatusCode::CREATED) => metrics.upload_completed(),
        (Endpoint::Upload(..), &Method::DELETE, StatusCode::NO_CONTENT) => metrics.upload_cancelled(),
        _ => {}
    }
}

/// The events of a successful API request.
async fn occurrences(
    state: &AppState,
    endpoint: &Endpoint,
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    facts: &Facts,
) -> Vec<Occurrence> {
    let digest = header_str(headers, header::HeaderName::from_static("docker-content-digest"))
        .and_then(|d| d.parse::<Digest>().ok());
    let length = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let url = |name: &RepoName, kind: &str, digest: &str| {
        format!("{}://{}/v2/{name}/{kind}/{digest}", state.ops.settings.scheme, facts.info.host)
    };
    let tag_of = |reference: &Reference| match reference {
        Reference::Tag(tag) => tag.to_string(),
        Reference::Digest(_) => String::new(),
    };
    let target = match (endpoint, method) {
        (Endpoint::Manifest(name, reference), &Method::GET) => {
            let Some(digest) = digest else { return Vec::new() };
            let media_type = header_str(headers, header::CONTENT_TYPE).unwrap_or_default().to_string();
            let target = Target {
                media_type,
                size: length,
                length,
                url: url(name, "manifests", &digest.to_string()),
                digest: digest.to_string(),
                repository: name.to_string(),
                tag: tag_of(reference),
                ..Target::default()
            };
            ("pull", target)
        }
        (Endpoint::Manifest(name, reference), &Method::PUT) => {
            let Some(digest) = digest else { return Vec::new() };
            let (media_type, size) = match (&facts.content_type, facts.content_length) {
                (Some(ct), Some(len)) if crate::oci::manifest::kind_of(ct).is_some() => (ct.clone(), len),
                _ => match state.registry.get_manifest(name, &Reference::Digest(digest.clone())).await {
                    Ok(stored) => (stored.media_type, stored.body.len() as u64),
                    Err(_) => {
                        (facts.content_type.clone().unwrap_or_default(), facts.content_length.unwrap_or(0))
                    }
                },
            };
            let target = Target {
                media_type,
                size,
                length: size,
                url: url(name, "manifests", &digest.to_string()),
                digest: digest.to_string(),
                repository: name.to_string(),
                tag: tag_of(reference),
                ..Target::default()
            };
            ("push", target)
        }
        (Endpoint::Manifest(name, reference), &Method::DELETE) => {
            let target = match reference {
                Reference::Digest(d) => {
                    Target { digest: d.to_string(), repository: name.to_string(), ..Target::default() }
                }
                Reference::Tag(t) => {
                    Target { tag: t.to_string(), repository: name.to_string(), ..Target::default() }
                }
            };
            ("delete", target)
        }
        (Endpoint::Blob(name, digest), &Method::GET) => {
            // A range request reports the whole blob's size and the bytes sent.
            let size = header_str(headers, header::CONTENT_RANGE)
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, total)| total.parse().ok())
                .unwrap_or(length);
            let target = Target {
                media_type: BLOB_MEDIA_TYPE.into(),
                size,
                length,
                url: url(name, "blobs", &digest.to_string()),
                digest: digest.to_string(),
                repository: name.to_string(),
                ..Target::default()
            };
            ("pull", target)
        }
        (Endpoint::Blob(name, digest), &Method::DELETE) => (
            "delete",
            Target { digest: digest.to_string(), repository: name.to_string(), ..Target::default() },
        ),
        // A blob committed: the last PUT of an upload, or a POST that made the blob at once
        // (monolithic `?digest=`, or a cross-repository mount).
        (Endpoint::UploadStart(name), &Method::POST) | (Endpoint::Upload(name, _), &Method::PUT)
            if status == StatusCode::CREATED =>
        {
            let Some(digest) = digest else { return Vec::new() };
            let size = state.registry.blob_size(name, &digest).await.unwrap_or(0);
            let mounted = facts.mount && matches!(endpoint, Endpoint::UploadStart(_));
            let action = if mounted { "mount" } else { "push" };
            let mut target = Target {
                media_type: BLOB_MEDIA_TYPE.into(),
                size,
                length: size,
                url: url(name, "blobs", &digest.to_string()),
                digest: digest.to_string(),
                repository: name.to_string(),
                ..Target::default()
            };
            if action == "mount" {
                target.from_repository = facts.mount_from.clone().unwrap_or_default();
            }
            (action, target)
        }
        _ => return Vec::new(),
    };
    vec![Occurrence { action: target.0, target: target.1 }]
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
    fn basic_user_is_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:pw:with:colons");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).expect("header"),
        );
        assert_eq!(basic_user(&headers).as_deref(), Some("alice"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_user(&headers), None);
    }

    #[test]
    fn routes_outside_v2() {
        let s = OpsSettings::default();
        assert_eq!(s.route_of("/metrics"), Route::Metrics);
        assert_eq!(s.route_of("/health"), Route::Health);
        assert_eq!(s.route_of("/ui/repositories/x"), Route::Ui);
        assert_eq!(s.route_of("/favicon.ico"), Route::Other);
    }
}
