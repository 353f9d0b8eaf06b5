//! Commits (`rename` of an upload) as forwards, settled into place in the background.
//!
//! The multipart upload itself targets a key of its own (`_regctl-s3/objects/<uuid>`), not the
//! upload's. S3 cannot rename, and copying a 5 GiB layer server-side takes longer than clients
//! wait for a commit, so `rename` of an upload completes the multipart upload where it is and
//! commits by writing a small forward object next to the destination:
//!
//! ```text
//! <to>.s3link                          {"source": ..., "target": <to>, "size": ..., "pending": ...}
//! _regctl-s3/pending/<uuid>            the same record, so a crashed copy is found again
//! ```
//!
//! Readers of `<to>` follow the forward until a background task has copied the bytes into
//! place (distribution's layout, so `registry:2` can read the bucket), removed the forward and,
//! after a grace period for reads already under way, the source. A crash leaves the pending
//! record, which [`Storage::tidy`] finishes later.

use std::io;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{INTERNAL_DIR, LINK_SUFFIX, S3Storage, STATE_SUFFIX, internal_path};
use crate::storage::{ObjectMeta, Storage, StorageError, StoragePath};

/// How long a source outlives its forward, for reads that followed the forward just before.
const SOURCE_GRACE: Duration = Duration::from_secs(30);
/// Pending copies younger than this belong to a live process; `tidy` leaves them alone.
pub(super) const PENDING_MIN_AGE: Duration = Duration::from_secs(3600);

/// An object committed by `rename` whose bytes are still at `source`: kept at `<target>.s3link`
/// and at `pending` until a copy has put them at `target`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Forward {
    pub(super) source: String,
    pub(super) target: String,
    pub(super) size: u64,
    pub(super) pending: String,
}

impl S3Storage {
    /// Commits the upload at `from` as the object at `to`, for [`Storage::rename`].
    pub(super) async fn commit(
        &self,
        from: &StoragePath,
        to: &StoragePath,
        size: u64,
    ) -> Result<(), StorageError> {
        let (from_key, to_key) = (self.key(from), self.key(to));
        let mismatch = |actual| StorageError::OffsetMismatch { path: from.clone(), actual };
        let Some(mut state) = self.load_state(from).await? else {
            // A whole object (rare: uploads are renamed from their state below): copy it.
            let (source, meta) = self.locate(from, &from_key).await?;
            if meta.size != size {
                return Err(mismatch(meta.size));
            }
            self.copy(from, &source, &to_key, meta.size).await?;
            return self.delete(from).await;
        };
        let mut leftovers = vec![format!("{from_key}{STATE_SUFFIX}")];
        let total = state.size();
        if total != size {
            return Err(mismatch(total));
        }
        match (&state.upload_id, state.tail.take()) {
            (None, tail) => {
                // Everything is in the tail (smaller than a part): write it where it belongs.
                let data = match &tail {
                    Some((tail_key, _)) => self.get_key(from, tail_key).await?,
                    None => Bytes::new(),
                };
                self.put_key(to, &to_key, data).await?;
                leftovers.extend(tail.map(|t| t.0));
            }
            (Some(upload_id), tail) => {
                let source = state.data_key.clone().unwrap_or_else(|| from_key.clone());
                leftovers.extend(tail.as_ref().map(|(tail_key, _)| tail_key.clone()));
                // A rename that was cut short after completing the multipart upload left the
                // whole object in place: the upload id is gone, so finish from there.
                let completed = match self.head_meta(from, &source).await {
                    Ok(meta) => meta.size == total,
                    Err(e) if e.is_not_found() => false,
                    Err(e) => return Err(e),
                };
                if !completed {
                    if let Some((tail_key, _)) = &tail {
                        let data = self.get_key(from, tail_key).await?;
                        let number = state.parts.last().map_or(1, |p| p.number + 1);
                        state.parts.push(self.upload_part(from, &source, upload_id, number, data).await?);
                    }
                    self.complete_multipart(from, &source, upload_id, &state.parts).await?;
                    // The object is what the forward will stand for: its size must be the one
                    // the caller verified (one HEAD, whatever the size).
                    let completed = self.head_meta(from, &source).await?.size;
                    if completed != total {
                        let message = format!("the completed upload holds {completed} bytes, not {total}");
                        return Err(Self::backend(from)(io::Error::other(message)));
                    }
                }
                if state.data_key.is_some() {
                    let forward = self.write_forward(to, to_key, source, total).await?;
                    self.spawn_settle(forward);
                } else {
                    // Begun before uploads had keys of their own: the bytes are at the upload's.
                    self.copy(from, &source, &to_key, total).await?;
                    leftovers.push(source);
                }
            }
        }
        self.delete_keys(from, leftovers).await
    }

