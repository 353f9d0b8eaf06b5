//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};

use super::{Req, content_digest, empty};
use crate::error::{Error, Result};
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::oci::{Reference, RepoName};

pub(super) async fn get(req: Req<'_>, name: &RepoName, reference: &Reference) -> Result<Response> {
    let registry = &req.state.registry;
    let stored = if *req.method == axum::http::Method::HEAD {
        registry.get_manifest(name, reference).await?
    } else {
        registry.pull_manifest(&req.caller, name, reference).await?
    };
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

/// How much of a manifest body over the cap is read (and dropped) before the 413: answering
/// while the client is still sending makes hyper close the connection with unread bytes, which
/// resets it, and the client sees the reset instead of the 413. A body longer than this is
/// cut off anyway.
const DRAIN_LIMIT: usize = 4 * MAX_MANIFEST_SIZE;

/// Reads a manifest body of at most [`MAX_MANIFEST_SIZE`] bytes, holding no more than that.
async fn read_manifest(body: Body) -> Result<Bytes> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut manifest = BytesMut::new();
    let mut total = 0usize;
    while total <= DRAIN_LIMIT
        && let Some(chunk) = stream.next().await
    {
        // A client that stalls (body timeout) or goes away: a bad request, not a size problem.
        let chunk =
            chunk.map_err(|e| Error::ManifestInvalid(format!("the manifest could not be read: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total <= MAX_MANIFEST_SIZE {
            manifest.extend_from_slice(&chunk);
        }
    }
    if total > MAX_MANIFEST_SIZE {
        return Err(Error::TooLarge(format!("manifests are limited to {MAX_MANIFEST_SIZE} bytes")));
    }
    Ok(manifest.freeze())
}

pub(super) async fn put(mut req: Req<'_>, name: &RepoName, reference: &Reference) -> Result<Response> {
    let registry = req.state.registry.clone();
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_string);
    let body = read_manifest(std::mem::replace(&mut req.body, Body::empty())).await?;
    let put = registry.put_manifest(&req.caller, name, reference, content_type.as_deref(), body).await?;
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
    req.state.registry.delete_manifest(&req.caller, name, reference).await?;
    Ok(empty(StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0".to_string())]))
}
