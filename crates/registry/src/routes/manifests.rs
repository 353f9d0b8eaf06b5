//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;

use super::{Req, content_digest, empty};
use crate::error::{Error, Result};
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::oci::{Reference, RepoName};

pub(super) async fn get(req: Req<'_>, name: &RepoName, reference: &Reference) -> Result<Response> {
    let stored = req.state.registry.get_manifest(name, reference).await?;
    let headers = [
        (header::CONTENT_TYPE, stored.media_type),
        (content_digest(), stored.digest.to_string()),
        (header::CONTENT_LENGTH, stored.body.len().to_string()),
        (header::ETAG, format!("\"{}\"", stored.digest)),
    ];
    let mut response = empty(StatusCode::OK, headers);
    if *req.method != axum::http::Method::HEAD {
        *response.body_mut() = Body::from(stored.body);
    }
    Ok(response)
}

pub(super) async fn put(req: Req<'_>, name: &RepoName, reference: &Reference) -> Result<Response> {
    let registry = req.state.registry.clone();
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_string);
    let body = axum::body::to_bytes(req.body, MAX_MANIFEST_SIZE + 1)
        .await
        .map_err(|e| Error::TooLarge(format!("manifests are limited to {MAX_MANIFEST_SIZE} bytes ({e})")))?;
    let put = registry.put_manifest(name, reference, content_type.as_deref(), body).await?;
    let mut headers = vec![
        (header::LOCATION, format!("/v2/{name}/manifests/{}", put.digest)),
        (content_digest(), put.digest.to_string()),
        (header::CONTENT_LENGTH, "0".to_string()),
    ];
    if let Some(subject) = put.subject {
        headers.push((HeaderName::from_static("oci-subject"), subject.to_string()));
    }
    Ok(empty(StatusCode::CREATED, headers))
}

pub(super) async fn delete(req: Req<'_>, name: &RepoName, reference: &Reference) -> Result<Response> {
    req.state.registry.delete_manifest(name, reference).await?;
    Ok(empty(StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0".to_string())]))
}
