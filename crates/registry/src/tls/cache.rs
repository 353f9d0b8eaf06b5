//! Where ACME keeps its account and certificates: a private directory on the server's disk, or,
//! when the registry stores in an object store (S3), objects in that store, so that a new
//! instance on the same bucket serves the certificate the last one was issued instead of
//! ordering another (Let's Encrypt allows 5 duplicate certificates a week).
//!
//! In the object store the cache lies under [`STORE_PREFIX`], beside the registry's
//! `docker/registry/v2` tree, which the catalog and garbage collection walk; nothing of the
//! registry ever lists or deletes outside that tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::acme::AcmeError;
use crate::storage::{Storage, StorageError, StoragePath};

/// The object-store prefix (below the storage's root directory) of the ACME cache.
pub const STORE_PREFIX: &str = "regctl/acme";

/// The ACME cache of one ACME directory: files or objects named `account.json` and
/// `<host>.pem`.
#[derive(Debug, Clone)]
pub enum AcmeCache {
    /// A directory on the local disk, readable by the server's user only.
    Dir(PathBuf),
    /// Objects under a prefix of the registry's object store (private to the bucket's readers).
    Store {
        /// The registry's storage.
        storage: Arc<dyn Storage>,
        /// Where the objects lie.
        prefix: StoragePath,
    },
}

impl AcmeCache {
    /// The cache of the ACME directory whose key is `directory` (a single path component):
    /// in `store` when the registry stores in an object store, else under `dir` on disk.
    pub fn new(dir: &Path, store: Option<Arc<dyn Storage>>, directory: &str) -> AcmeCache {
        match store {
            Some(storage) => {
                AcmeCache::Store { storage, prefix: StoragePath::new([STORE_PREFIX, directory]) }
            }
            None => AcmeCache::Dir(dir.join(directory)),
        }
    }

    /// Makes the cache usable: creates the private directory (an object store needs nothing).
    pub async fn prepare(&self) -> Result<(), AcmeError> {
        let AcmeCache::Dir(dir) = self else { return Ok(()) };
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(dir).await.map_err(|e| self.error(None, e))
    }

    /// Where `name` is kept, for logs and errors.
    pub fn location(&self, name: &str) -> String {
        match self {
            AcmeCache::Dir(dir) => dir.join(name).display().to_string(),
            AcmeCache::Store { prefix, .. } => format!("storage object {}/{name}", prefix.as_str()),
        }
    }

    /// The bytes of `name`, `None` when there are none.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, AcmeError> {
        match self {
            AcmeCache::Dir(dir) => match tokio::fs::read(dir.join(name)).await {
                Ok(data) => Ok(Some(data)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.error(Some(name), e)),
            },
            AcmeCache::Store { storage, prefix } => match storage.get(&prefix.join(name)).await {
                Ok(data) => Ok(Some(data.to_vec())),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(self.error(Some(name), storage_io(e))),
            },
        }
    }

    /// Replaces `name` with `data` whole: a crash never leaves half a key.
    pub async fn write(&self, name: &str, data: &[u8]) -> Result<(), AcmeError> {
        match self {
            AcmeCache::Dir(dir) => {
                write_private(&dir.join(name), data).await.map_err(|e| self.error(Some(name), e))
            }
            AcmeCache::Store { storage, prefix } => storage
                .put(&prefix.join(name), Bytes::copy_from_slice(data))
                .await
                .map_err(|e| self.error(Some(name), storage_io(e))),
        }
    }

    /// Removes `name`; nothing there is no error.
    pub async fn remove(&self, name: &str) -> Result<(), AcmeError> {
        let result = match self {
            AcmeCache::Dir(dir) => tokio::fs::remove_file(dir.join(name)).await,
            AcmeCache::Store { storage, prefix } => match storage.delete(&prefix.join(name)).await {
                Err(e) if !e.is_not_found() => Err(storage_io(e)),
                _ => Ok(()),
            },
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.error(Some(name), e)),
            _ => Ok(()),
        }
    }

    fn error(&self, name: Option<&str>, source: std::io::Error) -> AcmeError {
        let (location, hint) = match self {
            AcmeCache::Dir(dir) => (
                name.map_or_else(|| dir.display().to_string(), |n| self.location(n)),
                "the cache directory must be writable by the server",
            ),
            AcmeCache::Store { prefix, .. } => (
                name.map_or_else(|| prefix.as_str().to_string(), |n| self.location(n)),
                "the server's storage credentials must allow reading and writing it",
            ),
        };
        AcmeError::Cache { location, hint, source }
    }
}

fn storage_io(e: StorageError) -> std::io::Error {
    std::io::Error::other(e)
}

/// Writes `data` to `path` readable by the owner only, through a temporary file and a rename
/// so a crash never leaves half a key.
async fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let tmp = path.with_extension("tmp");
    let mut file =
        tokio::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).await?;
    file.write_all(data).await?;
    // `flush` reports the background write's error (a full disk); `sync_all` would drop it.
    file.flush().await?;
    file.sync_all().await?;
    tokio::fs::rename(&tmp, path).await
}
