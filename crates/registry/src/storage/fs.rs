//! Filesystem storage: objects are files under a root directory, written through a temporary
//! file and a rename so that a crash never leaves a partial object visible.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::fs;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{ByteStream, ObjectMeta, Storage, StorageError, StoragePath};

/// Prefix of temporary files; no path component the registry writes can start with a dot.
const TEMP_PREFIX: &str = ".tmp-";
/// Read buffer size: large enough that a 1 GiB layer is a few thousand syscalls, small enough
/// that a client that stops reading holds under a megabyte (this buffer, the chunk being sent
/// and the next one) until the send-progress timeout drops it.
const IO_BUFFER: usize = 256 << 10;
/// Received chunks waiting for an append's writer thread; bounded, so a slow disk slows the
/// client down instead of filling memory.
const WRITE_QUEUE: usize = 8;

/// Storage in a local directory, in CNCF distribution's layout (see [`crate::layout`]).
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> FsStorage {
        FsStorage { root: root.into() }
    }

    fn file(&self, path: &StoragePath) -> PathBuf {
        self.root.join(path.as_str())
    }
}

/// Maps an I/O error to `NotFound` or a backend failure at `path`.
fn map_err(path: &StoragePath) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => StorageError::NotFound(path.clone()),
        _ => StorageError::Backend { path: path.clone(), source },
    }
}

async fn create_parent(file: &Path) -> io::Result<()> {
    match file.parent() {
        Some(parent) => fs::create_dir_all(parent).await,
        None => Ok(()),
    }
}

/// Writes every chunk from `queue` to `out`, stopping at the first error; gives the file back
/// (to undo a failed append) with the outcome.
fn write_chunks(
    mut out: std::fs::File,
    mut queue: tokio::sync::mpsc::Receiver<Bytes>,
) -> (std::fs::File, io::Result<()>) {
    use std::io::Write;
    while let Some(chunk) = queue.blocking_recv() {
        if let Err(e) = out.write_all(&chunk) {
            return (out, Err(e));
        }
    }
    (out, Ok(()))
}

/// A fresh temporary file name beside `file`.
fn temp_beside(file: &Path) -> PathBuf {
    let name = format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
    file.with_file_name(name)
}

/// How many times an append or a rename opens a file again that was renamed away between
/// its open and its lock.
const LOCK_ATTEMPTS: usize = 3;

/// An object opened for a change that must not interleave with another process's.
enum Locked {
    /// Opened with its exclusive lock held; the path still names it.
    Held(std::fs::File),
    /// Another append or rename holds the lock; the object's size now.
    Busy(u64),
}

/// Opens the object at `file` (creating it when `create`) for appending, with its exclusive
/// `flock` held. Appends and renames of an upload take this lock, so that two servers on one
/// root never interleave their writes, and a rename never moves a file that an append is
/// writing to (or about to truncate back). A busy lock is not waited for: an append holding
/// it may wait long for its client, and this process's own appends to one upload are already
/// serialised by the upload's session.
fn open_locked(file: &Path, create: bool) -> io::Result<Locked> {
    for _ in 0..LOCK_ATTEMPTS {
        let handle = std::fs::OpenOptions::new().create(create).append(true).open(file)?;
        match handle.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(Locked::Busy(handle.metadata()?.len())),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        // The file may have been renamed (committed) between the open and the lock.
        if names(file, &handle)? {
            return Ok(Locked::Held(handle));
        }
    }
    Err(io::Error::other(format!("{} kept being replaced while it was opened", file.display())))
}

