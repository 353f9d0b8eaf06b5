//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic `?digest=`, or
//! `?mount=&from=`), `PATCH`, `PUT ?digest=`, `GET` (status) and `DELETE` of a session.

use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;

use super::{Req, content_digest, empty};
use crate::error::{Error, Result};
use crate::oci::{Digest, RepoName};
use crate::registry::UploadId;

fn upload_uuid() -> HeaderName {
    HeaderName::from_static("docker-upload-uuid")
}

/// The headers describing an upload session in progress: where to send the next chunk and
/// which bytes the registry holds.
fn session_headers(name: &RepoName, id: &UploadId, size: u64) -> Vec<(HeaderName, String)> {
    vec![
        (header::LOCATION, format!("/v2/{name}/blobs/uploads/{}", id.as_str())),
        (header::RANGE, format!("0-{}", size.saturating_sub(1))),
        (upload_uuid(), id.as_str().to_string()),
        (header::CONTENT_LENGTH, "0".to_string()),
    ]
}

/// The answer to a committed blob.
fn created(name: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (content_digest(), digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_string()),
        ],
    )
}

/// The digest in the `digest` query parameter, required to finish an upload.
fn query_digest(req: &Req<'_>, key: &str) -> Result<Option<Digest>> {
    req.query.get(key).map(|d| d.parse().map_err(Error::from)).transpose()
}

pub(super) async fn start(mut req: Req<'_>, name: &RepoName) -> Result<Response> {
    let registry = req.state.registry.clone();
    if let Some(digest) = query_digest(&req, "mount")? {
        let from = req.query.get("from").map(|f| RepoName::parse(f).ok_or(Error::NameInvalid)).transpose()?;
        if registry.mount_blob(&req.caller, name, from.as_ref(), &digest).await? {
            return Ok(created(name, &digest));
        }
    } else if let Some(digest) = query_digest(&req, "digest")? {
        let id = registry.start_upload(&req.caller, name).await?;
        let body = req.take_stream();
        registry.finish_upload(&req.caller, name, &id, &digest, None, Some(body)).await?;
        return Ok(created(name, &digest));
    }
    let id = registry.start_upload(&req.caller, name).await?;
    Ok(empty(StatusCode::ACCEPTED, session_headers(name, &id, 0)))
}

/// The first byte of a chunk's `Content-Range: <start>-<end>` header (the spec's form, without
/// the `bytes ` unit; that form is accepted too). `BLOB_UPLOAD_INVALID` when malformed or when
/// `end < start`.
pub fn content_range_start(value: &str) -> Result<u64> {
    let value = value.trim();
    let value = value.strip_prefix("bytes ").unwrap_or(value);
    let (start, end) = value.split_once('-').ok_or_else(bad_range)?;
    let start: u64 = start.trim().parse().map_err(|_| bad_range())?;
    let end_ok = end.split('/').next().is_some_and(|e| e.trim().parse::<u64>().is_ok_and(|e| e >= start));
    if !end_ok {
        return Err(bad_range());
    }
    Ok(start)
}

fn bad_range() -> Error {
    Error::BlobUploadInvalid("malformed Content-Range".into())
}

pub(super) async fn patch(mut req: Req<'_>, name: &RepoName, id: &UploadId) -> Result<Response> {
    let registry = req.state.registry.clone();
    let start = req.header(header::CONTENT_RANGE).map(content_range_start).transpose()?;
    let size = match registry.append_upload(name, id, start, req.take_stream()).await {
        Err(Error::ChunkOutOfOrder { size }) => return Ok(out_of_order(name, id, size)),
        other => other?,
    };
    Ok(empty(StatusCode::ACCEPTED, session_headers(name, id, size)))
}

/// 416 for a chunk that does not start where the upload ends, with the session's `Location`
/// and `Range` so the client can resume.
fn out_of_order(name: &RepoName, id: &UploadId, size: u64) -> Response {
    let mut response = axum::response::IntoResponse::into_response(Error::ChunkOutOfOrder { size });
    for (k, v) in session_headers(name, id, size).into_iter().take(3) {
        if let Ok(v) = v.parse() {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

pub(super) async fn finish(mut req: Req<'_>, name: &RepoName, id: &UploadId) -> Result<Response> {
    let registry = req.state.registry.clone();
    let digest = query_digest(&req, "digest")?
        .ok_or_else(|| Error::DigestInvalid("the digest query parameter is required".into()))?;
    let start = req.header(header::CONTENT_RANGE).map(content_range_start).transpose()?;
    let body = req.take_stream();
    match registry.finish_upload(&req.caller, name, id, &digest, start, Some(body)).await {
        Err(Error::ChunkOutOfOrder { size }) => Ok(out_of_order(name, id, size)),
        other => other.map(|()| created(name, &digest)),
    }
}

pub(super) async fn status(req: Req<'_>, name: &RepoName, id: &UploadId) -> Result<Response> {
    let size = req.state.registry.upload_size(name, id).await?;
    Ok(empty(StatusCode::NO_CONTENT, session_headers(name, id, size)))
}

pub(super) async fn cancel(req: Req<'_>, name: &RepoName, id: &UploadId) -> Result<Response> {
    req.state.registry.cancel_upload(&req.caller, name, id).await?;
    Ok(empty(StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0".to_string())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(content_range_start("0-99").ok(), Some(0));
        assert_eq!(content_range_start("bytes 100-199/*").ok(), Some(100));
        assert!(content_range_start("5-2").is_err());
        assert!(content_range_start("x-2").is_err());
        assert!(content_range_start("12").is_err());
    }
}
