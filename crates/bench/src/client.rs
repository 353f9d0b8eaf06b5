//! The one client that drives both servers: the OCI push and pull flows over plain HTTP/1.1
//! with keep-alive, Basic auth on every request (or a Bearer token, for one cell of ours), and
//! every byte read checked against its digest.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};

use crate::workload::{Blob, Image, MANIFEST_TYPE};

type Body = BoxBody<Bytes, Infallible>;

/// A registry at one base URL, with credentials; cheap to clone (the connection pool and the
/// counters are shared).
#[derive(Clone)]
pub struct Registry {
    client: Client<HttpConnector, Body>,
    base: String,
    auth: HeaderValue,
    counters: Arc<Counters>,
}

/// What the clones of one [`Registry`] did, together.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    verified: AtomicU64,
}

/// How long an idle pooled connection may be reused: well under our server's default
/// `headertimeout` (30 s), after which it closes an idle connection. A connection idle for
/// about as long races that close: the request goes out as the server hangs up, and fails
/// with "connection closed before message completed" (it happened once in the S3 latency
/// phase, between cells about 30 s apart).
const POOL_IDLE: Duration = Duration::from_secs(10);

/// A client with its own pool of keep-alive connections.
fn pool() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(connector)
}

fn empty() -> Body {
    Empty::new().boxed()
}

impl Registry {
    /// A client for `base` (`http://host:port`) sending `user:password` as Basic auth.
    pub fn new(base: &str, user: &str, password: &str) -> Registry {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let auth = HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
        let base = base.trim_end_matches('/').to_string();
        Registry { client: pool(), base, auth, counters: Arc::default() }
    }

    /// The same registry and credentials with a new, empty connection pool. Once every clone
    /// of the old one is dropped, its keep-alive connections close.
    pub fn reconnect(&self) -> Registry {
        Registry {
            client: pool(),
            base: self.base.clone(),
            auth: self.auth.clone(),
            counters: self.counters.clone(),
        }
    }

