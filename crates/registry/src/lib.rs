//! An OCI distribution-spec v1.1 container registry server.
//!
//! The crate in layers, from the bottom up. A module uses modules of its own layer or below,
//! never one above (tests aside):
//!
//! 1. Foundations: [`oci`] (validated digests, names, tags, references, manifests),
//!    [`storage`] (the backend trait; filesystem and S3), [`layout`] (where blobs, links and
//!    uploads live, in CNCF distribution's layout), [`lease`] (one process at a time, among all
//!    sharing a storage, for a job such as garbage collection), [`config`] (the TOML file and
//!    `REGISTRY_*` variables), [`error`] (the spec's error codes and statuses), [`units`].
//! 2. [`registry`]: the OCI logic over storage (uploads, manifests, tags, catalog,
//!    referrers); the pin protocol that garbage collection and pushes share
//!    ([`registry::pins`]); the events it publishes ([`registry::events`]): pushed, pulled,
//!    mounted, deleted, with the caller; on S3, a cache of manifest reads with a one-second
//!    staleness bound across servers.
//! 3. Beside each other, fed by the registry: [`gc`] (garbage collection that is safe while
//!    pushes continue), [`notify`] (webhooks in distribution's envelope, an event
//!    subscriber), [`metrics`] (counters and histograms, an event subscriber; storage calls
//!    counted), [`ui`] (the read-only web UI), [`memory`] (freed heap memory given back once
//!    the server goes quiet).
//! 4. HTTP: [`routes`] (a request path parsed into a typed [`routes::Endpoint`], then a
//!    handler), [`auth`] (htpasswd users and tokens, access rules and the decision per request,
//!    Docker's Bearer token flow, verification cache, throttling), [`ops`] (request
//!    counting, `/metrics`, `/health`), [`forwarded`] (the client, scheme and host of a
//!    request, through trusted proxies), [`shutdown`] (the drain before stopping), and [`app`],
//!    which puts them together.
//! 5. Serving: [`connection`] (one connection, plain or TLS, with what a client may hold
//!    bounded), [`tls`] (HTTPS: certificate files or ACME), [`server`] (state from the
//!    configuration, background tasks, graceful shutdown), [`cli`] (the command line shared
//!    by `regctl serve` and `regctl-registry`).

#![deny(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod connection;
pub mod error;
pub mod forwarded;
pub mod gc;
pub mod layout;
pub mod lease;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod ops;
pub mod registry;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod tls;
pub mod ui;
pub mod units;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
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
/// `/metrics` and `/health` as configured, every request counted ([`ops::observe`]), plus the
/// `Docker-Distribution-API-Version` header and a log line per request.
pub fn app(state: AppState) -> Router {
    let (protected, open) = ops::routes(&state);
    Router::new()
        .route("/v2", axum::routing::any(routes::dispatch))
        .route("/v2/", axum::routing::any(routes::dispatch))
        .route("/v2/{*path}", axum::routing::any(routes::dispatch))
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .merge(open)
        .route("/token", axum::routing::get(auth::token_endpoint::token).post(auth::token_endpoint::token))
        .layer(middleware::from_fn_with_state(state.clone(), ops::observe))
        .layer(middleware::from_fn_with_state(state.clone(), shutdown::close_while_draining))
        .layer(middleware::from_fn(api_version_and_log))
        .layer(middleware::from_fn_with_state(state.clone(), forwarded::resolve))
        .with_state(state)
}

