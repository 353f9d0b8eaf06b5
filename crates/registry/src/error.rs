//! The registry's errors: each variant maps, in one place, to the distribution spec's error
//! code and HTTP status, and renders the spec's `{"errors":[...]}` body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::oci::{Digest, DigestError, ManifestError, ReferenceError};
use crate::storage::StorageError;

/// A registry API error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The blob is not known to the repository.
    #[error("blob unknown to registry")]
    BlobUnknown,
    /// The upload is invalid (bad chunk, bad body).
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk did not start where the upload ends.
    #[error("chunk out of order: the upload holds {size} bytes")]
    ChunkOutOfOrder {
        /// The upload's current size.
        size: u64,
    },
    /// The upload session does not exist.
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// A digest was malformed, unsupported, or did not match the content.
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    /// A manifest references a blob or manifest the repository does not have.
    #[error("blob unknown to registry: {0}")]
    ManifestBlobUnknown(Digest),
    /// The manifest is malformed or inconsistent.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// The manifest is not known to the repository.
    #[error("manifest unknown")]
    ManifestUnknown,
    /// The repository name is not valid.
    #[error("invalid repository name")]
    NameInvalid,
    /// The repository is not known.
    #[error("repository name not known to registry")]
    NameUnknown,
    /// A tag was not valid.
    #[error("invalid tag")]
    TagInvalid,
    /// A size did not match, or content was too large.
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    /// Content larger than the registry accepts.
    #[error("content too large: {0}")]
    TooLarge(String),
    /// Authentication is required or failed.
    #[error("{}", if *.rejected { "authentication failed: wrong user name or password" } else { "authentication required" })]
    Unauthorized {
        /// The Basic realm to challenge with.
        realm: String,
        /// Credentials were given and refused (rather than missing).
        rejected: bool,
        /// What the request asked for, as distribution reports it in the error's detail.
        access: Vec<Access>,
    },
    /// A rule of the registry forbids the operation (an immutable tag moved or deleted).
    #[error("requested access to the resource is denied: {0}")]
    TagImmutable(String),
    /// Valid credentials that do not grant what the request needs.
    #[error("requested access to the resource is denied")]
    Denied {
        /// What the request asked for (the detail, as for [`Error::Unauthorized`]).
        access: Vec<Access>,
    },
    /// The operation is not supported.
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    /// No such API route.
    #[error("no such API route")]
    RouteUnknown,
    /// The `n` pagination parameter is not a number.
    #[error("invalid number of results requested")]
    PaginationInvalid,
    /// Too many requests of a kind: failed logins of this client and user, or upload sessions.
    #[error("{reason}: retry in {} s", retry_after_secs(*.retry_after))]
    TooManyRequests {
        /// What there is too much of.
        reason: &'static str,
        /// When the client may try again (the `Retry-After` header).
        retry_after: std::time::Duration,
    },
    /// Storage failed; details are logged, not sent to the client.
    #[error("storage failure")]
    Storage(#[from] StorageError),
}

impl Error {
    /// The spec's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BlobUnknown => "BLOB_UNKNOWN",
            Error::BlobUploadInvalid(_) | Error::ChunkOutOfOrder { .. } => "BLOB_UPLOAD_INVALID",
            Error::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Error::DigestInvalid(_) => "DIGEST_INVALID",
            Error::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            Error::ManifestInvalid(_) => "MANIFEST_INVALID",
            Error::TagInvalid => "TAG_INVALID",
            Error::ManifestUnknown => "MANIFEST_UNKNOWN",
            Error::NameInvalid => "NAME_INVALID",
            Error::NameUnknown => "NAME_UNKNOWN",
            Error::SizeInvalid(_) | Error::TooLarge(_) => "SIZE_INVALID",
            Error::Unauthorized { .. } => "UNAUTHORIZED",
            Error::TagImmutable(_) => "DENIED",
            Error::Denied { .. } => "DENIED",
            Error::Unsupported(_) | Error::RouteUnknown => "UNSUPPORTED",
            // The spec has no pagination code; UNSUPPORTED covers "an invalid set of parameters".
            Error::PaginationInvalid => "UNSUPPORTED",
            Error::TooManyRequests { .. } => "TOOMANYREQUESTS",
            Error::Storage(_) => "UNKNOWN",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BlobUnknown
            | Error::BlobUploadUnknown
            | Error::ManifestUnknown
            | Error::NameUnknown
            | Error::RouteUnknown => StatusCode::NOT_FOUND,
            Error::ChunkOutOfOrder { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            // 409, not 403: the caller may push; the tag's state conflicts with the request.
            Error::TagImmutable(_) => StatusCode::CONFLICT,
            Error::Denied { .. } => StatusCode::FORBIDDEN,
            Error::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Storage(e) if e.is_not_found() => StatusCode::NOT_FOUND,
            Error::Storage(StorageError::Body(_)) => StatusCode::BAD_REQUEST,
            Error::Storage(
                StorageError::NotFound(_)
                | StorageError::OffsetMismatch { .. }
                | StorageError::Precondition(_)
                | StorageError::Backend { .. },
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::BlobUploadInvalid(_)
            | Error::DigestInvalid(_)
            | Error::ManifestBlobUnknown(_)
            | Error::ManifestInvalid(_)
            | Error::NameInvalid
            | Error::TagInvalid
            | Error::SizeInvalid(_)
            | Error::PaginationInvalid => StatusCode::BAD_REQUEST,
        }
    }

