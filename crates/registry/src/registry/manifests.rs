//! Manifests: validated puts (every referenced blob and child manifest must exist), reads by
//! tag or digest, deletes of manifests and tags, and the links that index referrers.

use bytes::Bytes;

use super::immutable::TagChange;
use super::{Caller, Happened, ManifestFacts, Registry, not_found_as};
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::manifest::{self, Kind, MAX_MANIFEST_SIZE, Manifest, References};
use crate::oci::{Algorithm, Digest, Reference, RepoName};

/// A manifest as stored: its digest, bytes and media type.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// The digest it is addressed by.
    pub digest: Digest,
    /// The exact bytes pushed.
    pub body: Bytes,
    /// Its media type.
    pub media_type: String,
}

/// What a manifest put produced.
#[derive(Debug, Clone)]
pub struct PutManifest {
    /// The manifest's digest (in the algorithm of the reference when pushed by digest).
    pub digest: Digest,
    /// Its subject, when it has one (for the `OCI-Subject` header).
    pub subject: Option<Digest>,
}

impl Registry {
    /// Resolves a reference to the digest of a manifest in `name`.
    async fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<Digest> {
        let cache = self.manifests.as_ref();
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => match cache.and_then(|c| c.tag(name, tag)) {
                Some(digest) => digest,
                None => {
                    let link = layout::tag_current_link(name, tag);
                    let digest = self.read_link(&link).await?.ok_or(Error::ManifestUnknown)?;
                    if let Some(cache) = cache {
                        cache.set_tag(name, tag, &digest);
                    }
                    digest
                }
            },
        };
        if !cache.is_some_and(|c| c.has_revision(name, &digest)) {
            if !self.exists(&layout::revision_link(name, &digest)).await? {
                return Err(Error::ManifestUnknown);
            }
            if let Some(cache) = cache {
                cache.set_revision(name, &digest);
            }
        }
        Ok(digest)
    }

    /// Reads a manifest by tag or digest.
    pub async fn get_manifest(&self, name: &RepoName, reference: &Reference) -> Result<StoredManifest> {
        let digest = self.resolve(name, reference).await?;
        let cache = self.manifests.as_ref();
        let body = match cache.and_then(|c| c.body(&digest)) {
            Some(body) => body,
            None => {
                let body = self.storage.get(&layout::blob_data(&digest)).await;
                let body = body.map_err(not_found_as(Error::ManifestUnknown))?;
                // Only bytes that have the digest are kept (a corrupt blob is read again).
                if let Some(cache) = cache
                    && Digest::of(digest.algorithm(), &body) == digest
                {
                    cache.set_body(&digest, &body);
                }
                body
            }
        };
        let media_type = manifest::stored_media_type(&body);
        Ok(StoredManifest { digest, body, media_type })
    }

    /// Reads a manifest by tag or digest for `caller`: a pull.
    pub async fn pull_manifest(
        &self,
        caller: &Caller,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let stored = self.get_manifest(name, reference).await?;
        let facts = ManifestFacts {
            digest: stored.digest.clone(),
            tag: reference.tag().cloned(),
            media_type: stored.media_type.clone(),
            size: stored.body.len() as u64,
        };
        self.publish(name, caller, Happened::ManifestPulled(facts));
        Ok(stored)
    }

    /// Validates and stores a manifest pushed to `reference` with `content_type`.
    pub async fn put_manifest(
        &self,
        caller: &Caller,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge(format!("manifests are limited to {MAX_MANIFEST_SIZE} bytes")));
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if actual != *expected {
                    return Err(Error::DigestInvalid(format!("manifest has digest {actual}")));
                }
                actual
            }
            Reference::Tag(tag) => {
                let digest = Digest::of(Algorithm::Sha256, &body);
                self.check_tag_change(name, tag, TagChange::Point(&digest)).await?;
                digest
            }
        };
        let parsed = Manifest::parse(&body, content_type)?;
        self.gc.protect(self.storage.as_ref(), &named_by(&digest, &parsed)).await?;
        self.check_references(name, &parsed).await?;

        let facts = ManifestFacts {
            digest: digest.clone(),
            tag: reference.tag().cloned(),
            media_type: parsed.media_type.clone(),
            size: body.len() as u64,
        };
        let blob = layout::blob_data(&digest);
        if !self.exists(&blob).await? {
            self.storage.put(&blob, body).await?;
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            self.write_link(&layout::referrer_link(name, subject, &digest), &digest).await?;
        }
        self.write_link(&layout::revision_link(name, &digest), &digest).await?;
        if let Some(cache) = &self.manifests {
            cache.set_revision(name, &digest);
        }
        if let Reference::Tag(tag) = reference {
            // `current` first: a tag is listed as soon as its directory exists, so a crash
            // between the two writes must leave a tag that resolves, not a listed tag that
            // answers 404 (the index entry is only the tag's history).
            self.write_link(&layout::tag_current_link(name, tag), &digest).await?;
            if let Some(cache) = &self.manifests {
                cache.set_tag(name, tag, &digest);
            }
            self.write_link(&layout::tag_index_link(name, tag, &digest), &digest).await?;
        }
        self.publish(name, caller, Happened::ManifestPushed(facts));
        Ok(PutManifest { digest, subject })
    }

    /// Checks that every blob and child manifest the manifest names is in the repository.
    async fn check_references(&self, name: &RepoName, parsed: &Manifest) -> Result<()> {
        for blob in parsed.required_blobs() {
            match self.blob_size(name, &blob.digest).await {
                Ok(size) if size == blob.size => {}
                Ok(size) => {
                    return Err(Error::ManifestInvalid(format!(
                        "descriptor of {} says {} bytes, the blob has {size}",
                        blob.digest, blob.size
                    )));
                }
                Err(Error::BlobUnknown) => return Err(Error::ManifestBlobUnknown(blob.digest.clone())),
                Err(e) => return Err(e),
            }
        }
        if parsed.kind == Kind::Index {
            for child in &parsed.manifests {
                if !self.exists(&layout::revision_link(name, &child.digest)).await? {
                    return Err(Error::ManifestBlobUnknown(child.digest.clone()));
                }
            }
        }
        Ok(())
    }

    /// Deletes a manifest by digest (with every tag pointing at it), or a single tag.
    pub async fn delete_manifest(
        &self,
        caller: &Caller,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<()> {
        let happened = match reference {
            Reference::Tag(tag) => {
                self.check_tag_change(name, tag, TagChange::Delete).await?;
                if let Some(cache) = &self.manifests {
                    cache.forget(name, Some(tag), None);
                }
                let deleted = self.storage.delete(&layout::tag(name, tag)).await;
                deleted.map_err(not_found_as(Error::ManifestUnknown))?;
                Happened::TagDeleted(tag.clone())
            }
            Reference::Digest(digest) => {
                let stored = self.get_manifest(name, reference).await?;
                let mut pointing = Vec::new();
                for tag in self.tags(name).await? {
                    let current = self.read_link(&layout::tag_current_link(name, &tag)).await?;
                    if current.as_ref() == Some(digest) {
                        // Every tag is checked before any is deleted: a refusal changes nothing.
                        self.check_tag_change(name, &tag, TagChange::Delete).await?;
                        pointing.push(tag);
                    }
                }
                for tag in pointing {
                    self.storage.delete(&layout::tag(name, &tag)).await?;
                }
                if let Ok(parsed) = Manifest::read(&stored.body)
                    && let Some(subject) = parsed.subject
                {
                    let link = layout::referrer_link(name, &subject.digest, digest);
                    match self.storage.delete(&link).await {
                        Err(e) if !e.is_not_found() => return Err(e.into()),
                        _ => {}
                    }
                }
                if let Some(cache) = &self.manifests {
                    cache.forget(name, None, Some(digest));
                }
                let deleted = self.storage.delete(&layout::revision_link(name, digest)).await;
                deleted.map_err(not_found_as(Error::ManifestUnknown))?;
                Happened::ManifestDeleted(digest.clone())
            }
        };
        self.publish(name, caller, happened);
        Ok(())
    }
}

