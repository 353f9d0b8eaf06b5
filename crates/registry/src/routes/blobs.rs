//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with `Range` support.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::{Req, content_digest, empty};
use crate::error::Result;
use crate::oci::{Digest, RepoName};
use crate::registry::BlobRange;

pub(super) async fn get(req: Req<'_>, name: &RepoName, digest: &Digest) -> Result<Response> {
    let registry = &req.state.registry;
    let size = registry.blob_size(name, digest).await?;
    if *req.method == axum::http::Method::GET
        && let Some(url) = registry.blob_redirect(digest).await?
    {
        let headers = [(header::LOCATION, url), (content_digest(), digest.to_string())];
        return Ok(empty(StatusCode::TEMPORARY_REDIRECT, headers));
    }
    let range = req.header(header::RANGE).and_then(BlobRange::parse);
    let mut headers = vec![
        (content_digest(), digest.to_string()),
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::ETAG, format!("\"{digest}\"")),
        (header::CACHE_CONTROL, "max-age=31536000".to_string()),
    ];
    let (status, byte_range) = match range {
        None => (StatusCode::OK, None),
        Some(range) => match range.resolve(size) {
            Some(r) => {
                headers.push((header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1)));
                (StatusCode::PARTIAL_CONTENT, Some(r))
            }
            None => {
                let unsatisfied = (header::CONTENT_RANGE, format!("bytes */{size}"));
                return Ok(empty(StatusCode::RANGE_NOT_SATISFIABLE, [unsatisfied]));
            }
        },
    };
    let length = byte_range.as_ref().map_or(size, |r| r.end - r.start);
    headers.push((header::CONTENT_LENGTH, length.to_string()));
    if *req.method == axum::http::Method::HEAD {
        return Ok(empty(status, headers));
    }
    let stream = registry.blob_reader(digest, byte_range).await?;
    let mut response = empty(status, headers);
    *response.body_mut() = Body::from_stream(stream);
    Ok(response)
}

pub(super) async fn delete(req: Req<'_>, name: &RepoName, digest: &Digest) -> Result<Response> {
    req.state.registry.delete_blob(name, digest).await?;
    Ok(empty(StatusCode::ACCEPTED, [(content_digest(), digest.to_string())]))
}
