//! The conformance tests' harness: a fresh `regctl serve` with a client, the requests every
//! workflow is made of, the media types and the spec's error codes, and small pure helpers.

use reqwest::Method;
use reqwest::Url;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::util;

pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(super) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(super) const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub(super) const OCI_FOREIGN_LAYER: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(super) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(super) const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub(super) const OCTET_STREAM: &str = "application/octet-stream";

/// Every manifest type a client of this registry understands, for `Accept`.
pub(super) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The error codes a registry may answer with (spec "Error Codes": "The code field MUST be one of
/// the following", plus the legacy codes of "Legacy Docker support error codes").
pub(super) const SPEC_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "TAG_INVALID",
    "MANIFEST_UNVERIFIED",
];

/// The empty JSON blob `{}` of image-spec v1.1, the config of artifacts without one.
pub(super) const EMPTY_JSON: &[u8] = b"{}";

// ---------------------------------------------------------------------------------------------
// Harness: a server plus a client, and the requests every workflow is made of.
// ---------------------------------------------------------------------------------------------

/// A fresh `regctl serve` and an HTTP client for it.
pub(super) struct Registry {
    pub(super) server: util::Server,
    pub(super) http: Client,
}

impl Registry {
    pub(super) fn start() -> Registry {
        Registry { server: util::Server::start(), http: util::http() }
    }

    /// A full URL for `target`: a path on the server, or already absolute (a `Location` MAY be
    /// either, spec "POST then PUT").
    pub(super) fn resolve(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else {
            assert!(target.starts_with('/'), "unexpected relative location {target:?}");
            self.server.url(target)
        }
    }

    pub(super) fn request(&self, method: Method, target: &str) -> RequestBuilder {
        self.http.request(method, self.resolve(target))
    }

    pub(super) fn send(&self, request: RequestBuilder) -> Response {
        request.send().expect("request to the registry")
    }

    pub(super) fn get(&self, target: &str) -> Response {
        self.send(self.request(Method::GET, target))
    }

    pub(super) fn head(&self, target: &str) -> Response {
        self.send(self.request(Method::HEAD, target))
    }

    pub(super) fn delete(&self, target: &str) -> Response {
        self.send(self.request(Method::DELETE, target))
    }

    // --- blob uploads -------------------------------------------------------------------------

    /// `POST /v2/<name>/blobs/uploads/` with `Content-Length: 0` (end-4a).
    pub(super) fn post_upload(&self, name: &str) -> Response {
        let url = format!("/v2/{name}/blobs/uploads/");
        self.send(self.request(Method::POST, &url).body(Vec::new()))
    }

    /// Opens an upload session: 202 with a `Location` (end-4a); returns the location.
    #[track_caller]
    pub(super) fn start_upload(&self, name: &str) -> String {
        let resp = self.post_upload(name);
        assert_eq!(resp.status(), 202, "POST /v2/{name}/blobs/uploads/ opens a session");
        must_header(&resp, "location")
    }

    /// `PUT <location>?digest=<digest>` with `body` as the last (or only) bytes (end-6).
    pub(super) fn put_upload(&self, location: &str, digest: &str, body: Vec<u8>) -> Response {
        let request = self
            .request(Method::PUT, location)
            .query(&[("digest", digest)])
            .header("content-type", OCTET_STREAM)
            .body(body);
        self.send(request)
    }

    /// `PATCH <location>` with the chunk that starts at byte `start` (end-5).
    pub(super) fn patch_chunk(&self, location: &str, start: usize, chunk: &[u8]) -> Response {
        let end = start + chunk.len() - 1;
        let request = self
            .request(Method::PATCH, location)
            .header("content-type", OCTET_STREAM)
            .header("content-range", format!("{start}-{end}"))
            .body(chunk.to_vec());
        self.send(request)
    }

    /// Closing `PUT <location>?digest=<digest>` that carries the final chunk, starting at byte
    /// `start`, with its `Content-Range` (spec "Pushing a blob in chunks").
    pub(super) fn put_final_chunk(
        &self,
        location: &str,
        digest: &str,
        start: usize,
        chunk: &[u8],
    ) -> Response {
        let end = start + chunk.len() - 1;
        let request = self
            .request(Method::PUT, location)
            .query(&[("digest", digest)])
            .header("content-type", OCTET_STREAM)
            .header("content-range", format!("{start}-{end}"))
            .body(chunk.to_vec());
        self.send(request)
    }

    /// Pushes `data` as a blob under `digest` with POST then PUT, asserting 201.
    #[track_caller]
    pub(super) fn push_blob_as(&self, name: &str, data: &[u8], digest: &str) {
        let location = self.start_upload(name);
        let resp = self.put_upload(&location, digest, data.to_vec());
        assert_eq!(resp.status(), 201, "PUT {location} completes the upload of {digest}");
    }

