//! Filesystem storage: objects are files under a root directory, written through a temporary
//! file and a rename so that a crash never leaves a partial object visible.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::fs;
use tokio::io::AsyncSeekExt;
use tokio_util::io::ReaderStream;

use super::{ByteStream, Condition, ETag, ObjectMeta, Storage, StorageError, StoragePath};

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
        let (root, file) = (self.root.clone(), self.file(path));
        // Not [`blocking`]: that reads a missing or non-directory parent as "not found", which
        // a write never is. Every failure of a write is the backend's.
        tokio::task::spawn_blocking(move || put_file(&root, &file, &data))
            .await
            .map_err(io::Error::other)
            .and_then(|written| written)
            .map_err(|source| StorageError::Backend { path: path.clone(), source })
    }

    async fn get_tagged(&self, path: &StoragePath) -> Result<(Bytes, ETag), StorageError> {
        let data = self.get(path).await?;
        let tag = content_tag(&data);
        Ok((data, tag))
    }

    async fn put_if(
        &self,
        path: &StoragePath,
        data: Bytes,
        condition: Condition<'_>,
    ) -> Result<ETag, StorageError> {
        let (root, file) = (self.root.clone(), self.file(path));
        let expected = match condition {
            Condition::Absent => None,
            Condition::Unchanged(tag) => Some(tag.clone()),
        };
        let written =
            tokio::task::spawn_blocking(move || put_file_if(&root, &file, &data, expected.as_ref()))
                .await
                .map_err(io::Error::other)
                .and_then(|written| written)
                .map_err(|source| StorageError::Backend { path: path.clone(), source })?;
        written.ok_or_else(|| StorageError::Precondition(path.clone()))
    }

    async fn list(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError> {
        let path = self.file(dir);
        blocking(dir, move || list_children_page(&path, None, usize::MAX)).await
    }

    async fn list_page(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let path = self.file(dir);
        let after = after.map(str::to_string);
        blocking(dir, move || list_children_page(&path, after.as_deref(), limit)).await
    }

    async fn list_many(&self, dirs: &[StoragePath]) -> Result<Vec<Vec<String>>, StorageError> {
        let Some(first) = dirs.first() else { return Ok(Vec::new()) };
        let paths: Vec<PathBuf> = dirs.iter().map(|d| self.file(d)).collect();
        // One blocking task for all of them: the directories of a catalog page are small, and
        // handing each to a thread of its own cost more than reading it. An error names the
        // directory that failed.
        let listed = blocking(first, move || {
            Ok(paths
                .iter()
                .enumerate()
                .map(|(i, p)| list_children_page(p, None, usize::MAX).map_err(|e| (i, e)))
                .collect::<Result<Vec<_>, _>>())
        })
        .await?;
        listed.map_err(|(i, source)| map_err(&dirs[i])(source))
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
        let (root, src, dst) = (self.root.clone(), self.file(from), self.file(to));
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
            std::fs::rename(&src, &dst)?;
            prune_empty(&root, &src);
            Ok(Ok(()))
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
        let (root, file) = (self.root.clone(), self.file(path));
        blocking(path, move || {
            if std::fs::symlink_metadata(&file)?.is_dir() {
                // Out of sight first, in one step (temporary names are never listed): a crash
                // part-way through leaves no half-deleted tag or repository under its name.
                let away = temp_beside(&file);
                std::fs::rename(&file, &away)?;
                std::fs::remove_dir_all(&away)?;
            } else {
                std::fs::remove_file(&file)?;
            }
            prune_empty(&root, &file);
            Ok(())
        })
        .await
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

/// One page of the children of `dir`: the names after `after`, in order, at most `limit`. Only
/// names are read, nothing below them: a directory exists only while it holds an object (see
/// [`put_file`] and [`prune_empty`]), so its name in the listing is enough to list it.
fn list_children_page(dir: &Path, after: Option<&str>, limit: usize) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let Some(name) = entry?.file_name().to_str().map(str::to_string) else { continue };
        if !name.starts_with(TEMP_PREFIX) && after.is_none_or(|a| name.as_str() > a) {
            names.push(name);
        }
    }
    if names.len() > limit {
        names.select_nth_unstable(limit);
        names.truncate(limit);
    }
    names.sort_unstable();
    Ok(names)
}

/// How many times a write starts again when the directory it writes into was removed under it
/// (the last object of a directory deleted meanwhile, or the directory deleted whole).
const PUT_ATTEMPTS: usize = 5;