/// Whether `path` still names the file open as `handle` (same device and inode).
fn names(path: &Path, handle: &std::fs::File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = handle.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Storage for FsStorage {
    async fn get(&self, path: &StoragePath) -> Result<Bytes, StorageError> {
        let data = fs::read(self.file(path)).await.map_err(map_err(path))?;
        Ok(Bytes::from(data))
    }

    async fn reader(
        &self,
        path: &StoragePath,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        use tokio::io::AsyncReadExt;
        let mut file = fs::File::open(self.file(path)).await.map_err(map_err(path))?;
        let stream = match range {
            Some(range) => {
                file.seek(SeekFrom::Start(range.start)).await.map_err(map_err(path))?;
                let limited = file.take(range.end.saturating_sub(range.start));
                ReaderStream::with_capacity(limited, IO_BUFFER).boxed()
            }
            None => ReaderStream::with_capacity(file, IO_BUFFER).boxed(),
        };
        Ok(stream)
    }

    async fn stat(&self, path: &StoragePath) -> Result<ObjectMeta, StorageError> {
        let meta = fs::metadata(self.file(path)).await.map_err(map_err(path))?;
        if meta.is_dir() {
            return Err(StorageError::NotFound(path.clone()));
        }
        Ok(ObjectMeta { size: meta.len(), modified: meta.modified().ok() })
    }

    async fn put(&self, path: &StoragePath, data: Bytes) -> Result<(), StorageError> {
        let file = self.file(path);
        let tmp = temp_beside(&file);
        let write = async {
            create_parent(&file).await?;
            let mut out = fs::File::create(&tmp).await?;
            out.write_all(&data).await?;
            // tokio's `write_all` only hands the bytes to a background write, and `sync_all`
            // drops that write's error (ENOSPC): `flush` is what reports it. Without it a
            // full disk commits an empty object under its final name.
            out.flush().await?;
            out.sync_all().await?;
            fs::rename(&tmp, &file).await
        };
        if let Err(e) = write.await {
            let _ = fs::remove_file(&tmp).await;
            return Err(StorageError::Backend { path: path.clone(), source: e });
        }
        Ok(())
    }

    async fn list(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError> {
        let path = self.file(dir);
        blocking(dir, move || list_children(&path)).await
    }

    async fn list_page(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let path = self.file(dir);
        let after = after.map(str::to_string);
        blocking(dir, move || {
            list_children_page(&path, after.as_deref(), limit, |entry| {
                Ok(!entry.file_type()?.is_dir() || holds_object(&entry.path())?)
            })
        })
        .await
    }

    async fn list_page_holding(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
        object: &str,
    ) -> Result<Vec<String>, StorageError> {
        let path = self.file(dir);
        let after = after.map(str::to_string);
        let object = object.to_string();
        blocking(dir, move || {
            list_children_page(&path, after.as_deref(), limit, |entry| {
                match std::fs::symlink_metadata(entry.path().join(&object)) {
                    Ok(meta) => Ok(!meta.is_dir()),
                    Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
        })
        .await
    }

    async fn append(
        &self,
        path: &StoragePath,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<u64, StorageError> {
        let file = self.file(path);
        let backend = |source| StorageError::Backend { path: path.clone(), source };
        create_parent(&file).await.map_err(backend)?;
        let opened = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || -> io::Result<Result<std::fs::File, u64>> {
                match open_locked(&file, offset == 0)? {
                    Locked::Held(out) => {
                        let actual = out.metadata()?.len();
                        Ok(if actual == offset { Ok(out) } else { Err(actual) })
                    }
                    Locked::Busy(actual) => Ok(Err(actual)),
                }
            })
            .await
        };
        let out = opened
            .map_err(|e| backend(io::Error::other(e)))?
            .map_err(map_err(path))?
            .map_err(|actual| StorageError::OffsetMismatch { path: path.clone(), actual })?;
        // The bytes are written by a blocking thread of its own, straight from the received
        // buffers: no copy into a write buffer, and the disk write overlaps with receiving
        // (and hashing) the next chunks.
        let (chunks, queue) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || write_chunks(out, queue));
        let mut size = offset;
        let mut received = Ok(());
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(chunk) => {
                    size += chunk.len() as u64;
                    if chunks.send(chunk).await.is_err() {
                        break; // The writer failed; its error is reported below.
                    }
                }
                Err(e) => {
                    received = Err(StorageError::Body(e));
                    break;
                }
            }
        }
        drop(chunks);
        let (out, written) = writer.await.map_err(|e| backend(io::Error::other(e)))?;
        if let Err(e) = written.map_err(backend).and(received) {
            // All or nothing: drop what this call wrote so the upload stays at `offset`. The
            // lock is still held, so no rename has moved the file; the identity check is for
            // a process that renames without locking (an older regctl on the same root).
            let _ =
                tokio::task::spawn_blocking(
                    move || {
                        if names(&file, &out)? { out.set_len(offset) } else { Ok(()) }
                    },
                )
                .await;
            return Err(e);
        }
        Ok(size)
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath, size: u64) -> Result<(), StorageError> {
        let (src, dst) = (self.file(from), self.file(to));
        create_parent(&dst).await.map_err(map_err(to))?;
        let moved = tokio::task::spawn_blocking(move || -> io::Result<Result<(), u64>> {
            let file = match open_locked(&src, false)? {
                Locked::Held(file) => file,
                Locked::Busy(actual) => return Ok(Err(actual)),
            };
            let actual = file.metadata()?.len();
            if actual != size {
                return Ok(Err(actual));
            }
            // Make the content durable before it becomes visible under its final name.
            file.sync_all()?;
            // Renamed while locked: an append that opened the file before cannot add to it
            // once it is the object at `to` (it checks the path still names its file).
            std::fs::rename(&src, &dst).map(Ok)
        });
        match moved
            .await
            .map_err(|e| StorageError::Backend { path: from.clone(), source: io::Error::other(e) })?
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(actual)) => Err(StorageError::OffsetMismatch { path: from.clone(), actual }),
            Err(e) => Err(map_err(from)(e)),
        }
    }

    async fn delete(&self, path: &StoragePath) -> Result<(), StorageError> {
        let file = self.file(path);
        let meta = fs::symlink_metadata(&file).await.map_err(map_err(path))?;
        let removed =
            if meta.is_dir() { fs::remove_dir_all(&file).await } else { fs::remove_file(&file).await };
        removed.map_err(map_err(path))
    }

    async fn visit(
        &self,
        dir: &StoragePath,
        visitor: &mut (dyn FnMut(String, ObjectMeta) + Send),
    ) -> Result<(), StorageError> {
        // One blocking task walks the whole tree and hands the objects over in batches: a
        // task (two thread wake-ups) per directory cost more than reading it, on a registry
        // of many small directories. The queue is bounded, so memory does not grow with it.
        let (batches, mut queue) = tokio::sync::mpsc::channel(VISIT_QUEUE);
        let root = self.file(dir);
        let walker = tokio::task::spawn_blocking(move || walk_tree(root, &batches));
        while let Some(batch) = queue.recv().await {
            for (relative, meta) in batch.map_err(map_err(dir))? {
                visitor(relative, meta);
            }
        }
        walker.await.map_err(|e| StorageError::Backend { path: dir.clone(), source: io::Error::other(e) })
    }
}

