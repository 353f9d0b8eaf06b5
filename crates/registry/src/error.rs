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
    #[error("authentication required")]
    Unauthorized {
        /// The Basic realm to challenge with.
        realm: String,
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
    /// Too many failed attempts from this client.
    #[error("too many requests")]
    TooManyRequests,
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
            Error::ManifestInvalid(_) | Error::TagInvalid => "MANIFEST_INVALID",
            Error::ManifestUnknown => "MANIFEST_UNKNOWN",
            Error::NameInvalid => "NAME_INVALID",
            Error::NameUnknown => "NAME_UNKNOWN",
            Error::SizeInvalid(_) | Error::TooLarge(_) => "SIZE_INVALID",
            Error::Unauthorized { .. } => "UNAUTHORIZED",
            Error::Unsupported(_) | Error::RouteUnknown => "UNSUPPORTED",
            // The spec has no pagination code; UNSUPPORTED covers "an invalid set of parameters".
            Error::PaginationInvalid => "UNSUPPORTED",
            Error::TooManyRequests => "TOOMANYREQUESTS",
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
            Error::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Error::Storage(e) if e.is_not_found() => StatusCode::NOT_FOUND,
            Error::Storage(StorageError::Body(_)) => StatusCode::BAD_REQUEST,
            Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
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
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        }
        let body = serde_json::json!({
            "errors": [{"code": self.code(), "message": self.to_string(), "detail": null}]
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Error::Unauthorized { realm } = &self {
            let challenge = format!("Basic realm=\"{}\"", realm.replace(['"', '\\'], ""));
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// The result of a registry operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