/// What a pushed manifest relies on: itself, its config and layers, and its children.
fn named_by(digest: &Digest, manifest: &Manifest) -> Vec<Digest> {
    let References { blobs, children } = manifest.references();
    std::iter::once(digest.clone()).chain(blobs).chain(children).collect()
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::Arc;

    use async_trait::async_trait;
    use futures_util::StreamExt;

    use super::*;
    use crate::oci::Tag;
    use crate::registry::Caller;
    use crate::storage::{
        ByteStream, Condition, ETag, FsStorage, ObjectMeta, Storage, StorageError, StoragePath,
    };

    /// Filesystem storage whose writes of a tag's `current` link fail, as a crash between a
    /// manifest's writes would leave them.
    #[derive(Debug)]
    struct NoCurrentLinks(FsStorage);

    #[async_trait]
    impl Storage for NoCurrentLinks {
        async fn get(&self, path: &StoragePath) -> Result<Bytes, StorageError> {
            self.0.get(path).await
        }
        async fn reader(
            &self,
            path: &StoragePath,
            range: Option<Range<u64>>,
        ) -> Result<ByteStream, StorageError> {
            self.0.reader(path, range).await
        }
        async fn stat(&self, path: &StoragePath) -> Result<ObjectMeta, StorageError> {
            self.0.stat(path).await
        }
        async fn put(&self, path: &StoragePath, data: Bytes) -> Result<(), StorageError> {
            if path.as_str().ends_with("/current/link") {
                let source = std::io::Error::other("injected: the server died here");
                return Err(StorageError::Backend { path: path.clone(), source });
            }
            self.0.put(path, data).await
        }
        async fn get_tagged(&self, path: &StoragePath) -> Result<(Bytes, ETag), StorageError> {
            self.0.get_tagged(path).await
        }
        async fn put_if(
            &self,
            path: &StoragePath,
            data: Bytes,
            condition: Condition<'_>,
        ) -> Result<ETag, StorageError> {
            self.0.put_if(path, data, condition).await
        }
        async fn list(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError> {
            self.0.list(dir).await
        }
        async fn append(
            &self,
            path: &StoragePath,
            offset: u64,
            data: ByteStream,
        ) -> Result<u64, StorageError> {
            self.0.append(path, offset, data).await
        }
        async fn rename(&self, from: &StoragePath, to: &StoragePath, size: u64) -> Result<(), StorageError> {
            self.0.rename(from, to, size).await
        }
        async fn delete(&self, path: &StoragePath) -> Result<(), StorageError> {
            self.0.delete(path).await
        }
    }

    #[tokio::test]
    async fn a_tag_write_cut_short_lists_no_tag_that_does_not_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::new(Arc::new(NoCurrentLinks(FsStorage::new(dir.path()))));
        let name = RepoName::parse("cut/short").expect("a name");
        let config = Bytes::from_static(b"{}");
        let digest = Digest::of(Algorithm::Sha256, &config);
        let id = registry.start_upload(&Caller::default(), &name).await.expect("start");
        let body = futures_util::stream::iter(vec![Ok(config.clone())]).boxed();
        registry
            .finish_upload(&Caller::default(), &name, &id, &digest, None, Some(body))
            .await
            .expect("finish");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.to_string(), "size": 2},
            "layers": [],
        });
        let tag = Reference::Tag(Tag::parse("v1").expect("a tag"));
        let put = registry
            .put_manifest(&Caller::default(), &name, &tag, None, Bytes::from(manifest.to_string()))
            .await;
        assert!(put.is_err(), "the injected failure is reported");
        // Whatever the crash left, a listed tag must resolve.
        for listed in registry.tags(&name).await.unwrap_or_default() {
            let found = registry.get_manifest(&name, &Reference::Tag(listed.clone())).await;
            assert!(found.is_ok(), "tag {listed:?} is listed but does not resolve");
        }
    }
}