/// Runs `work` on a blocking thread; its I/O error (or its thread's failure) is reported for
/// `dir`.
async fn blocking<T: Send + 'static>(
    dir: &StoragePath,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Backend { path: dir.clone(), source: io::Error::other(e) })?
        .map_err(map_err(dir))
}

/// Objects [`Storage::visit`] hands over at once, and batches that may wait for its visitor.
const VISIT_BATCH: usize = 512;
const VISIT_QUEUE: usize = 4;

/// A batch of objects found by [`walk_tree`] (relative path and metadata), or its error.
type VisitBatch = io::Result<Vec<(String, ObjectMeta)>>;

/// Walks the tree at `root` depth first, sending its objects to `out` in batches; stops at the
/// first error (sent) or when the receiver is gone.
fn walk_tree(root: PathBuf, out: &tokio::sync::mpsc::Sender<VisitBatch>) {
    let mut pending = vec![(root, String::new())];
    let mut batch = Vec::with_capacity(VISIT_BATCH);
    while let Some((current, prefix)) = pending.pop() {
        let entries = match read_entries(&current) {
            Ok(entries) => entries,
            Err(e) => {
                let _ = out.blocking_send(Err(e));
                return;
            }
        };
        for (name, entry) in entries {
            let relative = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            match entry {
                Entry::Dir(path) => pending.push((path, relative)),
                Entry::Object(meta) => batch.push((relative, meta)),
            }
        }
        if batch.len() >= VISIT_BATCH && out.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = out.blocking_send(Ok(batch));
    }
}

