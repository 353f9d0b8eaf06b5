//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with `Range` support.

use std::ops::Range;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::{Req, content_digest, empty};
use crate::error::Result;
use crate::oci::{Digest, RepoName};

/// A requested byte range, as parsed from a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRange {
    /// `bytes=start-` or `bytes=start-end` (inclusive end).
    From {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: Option<u64>,
    },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl BlobRange {
    /// Parses a single-range `Range: bytes=...` header. `None` when it is malformed or asks for
    /// several ranges, which is answered with the whole blob (allowed by RFC 9110). A range
    /// whose last byte comes before its first (`bytes=500-0`) is kept: it never resolves, so it
    /// is answered with 416, as distribution does, rather than with the whole blob.
    pub fn parse(value: &str) -> Option<BlobRange> {
        let spec = value.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let number = |s: &str| s.trim().parse::<u64>().ok();
        match (start.trim(), end.trim()) {
            ("", suffix) => Some(BlobRange::Suffix(number(suffix)?)),
            (start, "") => Some(BlobRange::From { start: number(start)?, end: None }),
            (start, end) => Some(BlobRange::From { start: number(start)?, end: Some(number(end)?) }),
        }
    }

    /// Resolves against a blob of `size` bytes; `None` when unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            BlobRange::From { start, end } => {
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                (start < size && start < end).then_some(start..end)
            }
            BlobRange::Suffix(n) => (n > 0 && size > 0).then(|| size.saturating_sub(n)..size),
        }
    }
}

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
    let stream = registry.pull_blob(&req.caller, name, digest, size, byte_range).await?;
    let mut response = empty(status, headers);
    *response.body_mut() = Body::from_stream(stream);
    Ok(response)
}

pub(super) async fn delete(req: Req<'_>, name: &RepoName, digest: &Digest) -> Result<Response> {
    req.state.registry.delete_blob(&req.caller, name, digest).await?;
    Ok(empty(StatusCode::ACCEPTED, [(content_digest(), digest.to_string())]))
}

#[cfg(test)]
mod tests {
    use super::BlobRange;

    #[test]
    fn range_headers() {
        assert_eq!(BlobRange::parse("bytes=0-9"), Some(BlobRange::From { start: 0, end: Some(9) }));
        assert_eq!(BlobRange::parse("bytes=5-"), Some(BlobRange::From { start: 5, end: None }));
        assert_eq!(BlobRange::parse("bytes=-5"), Some(BlobRange::Suffix(5)));
        assert_eq!(BlobRange::parse("bytes=500-0"), Some(BlobRange::From { start: 500, end: Some(0) }));
        for bad in ["bytes=0-1,3-4", "items=0-1", "bytes=a-b", "bytes=-", "bytes=--1"] {
            assert_eq!(BlobRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_resolve_against_size() {
        let from = |start, end| BlobRange::From { start, end };
        assert_eq!(from(0, Some(0)).resolve(10), Some(0..1));
        assert_eq!(from(2, None).resolve(10), Some(2..10));
        assert_eq!(from(5, Some(100)).resolve(10), Some(5..10));
        assert_eq!(from(10, None).resolve(10), None);
        assert_eq!(BlobRange::Suffix(3).resolve(10), Some(7..10));
        assert_eq!(BlobRange::Suffix(30).resolve(10), Some(0..10));
        assert_eq!(BlobRange::Suffix(0).resolve(10), None);
        assert_eq!(from(0, None).resolve(0), None);
        assert_eq!(from(5, Some(2)).resolve(10), None, "last before first: unsatisfiable");
    }
}
