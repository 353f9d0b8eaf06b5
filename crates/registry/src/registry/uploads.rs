//! Upload sessions: start, append chunks, status, finish with digest verification, cancel.
//!
//! The bytes go to storage as they arrive, through a SHA-256 hasher. The running hash is kept
//! in memory per session and saved to storage after every chunk, so a session this process has
//! not seen (after a restart, or started by another server on the same storage) continues from
//! storage alone. Without a saved state (a session begun by `registry:2`), the hash is
//! recomputed from the stored bytes when the upload finishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::{Caller, Happened, Registry};
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::{Algorithm, Digest, Hasher, RepoName};
use crate::storage::{ByteStream, StorageError};

/// A validated upload session id (a UUID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// Parses an id from a URL; anything but a UUID is an unknown upload.
    pub fn parse(s: &str) -> Result<UploadId> {
        let uuid = uuid::Uuid::try_parse(s).map_err(|_| Error::BlobUploadUnknown)?;
        Ok(UploadId(uuid.hyphenated().to_string()))
    }

    fn new() -> UploadId {
        UploadId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The id as it appears in URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What this process knows of one session.
#[derive(Debug)]
struct Session {
    /// Bytes received so far.
    size: u64,
    /// SHA-256 of those bytes, when every one of them passed through this process.
    hasher: Option<Hasher>,
}

/// A session is known by its repository and id: an id used under another repository is
/// unknown there.
type SessionKey = (RepoName, UploadId);

/// A session's lock, shared by the requests working on it.
type SessionLock = Arc<tokio::sync::Mutex<Session>>;

/// Most sessions kept in memory. Forgetting one loses nothing: its size and running hash are in
/// storage, and its next request loads it again (see [`Registry::session`]).
const MAX_SESSIONS: usize = 4096;

/// A session in memory, and when a request last asked for it.
#[derive(Debug)]
struct Entry {
    session: SessionLock,
    used: Instant,
}

impl Entry {
    /// True while a request holds the session: forgetting it then would let a second copy of
    /// it be loaded beside the first.
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.session) > 1
    }
}

/// Sessions, each behind its own lock so that chunks of one upload are serialized while
/// different uploads proceed in parallel. At most `max` are kept: at the bound the least
/// recently used one not in use is forgotten, and when every one is in use a new one is
/// refused (`429 TOOMANYREQUESTS`).
#[derive(Debug)]
pub(super) struct Sessions {
    map: Mutex<HashMap<SessionKey, Entry>>,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::with_max(MAX_SESSIONS)
    }
}

impl Sessions {
    fn with_max(max: usize) -> Sessions {
        Sessions { map: Mutex::default(), max }
    }

    fn get(&self, name: &RepoName, id: &UploadId) -> Option<SessionLock> {
        let mut map = self.lock();
        let entry = map.get_mut(&(name.clone(), id.clone()))?;
        entry.used = Instant::now();
        Some(entry.session.clone())
    }

    fn insert(&self, name: &RepoName, id: &UploadId, session: Session) -> Result<SessionLock> {
        let mut map = self.lock();
        let key = (name.clone(), id.clone());
        if let Some(entry) = map.get_mut(&key) {
            entry.used = Instant::now();
            return Ok(entry.session.clone());
        }
        if map.len() >= self.max {
            let idlest = map.iter().filter(|(_, e)| !e.in_use()).min_by_key(|(_, e)| e.used);
            let Some(idlest) = idlest.map(|(k, _)| k.clone()) else {
                tracing::warn!(
                    sessions = map.len(),
                    "every upload session in memory is in use; refusing another"
                );
                return Err(Error::TooManyRequests {
                    reason: "too many upload sessions in progress",
                    retry_after: std::time::Duration::from_secs(1),
                });
            };
            map.remove(&idlest);
        }
        let session = Arc::new(tokio::sync::Mutex::new(session));
        map.insert(key, Entry { session: session.clone(), used: Instant::now() });
        Ok(session)
    }

    fn remove(&self, name: &RepoName, id: &UploadId) {
        self.lock().remove(&(name.clone(), id.clone()));
    }

    /// Forgets the sessions not used since `idle_since` (and not in use); returns how many.
    fn expire(&self, idle_since: Instant) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, e| e.in_use() || e.used >= idle_since);
        before - map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The error a body stream ends with when it would grow the upload past the size limit; it