    /// Pushes `data` as a sha256 blob; returns its digest.
    #[track_caller]
    pub(super) fn push_blob(&self, name: &str, data: &[u8]) -> String {
        let digest = util::sha256(data);
        self.push_blob_as(name, data, &digest);
        digest
    }

    // --- manifests ----------------------------------------------------------------------------

    /// `PUT /v2/<name>/manifests/<reference>` (end-7).
    pub(super) fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        let url = format!("/v2/{name}/manifests/{reference}");
        self.send(self.request(Method::PUT, &url).header("content-type", media_type).body(body.to_vec()))
    }

    /// Pushes a manifest, asserting 201 and the digest the registry answers; returns the sha256
    /// digest of `body`.
    #[track_caller]
    pub(super) fn push_manifest(&self, name: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let digest = util::sha256(body);
        let resp = self.put_manifest(name, reference, media_type, body);
        let status = resp.status();
        assert_eq!(status, 201, "PUT manifest {name}:{reference}: {}", text(resp));
        assert_eq!(must_header(&resp, "docker-content-digest"), digest, "digest of {name}:{reference}");
        digest
    }

    /// `GET /v2/<name>/manifests/<reference>` (end-3) accepting every manifest type.
    pub(super) fn get_manifest(&self, name: &str, reference: &str) -> Response {
        let url = format!("/v2/{name}/manifests/{reference}");
        self.send(self.request(Method::GET, &url).header("accept", ACCEPT_MANIFESTS))
    }

    /// GET of a manifest `Location`, with `Accept`.
    pub(super) fn get_manifest_at(&self, location: &str) -> Response {
        self.send(self.request(Method::GET, location).header("accept", ACCEPT_MANIFESTS))
    }

    /// Pushes an OCI image: a config and a layer blob made distinct by `seed`, and a manifest
    /// for them under `reference` (a tag or its digest).
    #[track_caller]
    pub(super) fn push_image(&self, name: &str, reference: Option<&str>, seed: &str) -> Image {
        let config = json!({"architecture": "amd64", "os": "linux", "seed": seed}).to_string();
        let layer = format!("layer bytes of {seed}").into_bytes();
        self.push_blob(name, config.as_bytes());
        self.push_blob(name, &layer);
        let manifest = to_bytes(&image_manifest(
            descriptor(OCI_CONFIG, config.as_bytes()),
            vec![descriptor(OCI_LAYER, &layer)],
        ));
        let digest = util::sha256(&manifest);
        self.push_manifest(name, reference.unwrap_or(&digest), OCI_MANIFEST, &manifest);
        Image { manifest, digest, layer }
    }

    /// Follows `Link: <…>; rel="next"` from `first`, checking each link (RFC 5988, spec
    /// "Listing Tags"), and returns the `key` array of every page, in order.
    #[track_caller]
    pub(super) fn paginate(&self, first: &str, key: &str, n: usize, list_path: &str) -> Vec<String> {
        let mut all = Vec::new();
        let mut target = first.to_string();
        for _ in 0..100 {
            let resp = self.get(&target);
            assert_eq!(resp.status(), 200, "GET {target}");
            let link = next_link(&resp);
            let body: Value = resp.json().expect("JSON page");
            let page = strings(&body[key]);
            assert!(page.len() <= n, "GET {target} returned {} items, more than n={n}", page.len());
            all.extend(page.iter().cloned());
            let Some(link) = link else {
                return all;
            };
            // A page shorter than n is only allowed with a Link or at the end of the list.
            let url = Url::parse(&self.resolve(&link)).expect("Link target is a URL");
            assert_eq!(url.path(), list_path, "Link {link} points at the list");
            assert_eq!(query_param(&url, "n").as_deref(), Some(n.to_string().as_str()), "n in {link}");
            if let Some(last) = page.last() {
                assert_eq!(query_param(&url, "last").as_ref(), Some(last), "last in {link}");
            }
            target = link;
        }
        panic!("pagination from {first} did not end after 100 pages");
    }
}

/// What `push_image` pushed.
pub(super) struct Image {
    pub(super) manifest: Vec<u8>,
    pub(super) digest: String,
    pub(super) layer: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers.
// ---------------------------------------------------------------------------------------------

/// The `sha512:<hex>` digest of `data`.
pub(super) fn sha512(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// A descriptor of `data` with a sha256 digest.
pub(super) fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": util::sha256(data), "size": data.len()})
}

/// An OCI image manifest.
pub(super) fn image_manifest(config: Value, layers: Vec<Value>) -> Value {
    json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers})
}

