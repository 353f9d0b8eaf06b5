//! The registry's OCI logic over any [`Storage`]: blobs, upload sessions, manifests, tags,
//! the catalog and referrers. Written once, for every backend; knows nothing of HTTP.

mod blobs;
mod blocks;
mod cache;
pub mod events;
mod immutable;
mod listing;
mod manifests;
pub mod pins;
mod referrers;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::TagsConfig;
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::{Digest, RepoName};
use crate::storage::{Storage, StorageError, StoragePath};

pub use events::{Caller, Event, Happened, ManifestFacts, Subscriber};
pub use manifests::{PutManifest, StoredManifest};
pub use pins::spawn_watch;
pub use referrers::{MAX_PAGE as MAX_REFERRERS_PAGE, ReferrersPage, ReferrersQuery};
pub use uploads::{UploadId, spawn_tidy};

/// A registry: its storage and the state of the upload sessions this process has seen.
#[derive(Debug)]
pub struct Registry {
    storage: Arc<dyn Storage>,
    uploads: uploads::Sessions,
    /// Garbage collection's push side: pins what a push relies on while a collection runs.
    gc: pins::Guard,
    /// The largest blob an upload may grow to, in bytes.
    max_blob_size: Option<u64>,
    /// Who hears of what the registry does.
    subscribers: events::Subscribers,
    /// Which tags may not be moved or deleted.
    tag_rules: TagsConfig,
    /// Manifest reads remembered, when storage is remote (see [`cache`]).
    manifests: Option<cache::ManifestCache>,
}

impl Registry {
    /// A registry over `storage`, with no limit on blob size.
    pub fn new(storage: Arc<dyn Storage>) -> Registry {
        Registry {
            storage,
            uploads: uploads::Sessions::default(),
            gc: pins::Guard::default(),
            max_blob_size: None,
            subscribers: events::Subscribers::default(),
            tag_rules: TagsConfig::default(),
            manifests: None,
        }
    }

    /// Remembers manifest reads: bodies by digest for good, tags and revisions for `ttl`, the
    /// longest another server's push or delete then takes to show here (see `registry::cache`).
    pub fn with_manifest_cache(self, ttl: Duration) -> Registry {
        Registry { manifests: Some(cache::ManifestCache::new(ttl)), ..self }
    }

    /// Manifest lookups answered from the cache and those that went to storage, since start;
    /// `None` without a cache.
    pub fn manifest_cache_stats(&self) -> Option<(u64, u64)> {
        self.manifests.as_ref().map(cache::ManifestCache::stats)
    }

    /// Makes the tags that `rules` name immutable (see [`immutable`]).
    pub fn with_tag_rules(self, rules: TagsConfig) -> Registry {
        Registry { tag_rules: rules, ..self }
    }

    /// Limits uploads to blobs of at most `max` bytes (`None`: no limit).
    pub fn with_max_blob_size(self, max: Option<u64>) -> Registry {
        Registry { max_blob_size: max, ..self }
    }

    /// Tells `subscriber` of every event from now on.
    pub fn with_subscriber(mut self, subscriber: Arc<dyn Subscriber>) -> Registry {
        self.subscribers.add(subscriber);
        self
    }

    /// Tells the subscribers that `happened` in `name` on `caller`'s request.
    fn publish(&self, name: &RepoName, caller: &Caller, happened: Happened) {
        self.subscribers.publish(name, caller, happened);
    }

    /// The storage backend.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// The storage, shared (for a task that outlives a borrow of the registry).
    pub fn shared_storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    /// Garbage collection's serving side (see [`pins`]).
    pub fn gc_guard(&self) -> &pins::Guard {
        &self.gc
    }

    /// Reads a link file and parses the digest it holds; `None` when it does not exist.
    async fn read_link(&self, path: &StoragePath) -> Result<Option<Digest>> {
        match self.storage.get(path).await {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let digest = text.trim().parse().map_err(|_| StorageError::Backend {
                    path: path.clone(),
                    source: std::io::Error::other(format!("corrupt link {text:?}")),
                })?;
                Ok(Some(digest))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a link file pointing at `digest`.
    async fn write_link(&self, path: &StoragePath, digest: &Digest) -> Result<()> {
        self.storage.put(path, Bytes::from(digest.to_string())).await?;
        Ok(())
    }

    /// True when `path` holds an object.
    async fn exists(&self, path: &StoragePath) -> Result<bool> {
        match self.storage.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// True when the repository holds a manifest (a revision, tag or referrer link): what
    /// makes it a repository for the catalog and the tags list alike.
    async fn holds_manifests(&self, name: &RepoName) -> Result<bool> {
        Ok(self.storage.list(&layout::repository(name)).await?.iter().any(|child| child == "_manifests"))
    }
}

/// Maps `NotFound` to `err`, leaving other failures as they are.
fn not_found_as(err: Error) -> impl FnOnce(StorageError) -> Error {
    move |e| if e.is_not_found() { err } else { e.into() }
}