/// reaches [`Registry::append_locked`] inside [`StorageError::Body`].
#[derive(Debug, thiserror::Error)]
#[error("the blob would exceed the limit of {max} bytes")]
struct OverLimit {
    max: u64,
}

/// Passes `data` through while the upload, `size` bytes so far, stays within `max` bytes;
/// fails with [`OverLimit`] at the first chunk that would take it past, before it is stored.
fn limited(data: ByteStream, size: u64, max: u64) -> ByteStream {
    let mut total = size;
    data.and_then(move |chunk| {
        total = total.saturating_add(chunk.len() as u64);
        let result = if total > max { Err(std::io::Error::other(OverLimit { max })) } else { Ok(chunk) };
        std::future::ready(result)
    })
    .boxed()
}

/// `data` unless it ends without a byte (a `PUT` that only names the digest): waits for its
/// first bytes, and gives them back in front of the rest.
async fn non_empty(data: Option<ByteStream>) -> Result<Option<ByteStream>> {
    let Some(mut data) = data else { return Ok(None) };
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(StorageError::Body)?;
        if !chunk.is_empty() {
            return Ok(Some(futures_util::stream::once(async { Ok(chunk) }).chain(data).boxed()));
        }
    }
    Ok(None)
}

/// Chunks waiting for the hashing thread; bounded, so a slow hash slows the client down
/// instead of buffering its upload in memory.
const HASH_QUEUE: usize = 8;

/// Feeds every chunk of `data` to `hasher` on its way to storage. The hashing runs on a
/// blocking thread of its own, so that SHA-256, the slowest step of a push, overlaps with
/// receiving and storing the bytes. The returned task yields the hasher once the stream has
/// ended; when the stream fails or is dropped before its end, the hasher is of no use.
fn hashing(data: ByteStream, mut hasher: Hasher) -> (ByteStream, tokio::task::JoinHandle<Hasher>) {
    let (chunks, mut queue) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
    let hashed = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = queue.blocking_recv() {
            hasher.update(&chunk);
        }
        hasher
    });
    // The sender lives in the stream's state: it is dropped, and the hasher finishes, as soon
    // as the stream ends (or fails, or is dropped).
    let stream = futures_util::stream::unfold((data, chunks), |(mut data, chunks)| async move {
        let item = data.next().await?;
        if let Ok(chunk) = &item {
            // Only fails if the hashing thread is gone (a panic): the join reports it.
            let _ = chunks.send(chunk.clone()).await;
        }
        Some((item, (data, chunks)))
    });
    (stream.boxed(), hashed)
}

impl Registry {
    /// Starts an upload session in `name`.
    pub async fn start_upload(&self, caller: &Caller, name: &RepoName) -> Result<UploadId> {
        let id = UploadId::new();
        // In memory first: a session refused at the bound leaves nothing in storage.
        self.uploads.insert(name, &id, Session { size: 0, hasher: Some(Algorithm::Sha256.hasher()) })?;
        let started = Bytes::from(now_rfc3339());
        if let Err(e) = self.storage.put(&layout::upload_started_at(name, id.as_str()), started).await {
            self.uploads.remove(name, &id);
            return Err(e.into());
        }
        self.publish(name, caller, Happened::UploadStarted);
        Ok(id)
    }

    /// Forgets the upload sessions no request has used for `max_age` (storage keeps them, until
    /// garbage collection purges those idle for as long); returns how many.
    pub fn expire_upload_sessions(&self, max_age: Duration) -> usize {
        // No instant that far back: nothing can have been idle that long.
        Instant::now().checked_sub(max_age).map_or(0, |idle_since| self.uploads.expire(idle_since))
    }

    /// The session's lock, loading it from storage when this process has not seen it (or has
    /// forgotten it).
    async fn session(&self, name: &RepoName, id: &UploadId) -> Result<SessionLock> {
        if let Some(session) = self.uploads.get(name, id) {
            return Ok(session);
        }
        let loaded = self.load_session(name, id).await?;
        self.uploads.insert(name, id, loaded)
    }