/// A directory entry as [`Storage::visit`] sees it.
enum Entry {
    Dir(PathBuf),
    Object(ObjectMeta),
}

/// The entries of `dir` (none when it is gone: deleted by a concurrent request, or never
/// there), leaving out temporary files and entries removed while being read.
fn read_entries(dir: &Path) -> io::Result<Vec<(String, Entry)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        // The entry's type comes with its name (no system call on most filesystems): only
        // objects are asked for their size and time.
        let entry = match entry
            .file_type()
            .and_then(|t| if t.is_dir() { Ok(None) } else { entry.metadata().map(Some) })
        {
            Ok(None) => Entry::Dir(entry.path()),
            Ok(Some(meta)) if meta.is_dir() => Entry::Dir(entry.path()),
            Ok(Some(meta)) => Entry::Object(ObjectMeta { size: meta.len(), modified: meta.modified().ok() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found.push((name, entry));
    }
    Ok(found)
}

/// The children of `dir` that are objects, or directories with an object somewhere below them.
/// A directory that a crash left holding only temporary files (or nothing) does not exist, as
/// the storage contract says: a tag whose link was never renamed into place is not listed.
fn list_children(dir: &Path) -> io::Result<Vec<String>> {
    list_children_page(dir, None, usize::MAX, |entry| {
        Ok(!entry.file_type()?.is_dir() || holds_object(&entry.path())?)
    })
}

/// One page of the children of `dir` that pass `listed`: the names after `after`, in order, at
/// most `limit`. All names are read (a directory keeps them in no order), but only the page's
/// entries are checked.
fn list_children_page(
    dir: &Path,
    after: Option<&str>,
    limit: usize,
    listed: impl Fn(&std::fs::DirEntry) -> io::Result<bool>,
) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if !name.starts_with(TEMP_PREFIX) && after.is_none_or(|a| name.as_str() > a) {
            candidates.push((name, entry));
        }
    }
    candidates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut names = Vec::new();
    for (name, entry) in candidates {
        if names.len() >= limit {
            break;
        }
        if listed(&entry)? {
            names.push(name);
        }
    }
    Ok(names)
}

/// Whether an object (not a temporary file) lies anywhere below `dir`; stops at the first.
fn holds_object(dir: &Path) -> io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false), // removed meanwhile
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            continue;
        }
        if !entry.file_type()?.is_dir() || holds_object(&entry.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_storage_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::storage::suite::run(&FsStorage::new(dir.path())).await;
    }

    #[tokio::test]
    async fn list_hides_directories_a_crash_left_without_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        let tags = dir.path().join("tags");
        // A tag whose link was being written when the process died, an empty one, a real one.
        std::fs::create_dir_all(tags.join("cut/current")).expect("mkdir");
        std::fs::write(tags.join("cut/current/.tmp-1"), b"x").expect("write");
        std::fs::create_dir_all(tags.join("empty/index")).expect("mkdir");
        std::fs::create_dir_all(tags.join("real/current")).expect("mkdir");
        std::fs::write(tags.join("real/current/link"), b"sha256:x").expect("write");
        assert_eq!(storage.list(&StoragePath::new(["tags"])).await.ok(), Some(vec!["real".into()]));
    }

    #[tokio::test]
    async fn list_hides_temporary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        std::fs::write(dir.path().join(".tmp-leftover"), b"x").expect("write");
        std::fs::write(dir.path().join("real"), b"x").expect("write");
        let root = StoragePath::new(["real"]);
        assert_eq!(storage.list(&StoragePath(String::new())).await.ok(), Some(vec!["real".into()]));
        assert!(storage.stat(&root).await.is_ok());
    }
}