/// An OCI image index of `manifests`.
pub(super) fn image_index(manifests: Vec<Value>) -> Value {
    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
}

pub(super) fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

/// A header's value, if present.
pub(super) fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| v.to_str().expect("ASCII header value").to_string())
}

/// A header's value, which must be present.
#[track_caller]
pub(super) fn must_header(resp: &Response, name: &str) -> String {
    header(resp, name).unwrap_or_else(|| {
        panic!("{} {} has no {name} header: {:?}", resp.status(), resp.url(), resp.headers())
    })
}

/// The body as text, for assertion messages.
pub(super) fn text(resp: Response) -> String {
    resp.text().unwrap_or_else(|e| format!("<unreadable body: {e}>"))
}

pub(super) fn bytes(resp: Response) -> Vec<u8> {
    resp.bytes().expect("response body").to_vec()
}

/// The strings of a JSON array.
#[track_caller]
pub(super) fn strings(value: &Value) -> Vec<String> {
    let array = value.as_array().unwrap_or_else(|| panic!("expected a JSON array, got {value}"));
    array.iter().map(|v| v.as_str().expect("string item").to_string()).collect()
}

pub(super) fn query_param(url: &Url, key: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// The target of a `Link: <target>; rel="next"` header, if present.
#[track_caller]
pub(super) fn next_link(resp: &Response) -> Option<String> {
    let value = header(resp, "link")?;
    let (target, params) = value.split_once(';').unwrap_or_else(|| panic!("Link without rel: {value}"));
    let target = target.trim();
    assert!(target.starts_with('<') && target.ends_with('>'), "Link target not in <>: {value}");
    let rel = params.split(';').map(str::trim).any(|p| p == "rel=\"next\"");
    assert!(rel, "Link without rel=\"next\": {value}");
    Some(target[1..target.len() - 1].to_string())
}

/// Asserts a spec error response (spec "Error Codes"): one of `statuses`, a JSON body
/// `{"errors":[{"code":…,"message":…}]}` whose codes are all spec codes, with at least one of
/// them in `codes`. Returns the first matching code.
#[track_caller]
pub(super) fn assert_error(resp: Response, statuses: &[u16], codes: &[&str]) -> String {
    let url = resp.url().clone();
    let status = resp.status().as_u16();
    let content_type = header(&resp, "content-type").unwrap_or_default();
    let body = text(resp);
    assert!(statuses.contains(&status), "{url}: expected {statuses:?} {codes:?}, got {status}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{url}: error is not JSON ({content_type:?}): {body}"
    );
    let json: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: error body {body:?}: {e}"));
    let errors = json["errors"].as_array().unwrap_or_else(|| panic!("{url}: no errors array: {body}"));
    assert!(!errors.is_empty(), "{url}: empty errors array");
    for error in errors {
        let code = error["code"].as_str().unwrap_or_else(|| panic!("{url}: error without code: {body}"));
        assert!(SPEC_CODES.contains(&code), "{url}: code {code:?} is not one of the spec's codes: {body}");
        let message = &error["message"];
        assert!(message.is_null() || message.is_string(), "{url}: message is not a string: {body}");
        // docker and containerd treat an error whose detail is null as unrecognised (docker
        // retries it): every error carries a detail, `{}` at least.
        assert!(!error["detail"].is_null(), "{url}: error with a null detail: {body}");
    }
    let codes_found: Vec<&str> = errors.iter().filter_map(|e| e["code"].as_str()).collect();
    let found = codes_found.iter().find(|c| codes.contains(c));
    let found = found.unwrap_or_else(|| panic!("{url}: codes {codes_found:?}, expected one of {codes:?}"));
    found.to_string()
}

/// Asserts a successful blob or manifest fetch: `status`, `Docker-Content-Digest`, and
/// `Content-Length`; returns the body.
#[track_caller]
pub(super) fn assert_content(resp: Response, status: u16, digest: &str, size: usize) -> Vec<u8> {
    let url = resp.url().clone();
    assert_eq!(resp.status(), status, "{url}");
    assert_eq!(must_header(&resp, "docker-content-digest"), digest, "{url}: Docker-Content-Digest");
    assert_eq!(must_header(&resp, "content-length"), size.to_string(), "{url}: Content-Length");
    bytes(resp)
}

/// `OCI-Chunk-Min-Length` (spec "Pushing a blob in chunks") bounds the chunk size from below.
pub(super) fn chunk_len(post_response: &Response) -> usize {
    let minimum =
        header(post_response, "oci-chunk-min-length").map(|v| v.parse::<usize>().expect("a length"));
    minimum.unwrap_or(0).max(1024)
}

/// `n` distinct bytes.
pub(super) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}