    /// A session as storage has it: its size, and the running hash saved at that size.
    async fn load_session(&self, name: &RepoName, id: &UploadId) -> Result<Session> {
        if !self.exists(&layout::upload_started_at(name, id.as_str())).await? {
            self.uploads.remove(name, id);
            return Err(Error::BlobUploadUnknown);
        }
        let size = match self.storage.stat(&layout::upload_data(name, id.as_str())).await {
            Ok(meta) => meta.size,
            Err(e) if e.is_not_found() => 0,
            Err(e) => return Err(e.into()),
        };
        let hasher = if size == 0 {
            Some(Algorithm::Sha256.hasher())
        } else {
            let saved = layout::upload_hash_state(name, id.as_str(), Algorithm::Sha256, size);
            match self.storage.get(&saved).await {
                Ok(state) => Hasher::from_state(&state),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Session { size, hasher })
    }

    /// Reloads a session this process holds from storage: behind a load balancer, other
    /// servers may have appended to it since this one last saw it, and then its size and
    /// running hash here are stale. Called when a request does not fit what this process
    /// knows (an offset, a digest), so the common path costs no storage request.
    async fn refresh(&self, name: &RepoName, id: &UploadId, session: &mut Session) -> Result<()> {
        *session = self.load_session(name, id).await?;
        Ok(())
    }

    /// Bytes received so far by a session, as storage has them (the client asks to resume,
    /// maybe after sending chunks through other servers).
    pub async fn upload_size(&self, name: &RepoName, id: &UploadId) -> Result<u64> {
        let session = self.session(name, id).await?;
        let mut session = session.lock().await;
        self.refresh(name, id, &mut session).await?;
        Ok(session.size)
    }

    /// Appends a chunk; `start`, from `Content-Range`, must equal the bytes received so far.
    /// Returns the new size.
    pub async fn append_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        data: ByteStream,
    ) -> Result<u64> {
        let session = self.session(name, id).await?;
        let mut session = session.lock().await;
        self.check_start(name, id, &mut session, start).await?;
        self.append_locked(name, id, &mut session, data).await
    }

    /// Checks a chunk's `start` against the session's size, reloading the session once when
    /// they differ (another server may have received the chunks before it).
    async fn check_start(
        &self,
        name: &RepoName,
        id: &UploadId,
        session: &mut Session,
        start: Option<u64>,
    ) -> Result<()> {
        let Some(start) = start else { return Ok(()) };
        if start != session.size {
            self.refresh(name, id, session).await?;
            if start != session.size {
                return Err(Error::ChunkOutOfOrder { size: session.size });
            }
        }
        Ok(())
    }