/// Rejects requests without valid credentials when authentication is on, and those their
/// credentials do not allow ([`auth::authorize`]); with anonymous pull, lets pulls without
/// credentials through. With the token flow's Bearer challenge on, the `401` of a `/v2`
/// request sends the client to `/token` for the scope it needs.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(auth) = &state.auth else { return next.run(request).await };
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let client = forwarded::origin_of(request.extensions()).client;
    let refused = match auth.check(authorization, client).await {
        Ok(user) => match auth::authorize::user(&mut request, &user) {
            Ok(()) => {
                let name = LoggedUser(user.name.clone());
                request.extensions_mut().insert(user);
                let mut response = next.run(request).await;
                response.extensions_mut().insert(name);
                return response;
            }
            // A token whose scope does not cover the request (or the anonymous puller's):
            // challenged for the scope, as a request without credentials is.
            Err(error::Error::Unauthorized { .. }) => auth.unauthorized(false),
            // Refused to a Bearer token's user: the challenge too, for clients that ask
            // `/token` again only after a `403` (oras-py), which then stop at once.
            Err(denied) if user.scope.is_some() => {
                let access = requested_access(&mut request);
                let mut response = denied.into_response();
                if let Some(value) = bearer_challenge(auth, &request, &access) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
                return response;
            }
            Err(denied) => return denied.into_response(),
        },
        Err(e) => e,
    };
    match refused {
        error::Error::Unauthorized { rejected: false, .. }
            if auth.anonymous_pull() && auth::authorize::anonymous_pull(&mut request) =>
        {
            next.run(request).await
        }
        error::Error::Unauthorized { realm, rejected, .. } => {
            let access = requested_access(&mut request);
            let challenge = bearer_challenge(auth, &request, &access);
            let mut response = error::Error::Unauthorized { realm, rejected, access }.into_response();
            if let Some(value) = challenge {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
        e => e.into_response(),
    }
}

/// The Bearer challenge for `access`, when the token flow challenges with Bearer and
/// `request` is a `/v2` one whose host is known: the realm is `/token` on the scheme and host
/// the client used ([`forwarded`]).
fn bearer_challenge(
    auth: &auth::Htpasswd,
    request: &Request,
    access: &[error::Access],
) -> Option<HeaderValue> {
    let bearer =
        auth.tokens().is_some_and(|t| t.bearer_challenge()) && request.uri().path().starts_with("/v2");
    let origin = forwarded::origin_of(request.extensions());
    let host = bearer.then_some(origin.host).flatten()?;
    auth::token_endpoint::challenge(origin.scheme, &host, auth.service(), access)
}

/// The name (never the secret) of the user or token a response was for, for the access log.
#[derive(Debug, Clone)]
struct LoggedUser(String);

/// What a request asks of its endpoint, as a `401`'s detail and challenge name it.
fn requested_access(request: &mut Request) -> Vec<error::Access> {
    routes::Endpoint::of(request)
        .as_ref()
        .as_ref()
        .ok()
        .map(|endpoint| endpoint.access(request.method()))
        .into_iter()
        .collect()
}

/// The longest path or operation written to the access log, in bytes: past that it is client
/// text that would only fill the log. Methods are cut at [`LOG_METHOD_MAX`].
const LOG_FIELD_MAX: usize = 256;
/// The longest method written to the access log (the spec's are at most 7 letters).
const LOG_METHOD_MAX: usize = 16;

/// Adds the API version header to every response and logs each request: the client, the method, the path,
/// what the query asks for when it changes the operation ([`operation`]), the status and the
/// time taken. Client text is capped in length and logged escaped; nothing else of the query
/// and no header is logged, so tokens and credentials stay out of the log.
async fn api_version_and_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = capped(request.method().as_str(), LOG_METHOD_MAX).into_owned();
    let path = capped(request.uri().path(), LOG_FIELD_MAX).into_owned();
    let operation = request.uri().query().and_then(operation);
    let client = forwarded::origin_of(request.extensions()).client;
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    // Logged escaped like the path: a user name from the file, never a secret.
    let user = response.extensions().get::<LoggedUser>().map(|u| u.0.clone());
    tracing::info!(
        client = client.map(|ip| ip.to_string()),
        %method,
        path,
        operation,
        user,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}

/// What a query makes of an upload request, for the access log: `mount <digest> from <repo>`
/// (a cross-repository mount), `digest <digest>` (a monolithic upload or the closing `PUT`).
/// Other parameters (pagination, filters, anything a client adds) are left out.
fn operation(query: &str) -> Option<String> {
    let query = routes::Query::parse(Some(query));
    let get = |key: &str| query.get(key).map(|v| capped(v, LOG_FIELD_MAX / 2));
    match (get("mount"), get("from"), get("digest")) {
        (Some(mount), Some(from), _) => Some(format!("mount {mount} from {from}")),
        (Some(mount), None, _) => Some(format!("mount {mount}")),
        (None, _, Some(digest)) => Some(format!("digest {digest}")),
        _ => None,
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_name_the_operation_and_are_capped() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            operation(&format!("mount={digest}&from=library%2Fbase")),
            Some(format!("mount {digest} from library/base"))
        );
        assert_eq!(operation(&format!("digest={digest}")), Some(format!("digest {digest}")));
        assert_eq!(operation("n=10&last=x"), None);
        assert_eq!(operation("token=secret&_state=secret"), None);
        let long = operation(&format!("digest={}", "b".repeat(10_000))).expect("digest");
        assert!(long.len() < LOG_FIELD_MAX, "{}", long.len());
        assert_eq!(capped("PATCH", LOG_METHOD_MAX), "PATCH");
        assert_eq!(capped("éé", 3), "é…");
    }
}

#[cfg(test)]
mod layering {
    //! Holds the crate to the map in its documentation: no module uses one of a layer above.

    use std::path::Path;

    /// The layer of each top-level module (and of the crate root's own items).
    fn layer(module: &str) -> Option<u8> {
        Some(match module {
            "oci" | "storage" | "layout" | "lease" | "config" | "error" | "units" | "Config" => 1,
            "registry" | "Registry" => 2,
            "gc" | "notify" | "metrics" | "ui" | "memory" => 3,
            "routes" | "auth" | "ops" | "forwarded" | "shutdown" | "AppState" | "app" | "lib" => 4,
            "connection" | "tls" | "server" | "cli" | "main" => 5,
            _ => return None,
        })
    }

    /// The names a line of code takes from `crate::`.
    fn crate_uses(line: &str) -> Vec<String> {
        let mut names = Vec::new();
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                names.extend(
                    group.split(',').map(|n| n.trim().split("::").next().unwrap_or_default().to_string()),
                );
            } else {
                names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        names.retain(|n| !n.is_empty());
        names
    }

    fn check_dir(dir: &Path, root: &Path, violations: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("source directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                check_dir(&path, root, violations);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(root).expect("under src");
            let top = relative.components().next().expect("a component").as_os_str().to_string_lossy();
            let module = top.trim_end_matches(".rs");
            let own = layer(module).unwrap_or_else(|| panic!("{module} has no layer in the crate map"));
            let text = std::fs::read_to_string(&path).expect("source");
            // Tests may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for name in crate_uses(line) {
                    if layer(&name).is_some_and(|used| used > own) {
                        violations.push(format!("{}:{}: {module} uses {name}", relative.display(), n + 1));
                    }
                }
            }
        }
    }

    #[test]
    fn no_module_uses_one_above_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut violations = Vec::new();
        check_dir(&root, &root, &mut violations);
        assert!(violations.is_empty(), "imports against the crate map:\n{}", violations.join("\n"));
    }

    #[test]
    fn the_check_sees_grouped_and_plain_uses() {
        assert_eq!(crate_uses("use crate::{AppState, registry::Caller};"), ["AppState", "registry"]);
        assert_eq!(crate_uses("let x = crate::gc::collect(s);"), ["gc"]);
    }
}
