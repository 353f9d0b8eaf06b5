//! Appends as S3 multipart uploads, kept entirely in the bucket.
//!
//! Appends are S3 multipart uploads kept entirely in the bucket, so an upload survives a
//! restart and can be continued by another server sharing the bucket:
//!
//! ```text
//! <key>.s3upload          JSON state: the multipart upload id, the parts so far, the tail object
//! <key>.s3tail-<end>      the last bytes that did not fill a part (< part size), if any
//! ```
//!
//! A chunk is cut into parts of the configured size as it streams in; at most one part is
//! being filled while the previous one uploads, so memory per upload stays at two parts.
//! The state object is written last: it is the commit point of an append, so a failed or
//! interrupted append leaves the upload exactly as it was.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use memmap2::MmapMut;
use serde::{Deserialize, Serialize};

use super::{INTERNAL_DIR, S3Storage, STATE_SUFFIX, TAIL_INFIX, internal_path};
use crate::storage::{ByteStream, Condition, ETag, Storage, StorageError, StoragePath};

/// What an append has stored so far, kept in `<key>.s3upload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct UploadState {
    /// The multipart upload, created when the first full part is ready.
    pub(super) upload_id: Option<String>,
    /// Parts uploaded, in order.
    pub(super) parts: Vec<Part>,
    /// Key of the tail object and its length, when bytes wait for a full part.
    pub(super) tail: Option<(String, u64)>,
    /// The key the multipart upload writes to; the upload's own key in states written before
    /// uploads had keys of their own.
    #[serde(default)]
    pub(super) data_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Part {
    pub(super) number: i32,
    pub(super) etag: String,
    pub(super) size: u64,
}

impl UploadState {
    pub(super) fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum::<u64>() + self.tail.as_ref().map_or(0, |t| t.1)
    }
}

impl S3Storage {
    /// A fresh key for the object a multipart upload writes, named after the time it begins
    /// (see [`S3Storage::begun_at`]).
    pub(super) fn new_object_key(&self) -> String {
        let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("{}{INTERNAL_DIR}/objects/{secs}-{}", self.prefix, uuid::Uuid::new_v4().simple())
    }

    /// When the multipart upload of `key` began: from the key's name for this backend's own
    /// objects (our clock, not the endpoint's idea of `Initiated`, which emulators get wrong),
    /// else `initiated`.
    pub(super) fn begun_at(&self, key: &str, initiated: Option<SystemTime>) -> Option<SystemTime> {
        let name = key.strip_prefix(&format!("{}{INTERNAL_DIR}/objects/", self.prefix));
        match name.and_then(|n| n.split_once('-')) {
            Some((secs, _)) => secs.parse().ok().map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            None => initiated,
        }
    }

    pub(super) async fn load_state(&self, path: &StoragePath) -> Result<Option<UploadState>, StorageError> {
        Ok(self.load_state_tagged(path).await?.map(|(state, _)| state))
    }