    async fn append_locked(
        &self,
        name: &RepoName,
        id: &UploadId,
        session: &mut Session,
        data: ByteStream,
    ) -> Result<u64> {
        let path = layout::upload_data(name, id.as_str());
        let data = match self.max_blob_size {
            Some(max) => limited(data, session.size, max),
            None => data,
        };
        let data = super::blocks::reblocked(data);
        let (data, hashed) = match session.hasher.clone() {
            Some(hasher) => {
                let (data, hashed) = hashing(data, hasher);
                (data, Some(hashed))
            }
            None => (data, None),
        };
        match self.storage.append(&path, session.size, data).await {
            Ok(size) => {
                let previous = std::mem::replace(&mut session.size, size);
                session.hasher = match hashed {
                    Some(hashed) => Some(hashed.await.map_err(|e| StorageError::Backend {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })?),
                    None => None,
                };
                if let Some(hasher) = &session.hasher {
                    self.save_hash_state(name, id, hasher, previous, size).await?;
                }
                Ok(size)
            }
            Err(StorageError::OffsetMismatch { actual, .. }) => {
                // Another server appended to this session: take its size and running hash.
                self.refresh(name, id, session).await?;
                Err(Error::ChunkOutOfOrder { size: actual })
            }
            Err(StorageError::Body(e)) if e.get_ref().is_some_and(|inner| inner.is::<OverLimit>()) => {
                Err(Error::TooLarge(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Saves the running hash at `size` and drops the one saved at `previous`.
    async fn save_hash_state(
        &self,
        name: &RepoName,
        id: &UploadId,
        hasher: &Hasher,
        previous: u64,
        size: u64,
    ) -> Result<()> {
        let algorithm = hasher.algorithm();
        let path = layout::upload_hash_state(name, id.as_str(), algorithm, size);
        self.storage.put(&path, Bytes::from(hasher.to_state())).await?;
        if previous != size && previous > 0 {
            let old = layout::upload_hash_state(name, id.as_str(), algorithm, previous);
            if let Err(e) = self.storage.delete(&old).await
                && !e.is_not_found()
            {
                tracing::warn!(error = %e, "could not remove an old upload hash state");
            }
        }
        Ok(())
    }

    /// Finishes a session: appends the last chunk if any, checks the content against `digest`,
    /// and commits it as a blob of `name`. `start`, from the last chunk's `Content-Range`, must
    /// equal the bytes received so far. On a mismatch the session is cancelled.
    pub async fn finish_upload(
        &self,
        caller: &Caller,
        name: &RepoName,
        id: &UploadId,
        digest: &Digest,
        start: Option<u64>,
        last_chunk: Option<ByteStream>,
    ) -> Result<()> {
        let session = self.session(name, id).await?;
        let mut session = session.lock().await;
        self.check_start(name, id, &mut session, start).await?;
        // An empty body is no chunk: appending it at a size this server may not know to be
        // stale would refuse a finished upload.
        if let Some(data) = non_empty(last_chunk).await? {
            self.append_locked(name, id, &mut session, data).await?;
        }
        // A running hash that does not give the digest may be stale rather than wrong: chunks
        // may have gone through other servers since this one last saw the session.
        if session
            .hasher
            .as_ref()
            .is_some_and(|h| h.algorithm() == digest.algorithm() && h.clone().finish() != *digest)
        {
            self.refresh(name, id, &mut session).await?;
        }
        let mut data_path = layout::upload_data(name, id.as_str());
        let actual = match session.hasher.take() {
            Some(hasher) if hasher.algorithm() == digest.algorithm() => hasher.finish(),
            _ => {
                // No running hash in that algorithm: put the bytes in place (a backend may only
                // read appended bytes after a rename), then hash them.
                let staged = layout::upload_staged(name, id.as_str());
                if session.size > 0 {
                    self.commit(&mut session, &data_path, &staged).await?;
                }
                data_path = staged;
                self.rehash(&data_path, session.size, digest.algorithm()).await?
            }
        };
        if actual != *digest {
            drop(session);
            self.discard_upload(name, id).await?;
            return Err(Error::DigestInvalid(format!("content has digest {actual}")));
        }
        self.gc.protect(self.storage.as_ref(), std::slice::from_ref(digest)).await?;
        let blob = layout::blob_data(digest);
        let stored = match self.storage.stat(&blob).await {
            Ok(meta) => Some(meta.size),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        match stored {
            // Already stored: content-addressed, so the bytes are the same. Only the size is
            // compared (reading the stored blob again would cost a push its length).
            Some(size) if size == session.size => {}
            _ if session.size == 0 => self.storage.put(&blob, Bytes::new()).await?,
            _ => {
                if let Some(size) = stored {
                    // Bytes that cannot have this digest: replaced by the verified ones.
                    tracing::warn!(%digest, size, expected = session.size, "replacing a stored blob of the wrong size");
                }
                self.commit(&mut session, &data_path, &blob).await?;
            }
        }
        self.link_blob(name, digest).await?;
        let size = session.size;
        drop(session);
        self.discard_upload(name, id).await?;
        self.publish(name, caller, Happened::BlobPushed { digest: digest.clone(), size });
        Ok(())
    }

    /// Moves a session's bytes from `from` to `to`, provided they are still the `session.size`
    /// bytes it verified; when another server's append got in, the client learns the size now.
    async fn commit(
        &self,
        session: &mut Session,
        from: &crate::storage::StoragePath,
        to: &crate::storage::StoragePath,
    ) -> Result<()> {
        match self.storage.rename(from, to, session.size).await {
            Err(StorageError::OffsetMismatch { actual, .. }) => {
                session.size = actual;
                session.hasher = None;
                Err(Error::ChunkOutOfOrder { size: actual })
            }
            other => Ok(other?),
        }
    }

    /// Recomputes the digest of stored upload bytes with `algorithm`.
    async fn rehash(
        &self,
        path: &crate::storage::StoragePath,
        size: u64,
        algorithm: Algorithm,
    ) -> Result<Digest> {
        let mut hasher = algorithm.hasher();
        if size > 0 {
            let mut stream = self.storage.reader(path, None).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| StorageError::Backend { path: path.clone(), source })?;
                hasher.update(&chunk);
            }
        }
        Ok(hasher.finish())
    }

    /// Cancels a session at its client's request: deletes it and its bytes.
    pub async fn cancel_upload(&self, caller: &Caller, name: &RepoName, id: &UploadId) -> Result<()> {
        self.discard_upload(name, id).await?;
        self.publish(name, caller, Happened::UploadCancelled);
        Ok(())
    }

    /// Deletes a session and its bytes.
    async fn discard_upload(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        self.uploads.remove(name, id);
        match self.storage.delete(&layout::upload(name, id.as_str())).await {
            Err(e) if e.is_not_found() => Err(Error::BlobUploadUnknown),
            other => Ok(other?),
        }
    }
}

/// The current time in RFC 3339, as distribution writes `startedat`.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Converts days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How often a running server lets its storage backend tidy up (see [`crate::storage::Storage::tidy`]).
const TIDY_INTERVAL: Duration = Duration::from_secs(600);

/// The job name of the storage tidy-up's lease.
const TIDY_LEASE: &str = "tidy";

/// Lets the storage backend tidy up every [`TIDY_INTERVAL`], with `upload_max_age` as the age
/// past which incomplete writes are abandoned, whether or not collections are scheduled; upload
/// sessions idle for that long are forgotten from memory at the same time. Of the servers
/// sharing a storage, one at a time tidies it: the one holding the `tidy` lease (of
/// `lease_ttl`, see [`crate::lease`]); the others skip their turn.
pub fn spawn_tidy(registry: Arc<Registry>, upload_max_age: Duration, lease_ttl: Duration) {
    let lease_ttl = lease_ttl.max(crate::lease::MIN_TTL);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TIDY_INTERVAL, TIDY_INTERVAL);
        loop {
            ticks.tick().await;
            let cutoff = SystemTime::now().checked_sub(upload_max_age).unwrap_or(SystemTime::UNIX_EPOCH);
            let storage = registry.storage();
            match crate::lease::exclusive(storage, TIDY_LEASE, lease_ttl, storage.tidy(cutoff)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(removed = n, "removed incomplete writes of abandoned uploads"),
                Ok(Err(e)) => tracing::warn!(error = %e, "storage housekeeping failed; retrying later"),
                Err(crate::lease::LeaseError::Held { holder, .. }) => {
                    tracing::debug!(%holder, "storage housekeeping skipped: another process holds its lease");
                }
                Err(e) => tracing::warn!(error = %e, "storage housekeeping stopped; retrying later"),
            }
            let forgotten = registry.expire_upload_sessions(upload_max_age);
            if forgotten > 0 {
                tracing::info!(forgotten, "forgot upload sessions idle for longer than the upload age");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Caller;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    fn registry(dir: &tempfile::TempDir, max: usize) -> Registry {
        let storage = std::sync::Arc::new(crate::storage::FsStorage::new(dir.path()));
        Registry { uploads: Sessions::with_max(max), ..Registry::new(storage) }
    }

    fn chunk(bytes: &'static [u8]) -> ByteStream {
        futures_util::stream::iter(vec![Ok(Bytes::from_static(bytes))]).boxed()
    }

    fn in_memory(registry: &Registry) -> usize {
        registry.uploads.lock().len()
    }

    /// Issue 23, item 9: sessions abandoned by their clients stayed in memory for good.
    #[tokio::test]
    async fn abandoned_sessions_are_forgotten_when_tidy_expires_them_and_continue_from_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = registry(&dir, MAX_SESSIONS);
        let name = RepoName::parse("idle/uploads").expect("a name");
        let abandoned = registry.start_upload(&Caller::default(), &name).await.expect("start");
        registry.append_upload(&name, &abandoned, Some(0), chunk(b"abc")).await.expect("append");
        let idle_since = Instant::now();
        let busy = registry.start_upload(&Caller::default(), &name).await.expect("start");
        assert_eq!(registry.uploads.expire(idle_since), 1, "the one idle since then is forgotten");
        assert!(registry.uploads.get(&name, &busy).is_some() && in_memory(&registry) == 1);
        // What the tidy task calls, with its upload age: a session a request holds is kept.
        let held = registry.session(&name, &busy).await.expect("the session");
        assert_eq!(registry.expire_upload_sessions(Duration::ZERO), 0);
        drop(held);
        assert_eq!(registry.expire_upload_sessions(Duration::ZERO), 1);
        assert_eq!(registry.expire_upload_sessions(Duration::from_secs(3600)), 0);
        assert_eq!(in_memory(&registry), 0);
        // Forgotten is not lost: the client that comes back continues from storage.
        assert_eq!(registry.upload_size(&name, &abandoned).await.expect("size"), 3);
        registry.append_upload(&name, &abandoned, Some(3), chunk(b"def")).await.expect("append");
        let digest = Digest::of(Algorithm::Sha256, b"abcdef");
        registry
            .finish_upload(&Caller::default(), &name, &abandoned, &digest, None, None)
            .await
            .expect("finish");
    }

    /// Behind a round-robin load balancer a session's requests go to different servers: the
    /// one that started a session (and holds it in memory at size 0) finishes it after another
    /// server received its bytes, or gets its next chunk. Neither may take its stale memory
    /// for the truth (a stale running hash refused the digest and discarded the upload).
    #[tokio::test]
    async fn a_session_continues_on_a_server_that_saw_an_older_state_of_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (registry(&dir, MAX_SESSIONS), registry(&dir, MAX_SESSIONS));
        let name = RepoName::parse("balanced/uploads").expect("a name");
        let caller = Caller::default();

        // POST on A, PATCH on B, PUT on A.
        let id = a.start_upload(&caller, &name).await.expect("start");
        b.append_upload(&name, &id, None, chunk(b"through b")).await.expect("append on b");
        let digest = Digest::of(Algorithm::Sha256, b"through b");
        // The PUT's body is empty, not absent, as clients send it.
        a.finish_upload(&caller, &name, &id, &digest, None, Some(chunk(b""))).await.expect("finish on a");
        assert!(a.storage.stat(&layout::blob_data(&digest)).await.is_ok());

        // Chunks alternating between A and B, with their offsets, then a wrong digest: refused.
        let id = a.start_upload(&caller, &name).await.expect("start");
        a.append_upload(&name, &id, Some(0), chunk(b"one ")).await.expect("on a");
        b.append_upload(&name, &id, Some(4), chunk(b"two ")).await.expect("on b");
        a.append_upload(&name, &id, Some(8), chunk(b"three")).await.expect("on a again");
        assert_eq!(b.upload_size(&name, &id).await.expect("size on b"), 13);
        // An offset that is stale for every server is still refused, with the size now.
        let stale = b.append_upload(&name, &id, Some(4), chunk(b"again")).await.err();
        assert!(matches!(stale, Some(Error::ChunkOutOfOrder { size: 13 })), "{stale:?}");
        let digest = Digest::of(Algorithm::Sha256, b"one two three");
        b.finish_upload(&caller, &name, &id, &digest, None, Some(chunk(b""))).await.expect("finish on b");
        let wrong = Digest::of(Algorithm::Sha256, b"not it");
        let id = a.start_upload(&caller, &name).await.expect("start");
        b.append_upload(&name, &id, None, chunk(b"data")).await.expect("append on b");
        let refused = a.finish_upload(&caller, &name, &id, &wrong, None, None).await.err().map(|e| e.code());
        assert_eq!(refused, Some("DIGEST_INVALID"));
    }

    /// Issue 23, item 9: the map of sessions is bounded; at the bound the idlest is forgotten,
    /// and when every one is in use a new session is refused with 429 and leaves nothing.
    #[tokio::test]
    async fn the_sessions_in_memory_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = registry(&dir, 2);
        let name = RepoName::parse("many/uploads").expect("a name");
        let first = registry.start_upload(&Caller::default(), &name).await.expect("start");
        registry.append_upload(&name, &first, Some(0), chunk(b"first")).await.expect("append");
        let second = registry.start_upload(&Caller::default(), &name).await.expect("start");
        let third = registry.start_upload(&Caller::default(), &name).await.expect("start");
        assert_eq!(in_memory(&registry), 2);
        assert!(registry.uploads.get(&name, &first).is_none(), "the idlest is forgotten");
        // ...and loaded again from storage when its client comes back, in place of the idlest.
        assert_eq!(registry.upload_size(&name, &first).await.expect("size"), 5);
        assert!(registry.uploads.get(&name, &second).is_none());
        assert_eq!(in_memory(&registry), 2);

        let held = [registry.session(&name, &first).await, registry.session(&name, &third).await];
        let refused = registry
            .start_upload(&Caller::default(), &name)
            .await
            .err()
            .map(|e| (e.code(), e.status().as_u16()));
        assert_eq!(refused, Some(("TOOMANYREQUESTS", 429)), "a new session at the bound is refused");
        let stored = registry.storage.list(&layout::repository(&name).join("_uploads")).await.expect("list");
        assert_eq!(stored.len(), 3, "the refused session left nothing in storage");
        drop(held);
        assert!(
            registry.start_upload(&Caller::default(), &name).await.is_ok(),
            "room again once a session is released"
        );
    }

    #[test]
    fn upload_ids_are_uuids() {
        assert!(UploadId::parse("../../etc").is_err());
        let id = UploadId::new();
        assert_eq!(UploadId::parse(id.as_str()).ok(), Some(id));
    }
}