    /// Starts reading the object at `key` (or `range` of it), following its forward when the
    /// bytes are not in place yet.
    pub(super) async fn open(
        &self,
        path: &StoragePath,
        key: &str,
        range: Option<&Range<u64>>,
    ) -> Result<GetObjectOutput, StorageError> {
        match self.get_object(path, key, range).await {
            Err(e) if e.is_not_found() => {}
            other => return other,
        }
        // Look again, in one listing: the copy may have just put the bytes in place.
        let found = self.siblings(path, key).await?;
        let source = if found.iter().any(|k| k == key) {
            key.to_string()
        } else if let Some(forward) = self.forward_in(path, key, &found).await? {
            forward.source
        } else {
            return Err(StorageError::NotFound(path.clone()));
        };
        self.get_object(path, &source, range).await
    }

    /// Where the bytes of the object at `key` are (the key itself, or its forward's source), and
    /// how many there are.
    pub(super) async fn locate(
        &self,
        path: &StoragePath,
        key: &str,
    ) -> Result<(String, ObjectMeta), StorageError> {
        match self.head_meta(path, key).await {
            Err(e) if e.is_not_found() => {}
            other => return other.map(|meta| (key.to_string(), meta)),
        }
        let found = self.siblings(path, key).await?;
        if found.iter().any(|k| k == key) {
            return Ok((key.to_string(), self.head_meta(path, key).await?));
        }
        match self.forward_in(path, key, &found).await? {
            Some(forward) => Ok((forward.source, ObjectMeta { size: forward.size, modified: None })),
            None => Err(StorageError::NotFound(path.clone())),
        }
    }

    /// The forward of `key`, when `found` (from [`S3Storage::siblings`]) lists one.
    pub(super) async fn forward_in(
        &self,
        path: &StoragePath,
        key: &str,
        found: &[String],
    ) -> Result<Option<Forward>, StorageError> {
        let link = format!("{key}{LINK_SUFFIX}");
        if !found.contains(&link) {
            return Ok(None);
        }
        self.get_json(path, &link).await
    }

    /// Commits the object `target` as a forward to the bytes at `source`: two small writes,
    /// whatever the size. The caller then has the bytes copied into place ([`S3Storage::settle`]).
    pub(super) async fn write_forward(
        &self,
        path: &StoragePath,
        target: String,
        source: String,
        size: u64,
    ) -> Result<Forward, StorageError> {
        let pending = format!("{}{INTERNAL_DIR}/pending/{}", self.prefix, uuid::Uuid::new_v4().simple());
        let forward = Forward { source, target, size, pending };
        // The pending record first: whatever a crash interrupts after it, `tidy` finishes.
        self.put_json(path, &forward.pending, &forward).await?;
        self.put_json(path, &format!("{}{LINK_SUFFIX}", forward.target), &forward).await?;
        Ok(forward)
    }

    /// Settles a forward in the background; a failure is left for `tidy`.
    pub(super) fn spawn_settle(&self, forward: Forward) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.settle(&forward, SOURCE_GRACE).await {
                tracing::warn!(
                    target = forward.target,
                    error = %e,
                    "could not copy a committed upload into place yet; it is served from where it was uploaded until tidied"
                );
            }
        });
    }

    /// Puts a forwarded object's bytes at its target, removes the forward, then, `grace` later,
    /// the source and the pending record. A forward that is gone (the object was deleted, or the
    /// commit never happened) leaves nothing to copy.
    pub(super) async fn settle(&self, forward: &Forward, grace: Duration) -> Result<(), StorageError> {
        let path = internal_path();
        let link = format!("{}{LINK_SUFFIX}", forward.target);
        let found = self.siblings(&path, &forward.target).await?;
        if found.contains(&link) {
            if !found.contains(&forward.target) {
                self.copy(&path, &forward.source, &forward.target, forward.size).await?;
            }
            self.delete_keys(&path, vec![link]).await?;
        }
        tokio::time::sleep(grace).await;
        self.delete_keys(&path, vec![forward.source.clone(), forward.pending.clone()]).await
    }

    /// Settles the forwards whose pending records are older than `min_age` (younger ones belong
    /// to a live process that is settling them).
    pub(super) async fn settle_pending(&self, min_age: Duration) -> Result<(), StorageError> {
        let path = internal_path();
        let pending = StoragePath::new([INTERNAL_DIR, "pending"]);
        let settled_before = SystemTime::now().checked_sub(min_age).unwrap_or(SystemTime::UNIX_EPOCH);
        for (name, meta) in self.walk(&pending).await? {
            if meta.modified.is_none_or(|m| m > settled_before) {
                continue;
            }
            let Some(listed) = pending.join_listed(&name) else { continue };
            if let Some(forward) = self.get_json::<Forward>(&path, &self.key(&listed)).await? {
                self.settle(&forward, Duration::ZERO).await?;
            }
        }
        Ok(())
    }
}