    /// An upload's state with the ETag of the object holding it, for [`S3Storage::save_state`].
    pub(super) async fn load_state_tagged(
        &self,
        path: &StoragePath,
    ) -> Result<Option<(UploadState, String)>, StorageError> {
        let key = format!("{}{STATE_SUFFIX}", self.key(path));
        let (body, etag) = match self.read_whole(path, || self.get_object(path, &key, None)).await {
            Ok(read) => read,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let state = serde_json::from_slice(&body).map_err(Self::backend(path))?;
        Ok(Some((state, etag)))
    }

    /// Saves an upload's state only if the stored one is still the one loaded (`loaded`: its
    /// ETag, or `None` for no state at all): a conditional write, so that of two servers
    /// appending to one upload at once only one commits its append. Returns whether it did.
    pub(super) async fn save_state(
        &self,
        path: &StoragePath,
        state: &UploadState,
        loaded: Option<&str>,
    ) -> Result<bool, StorageError> {
        let key = format!("{}{STATE_SUFFIX}", self.key(path));
        let json = Bytes::from(serde_json::to_vec(state).map_err(Self::backend(path))?);
        let loaded = loaded.map(ETag::new);
        let condition = match &loaded {
            Some(etag) => Condition::Unchanged(etag),
            None => Condition::Absent,
        };
        match self.put_key_if(path, &key, json, condition).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_precondition() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Appends `data` at `offset`, for [`Storage::append`].
    pub(super) async fn append_stream(
        &self,
        path: &StoragePath,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<u64, StorageError> {
        let key = self.key(path);
        let (mut state, loaded) = match self.load_state_tagged(path).await? {
            Some((state, etag)) => (state, Some(etag)),
            None if offset == 0 => (UploadState::default(), None),
            None => {
                let actual = match self.stat(path).await {
                    Ok(meta) => meta.size,
                    Err(e) if e.is_not_found() => 0,
                    Err(e) => return Err(e),
                };
                return Err(StorageError::OffsetMismatch { path: path.clone(), actual });
            }
        };
        let actual = state.size();
        if actual != offset {
            return Err(StorageError::OffsetMismatch { path: path.clone(), actual });
        }
        let old_tail = state.tail.take();
        let had_upload = state.upload_id.is_some();
        let mut buffer = PartBuffer::new(path, self.part_size)?;
        if let Some((tail_key, _)) = &old_tail {
            buffer.fill(&mut self.get_key(path, tail_key).await?);
        }
        let mut uploaded = Vec::new();
        let mut in_flight: Option<tokio::task::JoinHandle<Result<Part, StorageError>>> = None;
        let mut next_number = state.parts.last().map_or(1, |p| p.number + 1);
        let streamed: Result<(), StorageError> = async {
            while let Some(chunk) = data.next().await {
                let mut chunk = chunk.map_err(StorageError::Body)?;
                while !chunk.is_empty() {
                    buffer.fill(&mut chunk);
                    if !buffer.is_full() {
                        continue;
                    }
                    // A mapping's pages cost nothing until written, so the next buffer can be
                    // mapped before the previous part has finished sending.
                    let part = std::mem::replace(&mut buffer, PartBuffer::new(path, self.part_size)?)
                        .freeze(path)?;
                    let upload_id = match &state.upload_id {
                        Some(id) => id.clone(),
                        None => {
                            let data_key = self.new_object_key();
                            let id = self.create_multipart(path, &data_key).await?;
                            state.data_key = Some(data_key);
                            state.upload_id = Some(id.clone());
                            id
                        }
                    };
                    if let Some(previous) = in_flight.take() {
                        uploaded.push(previous.await.map_err(Self::backend(path))??);
                    }
                    let target = state.data_key.clone().unwrap_or_else(|| key.clone());
                    let (this, path, number) = (self.clone(), path.clone(), next_number);
                    next_number += 1;
                    in_flight = Some(tokio::spawn(async move {
                        this.upload_part(&path, &target, &upload_id, number, part).await
                    }));
                }
            }
            Ok(())
        }
        .await;
        // Never return while a part upload still runs: a later append may reuse its number.
        let last = match in_flight.take() {
            Some(handle) => Some(handle.await.map_err(Self::backend(path)).and_then(|r| r)),
            None => None,
        };
        streamed?;
        if let Some(part) = last {
            uploaded.push(part?);
        }
        state.parts.extend(uploaded);
        let size = state.size() + buffer.len as u64;
        if buffer.len > 0 {
            // Unique: an append from another server that ends at the same size must not
            // replace the bytes this state names.
            let tail_key = format!("{key}{TAIL_INFIX}{size}-{}", uuid::Uuid::new_v4().simple());
            let len = buffer.len as u64;
            self.put_key(path, &tail_key, buffer.freeze(path)?).await?;
            state.tail = Some((tail_key, len));
        }
        if !self.save_state(path, &state, loaded.as_deref()).await? {
            // Another append (or a commit) got in first: this one never happened. Its parts, if
            // it uploaded any to a shared multipart upload, fail that upload's completion (their
            // ETags are not the recorded ones) rather than end up in an object.
            let orphans = state.tail.iter().map(|(k, _)| k.clone()).collect();
            if let Err(e) = self.delete_keys(path, orphans).await {
                tracing::warn!(error = %e, "could not remove the tail of an append that lost a race");
            }
            if let (false, Some(id), Some(data_key)) = (had_upload, &state.upload_id, &state.data_key) {
                self.abort(id, data_key).await;
            }
            let actual = self.load_state(path).await?.map_or(0, |s| s.size());
            return Err(StorageError::OffsetMismatch { path: path.clone(), actual });
        }
        if let Some((old_key, _)) = old_tail
            && state.tail.as_ref().is_none_or(|(k, _)| *k != old_key)
            && let Err(e) = self.delete_keys(path, vec![old_key]).await
        {
            tracing::warn!(error = %e, "could not remove an old upload tail");
        }
        Ok(size)
    }

    /// Aborts the multipart uploads under the root begun before `cutoff`; returns how many.
    pub(super) async fn abort_abandoned(&self, cutoff: SystemTime) -> Result<u64, StorageError> {
        let path = internal_path();
        let mut aborted = 0;
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(markers.0.take())
                .set_upload_id_marker(markers.1.take())
                .send()
                .await
                .map_err(Self::sdk_err(&path))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
                let initiated = upload.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                if key.starts_with(&self.prefix) && self.begun_at(key, initiated).is_some_and(|t| t < cutoff)
                {
                    self.abort(id, key).await;
                    aborted += 1;
                }
            }
            markers = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
            if page.is_truncated() != Some(true) || markers == (None, None) {
                return Ok(aborted);
            }
        }
    }
}

/// One part being filled, in an anonymous memory mapping of exactly the part's size: memory per
/// upload is the part being filled plus the one being sent, and each goes back to the OS once
/// sent (part-sized heap blocks would stay in glibc's per-thread arenas and grow the RSS).
struct PartBuffer {
    map: MmapMut,
    len: usize,
}

impl PartBuffer {
    /// An empty buffer of `size` bytes.
    fn new(path: &StoragePath, size: usize) -> Result<PartBuffer, StorageError> {
        let map =
            MmapMut::map_anon(size).map_err(|source| StorageError::Backend { path: path.clone(), source })?;
        Ok(PartBuffer { map, len: 0 })
    }

    /// Moves as many bytes from the front of `data` as fit.
    fn fill(&mut self, data: &mut Bytes) {
        let n = (self.map.len() - self.len).min(data.len());
        self.map[self.len..self.len + n].copy_from_slice(&data.split_to(n));
        self.len += n;
    }

    fn is_full(&self) -> bool {
        self.len == self.map.len()
    }

    /// The bytes filled so far.
    fn freeze(self, path: &StoragePath) -> Result<Bytes, StorageError> {
        let map = self
            .map
            .make_read_only()
            .map_err(|source| StorageError::Backend { path: path.clone(), source })?;
        Ok(Bytes::from_owner(map).slice(..self.len))
    }
}
