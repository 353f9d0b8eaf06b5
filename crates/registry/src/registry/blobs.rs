//! Blobs in a repository: existence, reads of byte ranges, links, mounts and deletes.

use std::ops::Range;

use super::{Caller, Happened, Registry, not_found_as};
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::{Digest, RepoName};
use crate::storage::ByteStream;

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

    /// Streams a blob of `size` bytes (or a range of it) that [`Registry::blob_size`] found, to
    /// `caller`: a pull.
    pub async fn pull_blob(
        &self,
        caller: &Caller,
        name: &RepoName,
        digest: &Digest,
        size: u64,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream> {
        let length = range.as_ref().map_or(size, |r| r.end - r.start);
        let stream = self.blob_reader(digest, range).await?;
        self.publish(name, caller, Happened::BlobPulled { digest: digest.clone(), size, length });
        Ok(stream)
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
        caller: &Caller,
        name: &RepoName,
        from: Option<&RepoName>,
        digest: &Digest,
    ) -> Result<bool> {
        let source_ok = match from {
            Some(from) => self.blob_linked(from, digest).await?,
            None => true,
        };
        self.gc.protect(self.storage.as_ref(), std::slice::from_ref(digest)).await?;
        if !source_ok {
            return Ok(false);
        }
        let size = match self.storage.stat(&layout::blob_data(digest)).await {
            Ok(meta) => meta.size,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.link_blob(name, digest).await?;
        let from = from.cloned();
        self.publish(name, caller, Happened::BlobMounted { digest: digest.clone(), size, from });
        Ok(true)
    }

    /// Removes a blob from a repository (the bytes stay until garbage collection).
    pub async fn delete_blob(&self, caller: &Caller, name: &RepoName, digest: &Digest) -> Result<()> {
        let deleted = self.storage.delete(&layout::layer_link(name, digest)).await;
        deleted.map_err(not_found_as(Error::BlobUnknown))?;
        self.publish(name, caller, Happened::BlobDeleted(digest.clone()));
        Ok(())
    }
}
