//! Blobs in a repository: existence, reads with ranges, links, mounts and deletes.

use std::ops::Range;

use super::{Registry, not_found_as};
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::{Digest, RepoName};
use crate::storage::ByteStream;

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

impl Registry {
    /// The size of a blob readable in `name`, or `BlobUnknown`.
    pub async fn blob_size(&self, name: &RepoName, digest: &Digest) -> Result<u64> {
        self.gc.protect(self.storage.as_ref(), std::slice::from_ref(digest)).await?;
        if !self.blob_linked(name, digest).await? {
            return Err(Error::BlobUnknown);
        }
        let meta = self.storage.stat(&layout::blob_data(digest)).await;
        Ok(meta.map_err(not_found_as(Error::BlobUnknown))?.size)
    }

    /// Streams a blob (or a range of it) that [`Registry::blob_size`] found.
    pub async fn blob_reader(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        let stream = self.storage.reader(&layout::blob_data(digest), range).await;
        stream.map_err(not_found_as(Error::BlobUnknown))
    }

    /// Where a client may fetch a blob that [`Registry::blob_size`] found directly from the
    /// storage, when the backend redirects reads.
    pub async fn blob_redirect(&self, digest: &Digest) -> Result<Option<String>> {
        let url = self.storage.redirect_url(&layout::blob_data(digest)).await;
        url.map_err(not_found_as(Error::BlobUnknown))
    }

    /// Whether a blob is readable in `name`: linked as a layer, or a manifest of it.
    async fn blob_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self.exists(&layout::layer_link(name, digest)).await?
            || self.exists(&layout::revision_link(name, digest)).await?)
    }

    /// Makes a stored blob readable in `name`.
    pub(super) async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.write_link(&layout::layer_link(name, digest), digest).await
    }

    /// Cross-repository mount: links a blob into `name` if it is readable in `from`, or when no
    /// `from` is given, if the registry holds it at all. Returns whether it was mounted.
    pub async fn mount_blob(
        &self,
        name: &RepoName,
        from: Option<&RepoName>,
        digest: &Digest,
    ) -> Result<bool> {
        let source_ok = match from {
            Some(from) => self.blob_linked(from, digest).await?,
            None => true,
        };
        self.gc.protect(self.storage.as_ref(), std::slice::from_ref(digest)).await?;
        if !source_ok || !self.exists(&layout::blob_data(digest)).await? {
            return Ok(false);
        }
        self.link_blob(name, digest).await?;
        Ok(true)
    }

    /// Removes a blob from a repository (the bytes stay until garbage collection).
    pub async fn delete_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let deleted = self.storage.delete(&layout::layer_link(name, digest)).await;
        deleted.map_err(not_found_as(Error::BlobUnknown))
    }
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