    /// The error's `detail`: never `null`, since Go clients (docker, containerd) only treat an
    /// error with a detail as the registry's final word (with `null` docker retries a push
    /// with wrong credentials for a minute). What a variant knows goes in; else `{}`.
    pub fn detail(&self) -> serde_json::Value {
        match self {
            Error::Unauthorized { access, .. } | Error::Denied { access } => serde_json::json!(access),
            Error::ManifestBlobUnknown(digest) => serde_json::json!(digest.to_string()),
            Error::ChunkOutOfOrder { size } => serde_json::json!({ "size": size }),
            Error::TooManyRequests { retry_after, .. } => {
                serde_json::json!({ "retryAfterSeconds": retry_after_secs(*retry_after) })
            }
            _ => serde_json::json!({}),
        }
    }
}

/// Whole seconds to wait, rounded up and at least 1 (`Retry-After` takes whole seconds).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX).max(1)
}

/// One thing a request asked for, in distribution's shape (`Type`, `Class`, `Name`,
/// `Action`): sent in the detail of a `401` or `403`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "Type")]
    pub kind: &'static str,
    /// Always empty (distribution's resource class).
    #[serde(rename = "Class")]
    pub class: &'static str,
    /// The repository name, or `catalog`.
    #[serde(rename = "Name")]
    pub name: String,
    /// `pull`, `push`, `delete` or `*`.
    #[serde(rename = "Action")]
    pub action: &'static str,
}

impl From<DigestError> for Error {
    fn from(e: DigestError) -> Error {
        Error::DigestInvalid(e.to_string())
    }
}

impl From<ReferenceError> for Error {
    fn from(e: ReferenceError) -> Error {
        match e {
            ReferenceError::InvalidTag => Error::TagInvalid,
            ReferenceError::InvalidDigest(d) => d.into(),
        }
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Error {
        match e {
            ManifestError::Invalid(m) => Error::ManifestInvalid(m),
            ManifestError::Unsupported(m) => Error::ManifestInvalid(m),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.response()
    }
}

impl Error {
    /// The error's response: its status, its code in the spec's JSON body, and the headers it
    /// calls for. (By reference, for an error shared with other layers of a request.)
    pub fn response(&self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(self), "request failed");
        }
        let body = serde_json::json!({
            "errors": [{"code": self.code(), "message": self.to_string(), "detail": self.detail()}]
        });
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            Error::Unauthorized { realm, .. } => {
                let challenge = format!("Basic realm=\"{}\"", realm.replace(['"', '\\'], ""));
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Error::TooManyRequests { retry_after, .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, retry_after_secs(*retry_after).into());
            }
            _ => {}
        }
        response
    }
}

/// The result of a registry operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoragePath;

    /// One error of each kind a client can be sent.
    fn every_error() -> Vec<Error> {
        let digest: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .expect("digest");
        let access = Access { kind: "repository", class: "", name: "app".into(), action: "push" };
        vec![
            Error::BlobUnknown,
            Error::BlobUploadInvalid("bad chunk".into()),
            Error::ChunkOutOfOrder { size: 10 },
            Error::BlobUploadUnknown,
            Error::DigestInvalid("mismatch".into()),
            Error::ManifestBlobUnknown(digest),
            Error::ManifestInvalid("not JSON".into()),
            Error::ManifestUnknown,
            Error::NameInvalid,
            Error::NameUnknown,
            Error::TagInvalid,
            Error::SizeInvalid("short".into()),
            Error::TooLarge("4 MiB".into()),
            Error::Unauthorized { realm: "r".into(), rejected: true, access: vec![access.clone()] },
            Error::Denied { access: vec![access] },
            Error::TagImmutable("tag v1 is immutable".into()),
            Error::Unsupported("DELETE".into()),
            Error::RouteUnknown,
            Error::PaginationInvalid,
            Error::TooManyRequests {
                reason: "failed logins",
                retry_after: std::time::Duration::from_millis(1500),
            },
            Error::TooManyRequests { reason: "upload sessions", retry_after: std::time::Duration::ZERO },
            Error::Storage(StorageError::NotFound(StoragePath::new(["gone"]))),
            Error::Storage(StorageError::Backend {
                path: StoragePath::new(["blobs"]),
                source: std::io::Error::other("disk failed"),
            }),
        ]
    }

    /// Issues 16.2 and 16.3: every error body names a code, a message and a detail that is not
    /// `null` (Go clients retry an error whose detail is null); every `429` says when to come
    /// back (`Retry-After`, whole seconds, at least 1), whatever the limit that refused it.
    #[tokio::test]
    async fn every_error_has_a_detail_and_every_429_a_retry_after() {
        for error in every_error() {
            let what = format!("{error:?}");
            let response = error.into_response();
            let status = response.status();
            let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("the body");
            let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
            let entry = &body["errors"][0];
            assert!(entry["code"].is_string() && entry["message"].is_string(), "{what}: {body}");
            assert!(!entry["detail"].is_null(), "{what}: a null detail: {body}");
            if status == StatusCode::TOO_MANY_REQUESTS {
                let seconds: u64 = retry_after
                    .and_then(|v| v.to_str().ok().and_then(|v| v.parse().ok()))
                    .unwrap_or_else(|| panic!("{what}: a 429 without a Retry-After in seconds"));
                assert!(seconds >= 1, "{what}: Retry-After: {seconds}");
            }
        }
    }
}