/// Writes `data` to `file` through a temporary file and a rename, creating its missing
/// directories so that none of them is ever seen empty: they are built under a temporary name
/// with the object inside, and moved into place with it in one rename. A tag or a repository
/// therefore appears with its first object, which is what lets a listing read names only.
fn put_file(root: &Path, file: &Path, data: &[u8]) -> io::Result<()> {
    publish_through_temp(root, file, data, |tmp| match std::fs::rename(tmp, file) {
        Ok(()) => Ok(true),
        // The directory was deleted whole, the temporary file with it: written again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    })
    .map(|_| ())
}

/// Writes `data` to a temporary file beside `file` and hands it to `publish`, which moves it
/// into place and says whether it did; a missing directory is made with the object inside
/// ([`put_with_directories`]). When `publish` fails with `NotFound` (the directory was deleted
/// whole meanwhile), the write starts again, [`PUT_ATTEMPTS`] times at most.
fn publish_through_temp(
    root: &Path,
    file: &Path,
    data: &[u8],
    publish: impl Fn(&Path) -> io::Result<bool>,
) -> io::Result<bool> {
    let parent = file.parent().ok_or_else(|| io::Error::other("an object path has a directory"))?;
    for _ in 0..PUT_ATTEMPTS {
        let tmp = match write_temp(parent, data) {
            Ok(tmp) => tmp,
            // No directory, so no object: it comes into being with the object inside.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if put_with_directories(root, file, data)? {
                    return Ok(true);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match publish(&tmp) {
            Ok(done) => return Ok(done),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!("{} kept being removed while written", parent.display())))
}

/// The version of a file: the SHA-256 of its content (a file has no version counter, and the
/// small objects written conditionally are cheap to hash).
fn content_tag(data: &[u8]) -> ETag {
    use sha2::Digest as _;
    ETag::new(hex::encode(sha2::Sha256::digest(data)))
}

/// [`Storage::put_if`] on a file: creates it only while absent (`expected` `None`), or replaces
/// it only while its content has the version `expected`. `None` when the condition does not
/// hold, unless the file already holds exactly `data` (a retried write that took effect).
///
/// A create publishes a complete temporary file with a hard link, which fails when the name is
/// taken. A replace holds an exclusive `flock` on the file's directory while it compares and
/// renames, so that two replaces from one version cannot both land.
fn put_file_if(root: &Path, file: &Path, data: &[u8], expected: Option<&ETag>) -> io::Result<Option<ETag>> {
    let tag = content_tag(data);
    let held = match expected {
        None => create_file(root, file, data)?,
        Some(expected) => replace_file_if(file, data, expected)?,
    };
    if held {
        return Ok(Some(tag));
    }
    match std::fs::read(file) {
        Ok(current) if current == data => Ok(Some(tag)),
        Ok(_) => Ok(None),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates `file` with `data` unless a file is there; false when one is.
fn create_file(root: &Path, file: &Path, data: &[u8]) -> io::Result<bool> {
    publish_through_temp(root, file, data, |tmp| {
        let linked = std::fs::hard_link(tmp, file);
        let _ = std::fs::remove_file(tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// Replaces `file` with `data` if its content is still of version `expected`, under its
/// directory's lock; false when it is not (or is gone).
fn replace_file_if(file: &Path, data: &[u8], expected: &ETag) -> io::Result<bool> {
    let parent = file.parent().ok_or_else(|| io::Error::other("an object path has a directory"))?;
    let dir = match std::fs::File::open(parent) {
        Ok(dir) => dir,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    dir.lock()?;
    // A directory removed (its last object deleted) between the open and the lock is not
    // where the object is any more.
    if !names(parent, &dir)? {
        return Ok(false);
    }
    let current = match std::fs::read(file) {
        Ok(current) => current,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if content_tag(&current) != *expected {
        return Ok(false);
    }
    let tmp = write_temp(parent, data)?;
    if let Err(e) = std::fs::rename(&tmp, file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The lock goes with `dir`, after the rename.
    Ok(true)
}

/// Writes `data`, durably, to a fresh temporary file in `dir`.
fn write_temp(dir: &Path, data: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    let tmp = temp_beside(&dir.join("object"));
    let written = std::fs::File::create_new(&tmp).and_then(|mut out| {
        out.write_all(data)?;
        out.sync_all()
    });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// [`put_file`] when `file`'s directory is missing: builds the missing directories with the
/// object under a temporary name beside the first of them and renames it into place. False when
/// that directory appeared meanwhile (another write made it): the caller writes again.
fn put_with_directories(root: &Path, file: &Path, data: &[u8]) -> io::Result<bool> {
    std::fs::create_dir_all(root)?;
    // The first missing directory below the root.
    let mut top = file.parent().unwrap_or(root);
    while let Some(up) = top.parent().filter(|up| up.starts_with(root) && *up != root) {
        if up.try_exists()? {
            break;
        }
        top = up;
    }
    let staging = temp_beside(top);
    let staged = staging.join(file.strip_prefix(top).map_err(io::Error::other)?);
    let built = staged.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
        let tmp = write_temp(staged.parent().unwrap_or(&staging), data)?;
        std::fs::rename(tmp, &staged)?;
        std::fs::rename(&staging, top)
    });
    match built {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            match e.kind() {
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound => {
                    Ok(false)
                }
                _ => Err(e),
            }
        }
    }
}

/// Removes the directories above `removed` (up to the root, not included) that it left empty,
/// so that a directory exists only while an object lies below it, as on S3. Stops at the first
/// that still holds something (or is already gone).
fn prune_empty(root: &Path, removed: &Path) {
    let mut dir = removed.parent();
    while let Some(current) = dir.filter(|d| d.starts_with(root) && *d != root) {
        if std::fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_storage_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::storage::suite::run(&FsStorage::new(dir.path())).await;
    }

    /// New directories are built under a temporary name and a deleted one is moved to one
    /// before it is removed: what a crash leaves halfway through is never listed.
    #[tokio::test]
    async fn list_hides_directories_a_crash_left_under_temporary_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        let tags = dir.path().join("tags");
        // A new tag being built, a tag being deleted, a real one written through `put`.
        std::fs::create_dir_all(tags.join(".tmp-1/current")).expect("mkdir");
        std::fs::write(tags.join(".tmp-1/current/link"), b"x").expect("write");
        std::fs::create_dir_all(tags.join(".tmp-2/index")).expect("mkdir");
        storage
            .put(&StoragePath::new(["tags/real/current/link"]), Bytes::from_static(b"x"))
            .await
            .expect("put");
        assert_eq!(storage.list(&StoragePath::new(["tags"])).await.ok(), Some(vec!["real".into()]));
        // `put` left no temporary directory or file of its own.
        let mut names: Vec<_> =
            std::fs::read_dir(&tags).expect("read").flatten().map(|e| e.file_name()).collect();
        names.sort();
        assert_eq!(names, [".tmp-1", ".tmp-2", "real"]);
        let current = std::fs::read_dir(tags.join("real/current")).expect("read").flatten().count();
        assert_eq!(current, 1);
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
