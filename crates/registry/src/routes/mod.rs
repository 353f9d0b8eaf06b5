//! HTTP routing: each `/v2/...` request is parsed into a typed [`Endpoint`] (names, tags and
//! digests validated here, once), then dispatched to a small handler per endpoint family.

mod blobs;
mod listing;
mod manifests;
mod uploads;

pub use blobs::BlobRange;
pub use uploads::content_range_start;

use axum::body::Body;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::User;
use crate::error::{Access, Error, Result};
use crate::metrics::Route;
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::{Caller, UploadId};
use crate::storage::ByteStream;

/// The registry API endpoints, with validated path parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// A request's parsed endpoint, in its extensions (see [`Endpoint::of`]).
#[derive(Debug, Clone)]
struct ParsedEndpoint(Arc<Result<Endpoint>>);

impl Endpoint {
    /// Parses a request path. Names are matched from the end, since a repository name may
    /// itself contain components such as `blobs` or `manifests`.
    pub fn parse(path: &str) -> Result<Endpoint> {
        let rest = path.strip_prefix("/v2").ok_or(Error::RouteUnknown)?;
        if rest.is_empty() || rest == "/" {
            return Ok(Endpoint::Base);
        }
        let rest = rest.strip_prefix('/').ok_or(Error::RouteUnknown)?;
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name = |count: usize| -> Result<RepoName> {
            if count == 0 {
                return Err(Error::RouteUnknown);
            }
            RepoName::parse(&segments[..count].join("/")).ok_or(Error::NameInvalid)
        };
        let tail = |k: usize| segments.get(n.wrapping_sub(k)).copied().unwrap_or("");
        if n >= 3 && tail(3) == "blobs" && tail(2) == "uploads" {
            let endpoint = match tail(1) {
                "" => Endpoint::UploadStart(name(n - 3)?),
                id => Endpoint::Upload(name(n - 3)?, UploadId::parse(id)?),
            };
            return Ok(endpoint);
        }
        if n >= 2 {
            let last = tail(1);
            match tail(2) {
                "blobs" if last == "uploads" => return Ok(Endpoint::UploadStart(name(n - 2)?)),
                "tags" if last == "list" => return Ok(Endpoint::Tags(name(n - 2)?)),
                "manifests" => {
                    let name = name(n - 2)?;
                    return Ok(Endpoint::Manifest(name, Reference::parse(last)?));
                }
                "blobs" => return Ok(Endpoint::Blob(name(n - 2)?, last.parse()?)),
                "referrers" => return Ok(Endpoint::Referrers(name(n - 2)?, last.parse()?)),
                _ => {}
            }
        }
        Err(Error::RouteUnknown)
    }

    /// The endpoint of `request`: the one an outer layer parsed, else parsed now and kept in
    /// the request's extensions, so that request counting, authentication and dispatch parse
    /// a path once between them.
    pub fn of(request: &mut Request) -> Arc<Result<Endpoint>> {
        if let Some(ParsedEndpoint(parsed)) = request.extensions().get::<ParsedEndpoint>() {
            return parsed.clone();
        }
        let parsed = Arc::new(Endpoint::parse(request.uri().path()));
        request.extensions_mut().insert(ParsedEndpoint(parsed.clone()));
        parsed
    }

    /// The endpoint's label in the request metrics.
    pub fn route(&self) -> Route {
        match self {
            Endpoint::Base => Route::Base,
            Endpoint::Catalog => Route::Catalog,
            Endpoint::Tags(_) => Route::Tags,
            Endpoint::Manifest(..) => Route::Manifest,
            Endpoint::Blob(..) => Route::Blob,
            Endpoint::UploadStart(_) | Endpoint::Upload(..) => Route::BlobUpload,
            Endpoint::Referrers(..) => Route::Referrers,
        }
    }

    /// What a request with `method` asks of this endpoint, as a `401`'s detail names it.
    pub fn access(&self, method: &Method) -> Access {
        let action = match *method {
            Method::GET | Method::HEAD => "pull",
            Method::DELETE => "delete",
            _ => "push",
        };
        let (kind, name, action) = match self {
            Endpoint::Base => ("registry", String::new(), "*"),
            Endpoint::Catalog => ("registry", "catalog".to_string(), "*"),
            Endpoint::Tags(name)
            | Endpoint::Manifest(name, _)
            | Endpoint::Blob(name, _)
            | Endpoint::UploadStart(name)
            | Endpoint::Upload(name, _)
            | Endpoint::Referrers(name, _) => ("repository", name.to_string(), action),
        };
        Access { kind, class: "", name, action }
    }
}

/// Handles every `/v2` request: parse, then dispatch on endpoint and method.
pub async fn dispatch(State(state): State<AppState>, mut request: Request) -> Response {
    let parsed = Endpoint::of(&mut request);
    let (parts, body) = request.into_parts();
    let endpoint = match parsed.as_ref() {
        Ok(endpoint) => endpoint.clone(),
        // A reference that cannot be a tag names no manifest: reading or deleting it is a 404
        // (the spec lists no other answer for those); only a push of it is a bad request.
        Err(Error::TagInvalid) if parts.method != Method::PUT => {
            return Error::ManifestUnknown.into_response();
        }
        Err(e) => return e.response(),
    };
    let query = Query::parse(parts.uri.query());
    let caller = caller(&parts);
    let user = parts.extensions.get::<User>();
    let req =
        Req { state: &state, method: &parts.method, headers: &parts.headers, query, body, caller, user };
    match route(endpoint, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Who sent the request, for the events the registry publishes: the user the authentication
/// middleware verified, and the request's facts.
fn caller(parts: &axum::http::request::Parts) -> Caller {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin = crate::forwarded::origin_of(&parts.extensions);
    Caller {
        user: parts.extensions.get::<User>().map(|user| user.name.clone()),
        request_id: header("x-request-id").to_string(),
        addr: origin.addr(),
        host: origin.host.unwrap_or_default(),
        scheme: origin.scheme,
        method: parts.method.to_string(),
        user_agent: header("user-agent").to_string(),
    }
}

/// The parts of a request a handler may use.
struct Req<'a> {
    state: &'a AppState,
    method: &'a Method,
    headers: &'a HeaderMap,
    query: Query,
    body: Body,
    caller: Caller,
    /// The verified caller; `None` when authentication is off or anyone may pull.
    user: Option<&'a User>,
}

impl Req<'_> {
    /// A header as a string, if present and valid.
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as a stream of bytes (taken: the request keeps an empty one).
    fn take_stream(&mut self) -> ByteStream {
        use futures_util::{StreamExt, TryStreamExt};
        let body = std::mem::replace(&mut self.body, Body::empty());
        body.into_data_stream().map_err(std::io::Error::other).boxed()
    }
}

