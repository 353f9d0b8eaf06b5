//! The storage backend trait and its implementations.
//!
//! A backend is a minimal key/value store of byte objects addressed by `/`-separated paths, with
//! the few operations the registry needs: the OCI logic (digests, manifests, tags, links) lives
//! above it, in [`crate::registry`], written once for every backend.

mod fs;
#[cfg(feature = "s3")]
mod s3;

use std::fmt;
use std::io;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsStorage;
#[cfg(feature = "s3")]
pub use s3::{S3Storage, connect as connect_s3};

/// A stream of bytes read from or written to storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// What went wrong in a storage operation, by meaning; each backend maps its own errors here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No object at that path.
    #[error("not found: {0}")]
    NotFound(StoragePath),
    /// An append's offset, or the size a rename expected, did not match the object's current
    /// size; or another append to the object was under way.
    #[error("offset mismatch at {path}: object has {actual} bytes")]
    OffsetMismatch {
        /// The object appended to.
        path: StoragePath,
        /// Its size now.
        actual: u64,
    },
    /// A conditional write ([`Storage::put_if`]) found the object not as its condition
    /// required: present for a create, absent or of another version for a replace.
    #[error("precondition failed at {0}: the object changed")]
    Precondition(StoragePath),
    /// The bytes being written failed to arrive (the client went away or sent a bad body).
    #[error("reading the incoming body failed: {0}")]
    Body(#[source] io::Error),
    /// The backend failed (I/O error, network, permissions, ...).
    #[error("storage failure at {path}: {source}")]
    Backend {
        /// The path of the operation.
        path: StoragePath,
        /// The backend's own error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// True for [`StorageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }

    /// True for [`StorageError::Precondition`].
    pub fn is_precondition(&self) -> bool {
        matches!(self, StorageError::Precondition(_))
    }
}

/// The version of an object as its backend names it, for a conditional write
/// ([`Storage::put_if`]): opaque, and equal only for the same stored version (S3: the ETag;
/// filesystem: the SHA-256 of the content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(String);

impl ETag {
    /// A version from the backend's own token.
    pub fn new(token: impl Into<String>) -> ETag {
        ETag(token.into())
    }

    /// The token, as the backend gave it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// When a [`Storage::put_if`] may write.
#[derive(Debug, Clone, Copy)]
pub enum Condition<'a> {
    /// Only if no object is there (S3's `If-None-Match: *`).
    Absent,
    /// Only if the object there is still this version (S3's `If-Match`).
    Unchanged(&'a ETag),
}

/// A relative, `/`-separated object path with no empty, `.` or `..` component.
///
/// Built only from validated names, tags and digests by [`crate::layout`], so it can never
/// escape the storage root.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoragePath(String);

impl StoragePath {
    /// Joins components into a path; panics on a component that could escape the root, which
    /// would be a bug in the caller (all components come from validated types).
    pub fn new<S: AsRef<str>>(components: impl IntoIterator<Item = S>) -> StoragePath {
        let mut path = String::new();
        for c in components {
            for part in c.as_ref().split('/') {
                assert!(StoragePath::is_component(part), "invalid storage path component {part:?}");
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(part);
            }
        }
        StoragePath(path)
    }

    /// This path with more components appended.
    pub fn join(&self, more: &str) -> StoragePath {
        StoragePath::new([self.0.as_str(), more])
    }

    /// Whether `name` is one component [`StoragePath::new`] accepts: not empty, not `.` or
    /// `..`, no `/` or `\`.
    pub fn is_component(name: &str) -> bool {
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
    }

    /// This path with `more` appended, when `more` was read back from storage (a listing or a
    /// walk): `None` for a name [`StoragePath::new`] refuses, which a hostile bucket or another
    /// tool may hold (`..`, `//`, `\`). Callers skip such an object and log it, never panic.
    pub fn join_listed(&self, more: &str) -> Option<StoragePath> {
        more.split('/').all(StoragePath::is_component).then(|| StoragePath::new([self.0.as_str(), more]))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What [`Storage::stat`] and [`Storage::walk`] report about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, when the backend knows (garbage collection spares
    /// recent objects; an object without a time counts as recent).
    pub modified: Option<std::time::SystemTime>,
}

/// How many listings [`Storage::list_many`] has in flight at once by default.
pub const LIST_CONCURRENCY: usize = 16;

/// A storage backend.
///
/// # Contract
/// - Objects are written whole and atomically: a reader sees the old object, the new one, or
///   none, never a part (`put`, `rename`). An object grown by `append` has a size (`stat`) but
///   its bytes are only certain to be readable once it is renamed into place.
/// - Directories are implicit: a path "exists" as a directory while an object lies below it, so
///   a listing names a directory only while it holds an object, and deleting a directory's last
///   object removes it. Callers decide from a listing's names alone (a repository is a directory
///   listing `_manifests`, a tag a directory in `_manifests/tags`).
/// - `NotFound` is the answer for a missing object, never a generic failure.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Reads a whole (small) object.
    async fn get(&self, path: &StoragePath) -> Result<Bytes, StorageError>;

    /// Streams an object, or the byte range `range` of it (already clamped to its size).
    async fn reader(&self, path: &StoragePath, range: Option<Range<u64>>)
    -> Result<ByteStream, StorageError>;

    /// The size of an object.
    async fn stat(&self, path: &StoragePath) -> Result<ObjectMeta, StorageError>;

    /// Atomically creates or replaces an object.
    async fn put(&self, path: &StoragePath, data: Bytes) -> Result<(), StorageError>;

    /// Reads a whole (small) object with its version, for a later [`Storage::put_if`].
    async fn get_tagged(&self, path: &StoragePath) -> Result<(Bytes, ETag), StorageError>;

    /// Atomically creates or replaces an object if `condition` holds, returning its new
    /// version; `Precondition` if it does not. What coordinates several servers on one storage
    /// (leases, users kept in storage).
    ///
    /// Of several conditional writes racing from one state, exactly one succeeds. A write
    /// refused because the object already holds exactly `data` counts as done: it is what a
    /// retried request that took effect the first time finds. S3 checks the condition against
    /// every write; the filesystem against other conditional writes only (plain `put`s of the
    /// same object do not take its lock).
    async fn put_if(
        &self,
        path: &StoragePath,
        data: Bytes,
        condition: Condition<'_>,
    ) -> Result<ETag, StorageError>;

    /// Names of the direct children (objects and directories) of `dir`, in no particular order;
    /// empty when `dir` does not exist.
    async fn list(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError>;

    /// One page of [`Storage::list`]: the names of `dir`'s children that sort after `after`,
    /// in order, at most `limit`.
    ///
    /// The default sorts a whole `list`; the filesystem reads the directory's names once (it
    /// keeps them in no order), S3 lists from `after` on.
    async fn list_page(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut names = self.list(dir).await?;
        names.retain(|n| after.is_none_or(|a| n.as_str() > a));
        names.sort_unstable();
        names.truncate(limit);
        Ok(names)
    }

    /// [`Storage::list`] of each of `dirs`, in the same order: what a walk that knows several
    /// directories to read next (the catalog) asks for at once.
    ///
    /// The default lists [`LIST_CONCURRENCY`] directories at a time (S3: that many
    /// requests in flight rather than one round trip after another); the filesystem reads them
    /// all in one blocking task, as a thread hand-off per directory costs more than its read.
    async fn list_many(&self, dirs: &[StoragePath]) -> Result<Vec<Vec<String>>, StorageError> {
        let mut listed = Vec::with_capacity(dirs.len());
        for chunk in dirs.chunks(LIST_CONCURRENCY) {
            listed.extend(futures_util::future::try_join_all(chunk.iter().map(|dir| self.list(dir))).await?);
        }
        Ok(listed)
    }

    /// Appends a stream to the object at `path`, which must hold exactly `offset` bytes (a
    /// missing object holds 0). All or nothing: if the stream fails, the object is left as it
    /// was. Returns the new size.
    ///
    /// Appends to one object from any number of processes sharing the storage are serialised:
    /// of two appends at one offset at most one succeeds, the other fails with
    /// `OffsetMismatch`, and no append changes an object once it has been renamed away.
    async fn append(&self, path: &StoragePath, offset: u64, data: ByteStream) -> Result<u64, StorageError>;

    /// Atomically moves an object that holds exactly `size` bytes, replacing any object at `to`.
    /// An object of another size, or one an append is still writing to, is left where it is:
    /// `OffsetMismatch` with its size. What is moved is what `to` then holds: an append begun
    /// before the move cannot add to it or cut it short.
    async fn rename(&self, from: &StoragePath, to: &StoragePath, size: u64) -> Result<(), StorageError>;

    /// Deletes an object or a whole directory tree. Deleting nothing is `NotFound`.
    async fn delete(&self, path: &StoragePath) -> Result<(), StorageError>;

    /// Every object below `dir`, recursively: its path relative to `dir` and its metadata, in no
    /// particular order; empty when `dir` does not exist. An object still being appended to (not
    /// yet renamed into place) may be missing or show a partial size. Collects
    /// [`Storage::visit`].
    async fn walk(&self, dir: &StoragePath) -> Result<Vec<(String, ObjectMeta)>, StorageError> {
        let mut found = Vec::new();
        self.visit(dir, &mut |relative, meta| found.push((relative, meta))).await?;
        Ok(found)
    }

    /// Calls `visitor` with every object below `dir`, as [`Storage::walk`] reports them,
    /// without holding the whole tree.
    ///
    /// The default walks with `list` and `stat`, one call per entry; backends that can do
    /// better override it (the filesystem reads a directory at a time, S3 lists the whole tree
    /// in pages of 1000 keys).
    async fn visit(
        &self,
        dir: &StoragePath,
        visitor: &mut (dyn FnMut(String, ObjectMeta) + Send),
    ) -> Result<(), StorageError> {
        let mut pending = vec![(dir.clone(), String::new())];
        while let Some((current, prefix)) = pending.pop() {
            for name in self.list(&current).await? {
                let Some(path) = current.join_listed(&name) else {
                    tracing::warn!(dir = %current, name = ?name, "skipping an object whose name cannot be a path");
                    continue;
                };
                let relative = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                match self.stat(&path).await {
                    Ok(meta) => visitor(relative, meta),
                    Err(e) if e.is_not_found() => pending.push((path, relative)),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// A URL from which a client can fetch the object directly, when the backend offers one and
    /// is configured to (S3 with `redirect`: a presigned URL); `None` means "serve it yourself".
    async fn redirect_url(&self, path: &StoragePath) -> Result<Option<String>, StorageError> {
        let _ = path;
        Ok(None)
    }

    /// Housekeeping that only the backend can see: finishes work a crashed process left
    /// behind, and removes incomplete writes begun before `abandoned_before` (S3: multipart
    /// uploads). Returns how many incomplete writes it removed. Nothing to do by default.
    async fn tidy(&self, abandoned_before: std::time::SystemTime) -> Result<u64, StorageError> {
        let _ = abandoned_before;
        Ok(0)
    }
}

#[cfg(test)]
pub(crate) mod suite;