    /// The same registry with a Bearer token from its `/token` endpoint (Docker's token flow,
    /// ours only), asked with this client's Basic credentials for pulling `repos`: every
    /// request of the returned client sends the token instead of the password.
    pub async fn with_bearer_token(&self, repos: &[&str]) -> Result<Registry> {
        let scopes: Vec<String> = repos.iter().map(|repo| format!("scope=repository:{repo}:pull")).collect();
        let response = self.send(Method::GET, &format!("/token?{}", scopes.join("&")), &[], empty()).await?;
        let status = response.status();
        let body = response.into_body().collect().await.context("reading the /token answer")?.to_bytes();
        ensure!(status == StatusCode::OK, "GET /token: {status}: {}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value =
            serde_json::from_slice(&body).context("the /token answer is not JSON")?;
        let token = answer["token"].as_str().context("no token in the /token answer")?;
        let auth =
            HeaderValue::from_str(&format!("Bearer {token}")).context("the token is no header value")?;
        Ok(Registry { auth, ..self.clone() })
    }

    /// HTTP requests sent so far by this client and its clones (redirects followed included).
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    /// Bytes of blobs and manifests read so far and found to match their digests.
    pub fn verified_bytes(&self) -> u64 {
        self.counters.verified.load(Ordering::Relaxed)
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method` to `url` (absolute, or a path on this registry) with auth and `body`.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Body,
    ) -> Result<Response<Incoming>> {
        let url = if url.starts_with("http://") { url.to_string() } else { format!("{}{url}", self.base) };
        let mut request =
            Request::builder().method(method.clone()).uri(&url).header(header::AUTHORIZATION, &self.auth);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(body).with_context(|| format!("a request to {url}"))?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.client.request(request).await.with_context(|| format!("{method} {url}"))
    }

    /// Pushes a blob the way docker and skopeo do: `POST` a session, one streamed `PATCH`, and
    /// `PUT ?digest=`.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let started = self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], empty()).await?;
        let location = expect_location(started, StatusCode::ACCEPTED, "POST upload").await?;

        let frames = blob.frames.clone().into_iter().map(|f| Ok::<_, Infallible>(Frame::data(f)));
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let headers = [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, blob.len.to_string()),
        ];
        let patched = self.send(Method::PATCH, &location, &headers, body).await?;
        let location = expect_location(patched, StatusCode::ACCEPTED, "PATCH upload").await?;

        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={}", blob.digest);
        let headers = [(header::CONTENT_LENGTH, "0".to_string())];
        let finished = self.send(Method::PUT, &url, &headers, empty()).await?;
        expect_status(finished, StatusCode::CREATED, "PUT upload").await
    }

    /// Pushes an image: its config and layers one after the other, then its manifest.
    pub async fn push_image(&self, image: &Image) -> Result<()> {
        self.push_blob(&image.repo, &image.config).await?;
        for layer in &image.layers {
            self.push_blob(&image.repo, layer).await?;
        }
        self.push_manifest(image).await
    }

    /// `PUT` an image's manifest under its tag (its blobs must be there already).
    pub async fn push_manifest(&self, image: &Image) -> Result<()> {
        let headers = [(header::CONTENT_TYPE, MANIFEST_TYPE.to_string())];
        let url = format!("/v2/{}/manifests/{}", image.repo, image.tag);
        let body = Full::new(image.manifest.clone()).boxed();
        let response = self.send(Method::PUT, &url, &headers, body).await?;
        expect_status(response, StatusCode::CREATED, "PUT manifest").await
    }

    /// Pulls an image: the manifest by tag, then the config and the layers one after the
    /// other, each checked against its digest.
    pub async fn pull_image(&self, image: &Image) -> Result<()> {
        self.get_manifest(&image.repo, &image.tag, &image.manifest_digest).await?;
        self.pull_blob(&image.repo, &image.config).await?;
        for layer in &image.layers {
            self.pull_blob(&image.repo, layer).await?;
        }
        Ok(())
    }

    /// `GET` a blob, following a redirect to storage (distribution on S3 answers with a
    /// presigned URL, which must be fetched without our credentials), and verifies it.
    pub async fn pull_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let url = format!("/v2/{repo}/blobs/{}", blob.digest);
        let mut response = self.send(Method::GET, &url, &[], empty()).await?;
        if response.status().is_redirection() {
            let location = header_str(&response, header::LOCATION)?.to_string();
            drain(response).await?;
            let uri: hyper::Uri = location.parse().with_context(|| format!("redirect to {location}"))?;
            let request = Request::get(uri).body(empty()).context("a redirected request")?;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            response = self.client.request(request).await.with_context(|| format!("GET {location}"))?;
        }
        ensure!(response.status() == StatusCode::OK, "GET blob {}: {}", blob.digest, response.status());
        let (len, digest) = hash_body(response).await?;
        ensure!(len == blob.len, "GET blob {}: {len} bytes, expected {}", blob.digest, blob.len);
        ensure!(digest == blob.digest, "GET blob {}: content has digest {digest}", blob.digest);
        self.counters.verified.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// `GET` a manifest by tag and check that its bytes have `digest`.
    pub async fn get_manifest(&self, repo: &str, tag: &str, digest: &str) -> Result<()> {
        let url = format!("/v2/{repo}/manifests/{tag}");
        let headers = [(header::ACCEPT, MANIFEST_TYPE.to_string())];
        let response = self.send(Method::GET, &url, &headers, empty()).await?;
        ensure!(response.status() == StatusCode::OK, "GET manifest {repo}:{tag}: {}", response.status());
        let (len, actual) = hash_body(response).await?;
        ensure!(
            actual == digest,
            "GET manifest {repo}:{tag}: content has digest {actual}, expected {digest}"
        );
        self.counters.verified.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// `HEAD` a manifest by tag and check the `Docker-Content-Digest` it announces.
    pub async fn head_manifest(&self, repo: &str, tag: &str, digest: &str) -> Result<()> {
        let url = format!("/v2/{repo}/manifests/{tag}");
        let headers = [(header::ACCEPT, MANIFEST_TYPE.to_string())];
        let response = self.send(Method::HEAD, &url, &headers, empty()).await?;
        ensure!(response.status() == StatusCode::OK, "HEAD manifest {repo}:{tag}: {}", response.status());
        let actual = header_str(&response, header::HeaderName::from_static("docker-content-digest"))?;
        ensure!(actual == digest, "HEAD manifest {repo}:{tag}: digest {actual}, expected {digest}");
        drain(response).await
    }

    /// `GET /v2/` without credentials: a server with auth answers 401.
    pub async fn unauthenticated_ping(&self) -> Result<StatusCode> {
        let request = Request::get(format!("{}/v2/", self.base)).body(empty()).context("a ping request")?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let response = self.client.request(request).await.context("GET /v2/")?;
        let status = response.status();
        drain(response).await?;
        Ok(status)
    }
}

/// Reads a whole body, returning its length and `sha256:` digest.
async fn hash_body(response: Response<Incoming>) -> Result<(u64, String)> {
    let mut body = response.into_body();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("reading a response body")?.into_data() {
            len += data.len() as u64;
            hasher.update(&data);
        }
    }
    Ok((len, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// Reads and drops a body, so the connection goes back to the pool.
async fn drain(response: Response<Incoming>) -> Result<()> {
    response.into_body().collect().await.context("reading a response body")?;
    Ok(())
}

fn header_str(response: &Response<Incoming>, name: header::HeaderName) -> Result<&str> {
    let value = response.headers().get(&name).ok_or_else(|| anyhow!("no {name} header"))?;
    value.to_str().with_context(|| format!("the {name} header"))
}

/// Checks the status and returns the `Location` header (an upload session's next URL).
async fn expect_location(response: Response<Incoming>, status: StatusCode, what: &str) -> Result<String> {
    let location = header_str(&response, header::LOCATION).map(str::to_string);
    let actual = response.status();
    let body = response.into_body().collect().await.context("reading a response body")?.to_bytes();
    if actual != status {
        bail!("{what}: {actual}: {}", String::from_utf8_lossy(&body));
    }
    location.with_context(|| format!("{what}: {actual}"))
}

async fn expect_status(response: Response<Incoming>, status: StatusCode, what: &str) -> Result<()> {
    let actual = response.status();
    let body = response.into_body().collect().await.context("reading a response body")?.to_bytes();
    ensure!(actual == status, "{what}: {actual}: {}", String::from_utf8_lossy(&body));
    Ok(())
}