/// Decoded query parameters; a query that does not decode has none.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes a request's query string (`application/x-www-form-urlencoded`).
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
            .unwrap_or_default();
        Query(pairs)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

async fn route(endpoint: Endpoint, req: Req<'_>) -> Result<Response> {
    let method = req.method.clone();
    match (endpoint, method) {
        (Endpoint::Base, Method::GET | Method::HEAD) => Ok(axum::Json(serde_json::json!({})).into_response()),
        (Endpoint::Catalog, Method::GET) => listing::catalog(req).await,
        (Endpoint::Tags(name), Method::GET) => listing::tags(req, &name).await,
        (Endpoint::Referrers(name, digest), Method::GET) => listing::referrers(req, &name, &digest).await,
        (Endpoint::Manifest(name, reference), Method::GET | Method::HEAD) => {
            manifests::get(req, &name, &reference).await
        }
        (Endpoint::Manifest(name, reference), Method::PUT) => manifests::put(req, &name, &reference).await,
        (Endpoint::Manifest(name, reference), Method::DELETE) => {
            manifests::delete(req, &name, &reference).await
        }
        (Endpoint::Blob(name, digest), Method::GET | Method::HEAD) => blobs::get(req, &name, &digest).await,
        (Endpoint::Blob(name, digest), Method::DELETE) => blobs::delete(req, &name, &digest).await,
        (Endpoint::UploadStart(name), Method::POST) => uploads::start(req, &name).await,
        (Endpoint::Upload(name, id), Method::GET) => uploads::status(req, &name, &id).await,
        (Endpoint::Upload(name, id), Method::PATCH) => uploads::patch(req, &name, &id).await,
        (Endpoint::Upload(name, id), Method::PUT) => uploads::finish(req, &name, &id).await,
        (Endpoint::Upload(name, id), Method::DELETE) => uploads::cancel(req, &name, &id).await,
        (_, method) => Err(Error::Unsupported(format!("{method} is not allowed here"))),
    }
}

/// An empty response with a status and headers.
fn empty(status: StatusCode, headers: impl IntoIterator<Item = (header::HeaderName, String)>) -> Response {
    let mut response = (status, Body::empty()).into_response();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// `Docker-Content-Digest`.
fn content_digest() -> header::HeaderName {
    header::HeaderName::from_static("docker-content-digest")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    #[test]
    fn parses_every_endpoint() {
        let name = |s: &str| RepoName::parse(s).expect("name");
        assert_eq!(Endpoint::parse("/v2/").ok(), Some(Endpoint::Base));
        assert_eq!(Endpoint::parse("/v2").ok(), Some(Endpoint::Base));
        assert_eq!(Endpoint::parse("/v2/_catalog").ok(), Some(Endpoint::Catalog));
        assert_eq!(Endpoint::parse("/v2/a/b/tags/list").ok(), Some(Endpoint::Tags(name("a/b"))));
        assert!(matches!(Endpoint::parse("/v2/a/manifests/latest"), Ok(Endpoint::Manifest(..))));
        let blob = format!("/v2/x/blobs/blobs/{}", digest());
        assert!(matches!(Endpoint::parse(&blob), Ok(Endpoint::Blob(n, _)) if n == name("x/blobs")));
        assert_eq!(Endpoint::parse("/v2/a/blobs/uploads/").ok(), Some(Endpoint::UploadStart(name("a"))));
        assert_eq!(Endpoint::parse("/v2/a/blobs/uploads").ok(), Some(Endpoint::UploadStart(name("a"))));
        let id = uuid::Uuid::new_v4().to_string();
        assert!(matches!(Endpoint::parse(&format!("/v2/a/blobs/uploads/{id}")), Ok(Endpoint::Upload(..))));
        assert!(matches!(
            Endpoint::parse(&format!("/v2/a/referrers/{}", digest())),
            Ok(Endpoint::Referrers(..))
        ));
    }

    #[test]
    fn rejects_bad_parts_with_the_right_error() {
        assert!(matches!(Endpoint::parse("/v2/A/manifests/latest"), Err(Error::NameInvalid)));
        assert!(matches!(Endpoint::parse("/v2/a/manifests/-bad"), Err(Error::TagInvalid)));
        assert!(matches!(Endpoint::parse("/v2/a/blobs/sha256:zz"), Err(Error::DigestInvalid(_))));
        assert!(Endpoint::parse("/v2/a/blobs/uploads/../x").is_err());
        assert!(matches!(Endpoint::parse("/v2/a/unknown"), Err(Error::RouteUnknown)));
        assert!(matches!(Endpoint::parse("/v3/"), Err(Error::RouteUnknown)));
        assert!(matches!(Endpoint::parse("/v2/../../etc/manifests/x"), Err(Error::NameInvalid)));
    }
}
