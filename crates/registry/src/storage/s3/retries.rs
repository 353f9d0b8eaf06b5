//! Reading again what S3 may not show yet, or sent only in part.
//!
//! Right after a write, S3 may still answer NoSuchKey for the object (AWS advises waiting after
//! versioning is first enabled on a bucket, and this server reads its own upload states, tails,
//! forwards and links back at once). A read of a key this process wrote moments ago and has not
//! deleted is therefore retried for a few seconds before "not found" is believed; a read of any
//! other key is answered at once, so a miss costs nothing.

use std::time::{Duration, Instant};

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use bytes::Bytes;

use super::S3Storage;
use crate::storage::{StorageError, StoragePath};

/// How many times a whole small object is requested when its body arrives cut short (the SDK
/// retries failed requests, but not a body that breaks off after the headers came).
const READ_ATTEMPTS: u32 = 3;
/// How long after writing a key a "not found" for it may be S3 not showing it yet.
const FRESH_WINDOW: Duration = Duration::from_secs(60);
/// The waits before each read again of a fresh key found missing: 3.1 s in all.
const FRESH_RETRIES: [Duration; 6] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];
/// Fresh keys remembered at most (a busy server forgets the oldest rather than grow).
const FRESH_MAX: usize = 4096;

impl S3Storage {
    /// Remembers that this process has just written `key`.
    pub(super) fn wrote(&self, key: &str) {
        let Ok(mut fresh) = self.fresh.lock() else { return };
        if fresh.len() >= FRESH_MAX {
            fresh.retain(|_, at| at.elapsed() < FRESH_WINDOW);
            if fresh.len() >= FRESH_MAX {
                fresh.clear();
            }
        }
        fresh.insert(key.to_string(), Instant::now());
    }

    /// True when this process wrote `key` moments ago (and has not deleted it since).
    pub(super) fn is_fresh(&self, key: &str) -> bool {
        self.fresh.lock().is_ok_and(|f| f.get(key).is_some_and(|at| at.elapsed() < FRESH_WINDOW))
    }

    /// Runs a read of `key`; while it answers "not found" for a key this process has just
    /// written, waits and reads again (a few seconds in all), since S3 may not show it yet.
    pub(super) async fn read_fresh<T, F, Fut>(&self, key: &str, read: F) -> Result<T, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut waits = FRESH_RETRIES.iter();
        loop {
            match read().await {
                Err(e) if e.is_not_found() && self.is_fresh(key) => match waits.next() {
                    Some(wait) => {
                        tracing::debug!(
                            key,
                            "S3 does not show an object this server just wrote yet; reading again"
                        );
                        tokio::time::sleep(*wait).await;
                    }
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }

    /// Reads the whole object `request` opens, with its ETag. A body cut short is requested
    /// again, up to [`READ_ATTEMPTS`] times: the objects read whole are small (links, upload
    /// state, tails), and a commit must not fail on one broken connection.
    pub(super) async fn read_whole<F, Fut>(
        &self,
        path: &StoragePath,
        request: F,
    ) -> Result<(Bytes, String), StorageError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<GetObjectOutput, StorageError>>,
    {
        let mut attempt = 1;
        loop {
            let out = request().await?;
            let etag = out.e_tag().unwrap_or_default().to_string();
            match out.body.collect().await {
                Ok(body) => return Ok((body.into_bytes(), etag)),
                Err(e) if attempt < READ_ATTEMPTS => {
                    tracing::debug!(%path, error = %e, attempt, "S3 body cut short; reading again");
                    attempt += 1;
                }
                Err(e) => return Err(Self::backend(path)(e)),
            }
        }
    }
}
