//! S3 storage (`aws-sdk-s3`), in the same layout as the filesystem, under a root prefix.
//!
//! One file per job, on one [`S3Storage`]:
//! - `client`: connecting, and the SDK calls the other parts are made of;
//! - `retries`: reading again what S3 may not show yet;
//! - `listing`: listings and walks, which hide this backend's own objects;
//! - `multipart`: appends as multipart uploads whose state is kept in the bucket;
//! - `commit`: renames of uploads as forwards, copied into place in the background.

mod client;
mod commit;
mod listing;
mod multipart;
mod retries;

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::ServerSideEncryption;
use bytes::Bytes;
use futures_util::{StreamExt, stream};

use super::{ByteStream, Condition, ETag, ObjectMeta, Storage, StorageError, StoragePath};
pub use client::connect;
use commit::{Forward, PENDING_MIN_AGE};
use multipart::UploadState;

/// Suffix of the object holding an upload's multipart state.
const STATE_SUFFIX: &str = ".s3upload";
/// Suffix of the forward that stands for an object whose bytes are still at their source.
const LINK_SUFFIX: &str = ".s3link";
/// Directory (under the root prefix) of this backend's own objects.
const INTERNAL_DIR: &str = "_regctl-s3";
/// Infix of the objects holding an upload's unfilled tail.
const TAIL_INFIX: &str = ".s3tail-";
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Storage in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    /// Key prefix with a trailing `/`, or empty.
    prefix: String,
    part_size: usize,
    encryption: Option<(ServerSideEncryption, Option<String>)>,
    /// Expiry of presigned blob URLs, when reads are redirected to S3.
    redirect: Option<Duration>,
    /// The keys this process wrote in the last [`retries::FRESH_WINDOW`], and when.
    fresh: Arc<Mutex<HashMap<String, Instant>>>,
}

/// The path named in errors about this backend's own objects.
fn internal_path() -> StoragePath {
    StoragePath::new([INTERNAL_DIR])
}

impl S3Storage {
    pub(super) fn key(&self, path: &StoragePath) -> String {
        format!("{}{}", self.prefix, path.as_str())
    }

    /// The key prefix of the objects inside directory `dir`.
    pub(super) fn dir_prefix(&self, dir: &StoragePath) -> String {
        if dir.as_str().is_empty() { self.prefix.clone() } else { format!("{}/", self.key(dir)) }
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn get(&self, path: &StoragePath) -> Result<Bytes, StorageError> {
        let key = self.key(path);
        let (body, _) = self.read_whole(path, || self.open(path, &key, None)).await?;
        Ok(body)
    }

    async fn reader(
        &self,
        path: &StoragePath,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        if range.as_ref().is_some_and(Range::is_empty) {
            return Ok(stream::empty().boxed());
        }
        let out = self.open(path, &self.key(path), range.as_ref()).await?;
        let body = stream::unfold(out.body, |mut body| async move {
            body.next().await.map(|chunk| (chunk.map_err(io::Error::other), body))
        });
        Ok(body.boxed())
    }

    async fn stat(&self, path: &StoragePath) -> Result<ObjectMeta, StorageError> {
        let key = self.key(path);
        match self.head_meta(path, &key).await {
            Err(e) if e.is_not_found() => {}
            other => return other,
        }
        let found = self.siblings(path, &key).await?;
        if found.contains(&key) {
            return self.head_meta(path, &key).await;
        }
        if found.contains(&format!("{key}{STATE_SUFFIX}"))
            && let Some(state) = self.load_state(path).await?
        {
            return Ok(ObjectMeta { size: state.size(), modified: None });
        }
        match self.forward_in(path, &key, &found).await? {
            Some(forward) => Ok(ObjectMeta { size: forward.size, modified: None }),
            None => Err(StorageError::NotFound(path.clone())),
        }
    }

    async fn put(&self, path: &StoragePath, data: Bytes) -> Result<(), StorageError> {
        self.put_key(path, &self.key(path), data).await
    }

    async fn get_tagged(&self, path: &StoragePath) -> Result<(Bytes, ETag), StorageError> {
        let key = self.key(path);
        let (body, etag) = self.read_whole(path, || self.open(path, &key, None)).await?;
        Ok((body, ETag::new(etag)))
    }

    async fn put_if(
        &self,
        path: &StoragePath,
        data: Bytes,
        condition: Condition<'_>,
    ) -> Result<ETag, StorageError> {
        self.put_key_if(path, &self.key(path), data, condition).await
    }

    async fn list(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError> {
        self.list_names_page(dir, None, usize::MAX).await
    }

    async fn list_page(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.list_names_page(dir, after, limit).await
    }

    async fn append(&self, path: &StoragePath, offset: u64, data: ByteStream) -> Result<u64, StorageError> {
        self.append_stream(path, offset, data).await
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath, size: u64) -> Result<(), StorageError> {
        self.commit(from, to, size).await
    }

    async fn delete(&self, path: &StoragePath) -> Result<(), StorageError> {
        let key = self.key(path);
        let mut keys = self.list_all(path, &format!("{key}/")).await?;
        keys.extend(self.siblings(path, &key).await?);
        if keys.is_empty() {
            return Err(StorageError::NotFound(path.clone()));
        }
        let mut owned = Vec::new();
        for k in &keys {
            if let Some(owner) = k.strip_suffix(STATE_SUFFIX) {
                if let Some(UploadState { upload_id: Some(id), data_key, .. }) =
                    self.get_json(path, k).await?
                {
                    self.abort(&id, data_key.as_deref().unwrap_or(owner)).await;
                }
            } else if k.ends_with(LINK_SUFFIX)
                && let Some(forward) = self.get_json::<Forward>(path, k).await?
            {
                owned.extend([forward.source, forward.pending]);
            }
        }
        keys.extend(owned);
        self.delete_keys(path, keys).await
    }

    async fn visit(
        &self,
        dir: &StoragePath,
        visitor: &mut (dyn FnMut(String, ObjectMeta) + Send),
    ) -> Result<(), StorageError> {
        self.visit_objects(dir, visitor).await
    }

    async fn redirect_url(&self, path: &StoragePath) -> Result<Option<String>, StorageError> {
        let Some(expiry) = self.redirect else { return Ok(None) };
        let (key, _) = self.locate(path, &self.key(path)).await?;
        let presigning = PresigningConfig::expires_in(expiry).map_err(Self::backend(path))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(Self::sdk_err(path))?;
        Ok(Some(request.uri().to_string()))
    }

    async fn tidy(&self, abandoned_before: SystemTime) -> Result<u64, StorageError> {
        self.settle_pending(PENDING_MIN_AGE).await?;
        self.abort_abandoned(abandoned_before).await
    }
}

#[cfg(test)]
mod tests {
    use super::client::urlencode_key;
    use super::multipart::Part;
    use super::*;
    use crate::config::S3Config;
    use crate::storage::suite;

    /// An S3 storage on a fresh bucket of a moto server, with 5 MiB parts.
    async fn moto_storage(moto: &suite::Moto, root: &str) -> S3Storage {
        let mut config = S3Config::for_bucket(format!("b{}", uuid::Uuid::new_v4().simple()));
        config.region = Some("us-east-1".into());
        config.regionendpoint = Some(moto.endpoint.clone());
        config.forcepathstyle = true;
        config.accesskey = Some("testing".into());
        config.secretkey = Some(crate::config::Secret::new("testing".into()));
        config.rootdirectory = root.into();
        config.chunksize = MIN_PART_SIZE;
        let storage = S3Storage::new(&config).await;
        storage.client.create_bucket().bucket(&config.bucket).send().await.expect("create bucket");
        storage
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_storage_suite_on_moto() {
        let Some(moto) = suite::start_moto() else { return };
        let storage = moto_storage(&moto, "/image-registry").await;
        suite::run(&storage).await;
        // Everything lives under the root directory, as distribution's S3 driver puts it.
        let keys = storage.list_all(&StoragePath::new(["x"]), "").await.expect("list");
        assert!(!keys.is_empty() && keys.iter().all(|k| k.starts_with("image-registry/")), "{keys:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multipart_appends_across_parts_and_commit_without_local_state() {
        let Some(moto) = suite::start_moto() else { return };
        let storage = moto_storage(&moto, "").await;
        let upload = StoragePath::new(["_uploads/u1/data"]);
        let blob = StoragePath::new(["blobs/x/data"]);
        let content: Vec<u8> = (0..(13 << 20)).map(|i: u32| (i % 251) as u8).collect();
        // A small chunk (buffered as the tail), then a big one spanning two parts, then a tail.
        let pieces = [&content[..1000], &content[1000..(11 << 20)], &content[(11 << 20)..]];
        let mut offset = 0;
        for piece in pieces {
            let chunk: ByteStream = stream::iter(vec![Ok(Bytes::copy_from_slice(piece))]).boxed();
            // A fresh client each time: nothing may depend on this process's memory.
            let again = S3Storage { client: storage.client.clone(), ..storage.clone() };
            offset = again.append(&upload, offset, chunk).await.expect("append");
            assert_eq!(again.stat(&upload).await.expect("stat").size, offset);
        }
        assert_eq!(offset, content.len() as u64);
        storage.rename(&upload, &blob, offset).await.expect("commit");
        assert_eq!(storage.get(&blob).await.expect("get").as_ref(), content.as_slice());
        assert!(storage.list(&StoragePath::new(["_uploads/u1"])).await.expect("list").is_empty());
        let leftovers = storage.list_all(&upload, "_uploads/").await.expect("list");
        assert!(leftovers.is_empty(), "upload objects left behind: {leftovers:?}");
        // The background copy puts the bytes at the blob's own key (distribution's layout) and
        // drops the forward.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let keys = storage.list_all(&blob, "blobs/").await.expect("list");
            if keys == ["blobs/x/data"] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never copied into place: {keys:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let raw = storage.get_key(&blob, "blobs/x/data").await.expect("raw get");
        assert_eq!(raw.as_ref(), content.as_slice());
    }

    /// Appends `content` as an upload at `path` in parts and completes its multipart upload,
    /// returning the object's key (what `rename` does before it writes a forward).
    async fn completed_upload(storage: &S3Storage, path: &StoragePath, content: &[u8]) -> String {
        let chunk: ByteStream = stream::iter(vec![Ok(Bytes::copy_from_slice(content))]).boxed();
        storage.append(path, 0, chunk).await.expect("append");
        let mut state = storage.load_state(path).await.expect("state").expect("a state");
        let (upload_id, source) =
            (state.upload_id.clone().expect("id"), state.data_key.clone().expect("key"));
        let mut leftovers = vec![format!("{}{STATE_SUFFIX}", storage.key(path))];
        if let Some((tail_key, _)) = state.tail.take() {
            let data = storage.get_key(path, &tail_key).await.expect("tail");
            let number = state.parts.len() as i32 + 1;
            state
                .parts
                .push(storage.upload_part(path, &source, &upload_id, number, data).await.expect("part"));
            leftovers.push(tail_key);
        }
        storage.complete_multipart(path, &source, &upload_id, &state.parts).await.expect("complete");
        storage.delete_keys(path, leftovers).await.expect("delete the upload's state");
        source
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_cut_short_after_completing_the_multipart_upload_finishes_on_retry() {
        let Some(moto) = suite::start_moto() else { return };
        let storage = moto_storage(&moto, "").await;
        let upload = StoragePath::new(["_uploads/u6/data"]);
        let content: Vec<u8> = (0..(7 << 20) + 9).map(|i: u32| (i % 249) as u8).collect();
        let chunk: ByteStream = stream::iter(vec![Ok(Bytes::from(content.clone()))]).boxed();
        storage.append(&upload, 0, chunk).await.expect("append");
        // The first attempt sent the tail and completed the upload, then the process died.
        let state = storage.load_state(&upload).await.expect("state").expect("a state");
        let (id, source) = (state.upload_id.clone().expect("id"), state.data_key.clone().expect("key"));
        let (tail_key, _) = state.tail.clone().expect("a tail");
        let tail = storage.get_key(&upload, &tail_key).await.expect("tail");
        let mut parts = state.parts.clone();
        parts.push(storage.upload_part(&upload, &source, &id, 2, tail).await.expect("part"));
        storage.complete_multipart(&upload, &source, &id, &parts).await.expect("complete");

        let blob = StoragePath::new(["blobs/u/data"]);
        storage.rename(&upload, &blob, content.len() as u64).await.expect("the retried commit");
        assert_eq!(storage.get(&blob).await.expect("get").as_ref(), content.as_slice());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forward_reads_as_the_object_until_settled_into_place() {
        let Some(moto) = suite::start_moto() else { return };
        let storage = moto_storage(&moto, "root").await;
        let content: Vec<u8> = (0..(6 << 20) + 17).map(|i: u32| (i % 253) as u8).collect();
        let source = completed_upload(&storage, &StoragePath::new(["_uploads/u3/data"]), &content).await;
        let blob = StoragePath::new(["blobs/y/data"]);
        let forward = storage
            .write_forward(&blob, storage.key(&blob), source.clone(), content.len() as u64)
            .await
            .expect("forward");
        // Committed: every read sees the whole object, though no byte is at its key yet.
        assert!(storage.head_meta(&blob, &storage.key(&blob)).await.is_err_and(|e| e.is_not_found()));
        assert_eq!(storage.stat(&blob).await.expect("stat").size, content.len() as u64);
        assert_eq!(storage.get(&blob).await.expect("get").as_ref(), content.as_slice());
        assert_eq!(
            suite::read_all(&storage, &blob, Some(5..(6 << 20) + 10)).await,
            content[5..(6 << 20) + 10]
        );
        assert_eq!(storage.list(&StoragePath::new(["blobs/y"])).await.expect("list"), ["data"]);
        let walked = storage.walk(&StoragePath::new(["blobs"])).await.expect("walk");
        assert_eq!(walked.len(), 1);
        assert_eq!((walked[0].0.as_str(), walked[0].1.size), ("y/data", content.len() as u64));
        // Nothing internal shows at the root.
        assert!(
            !storage
                .list(&StoragePath::new(Vec::<&str>::new()))
                .await
                .expect("list")
                .contains(&INTERNAL_DIR.to_string())
        );

        storage.settle(&forward, Duration::ZERO).await.expect("settle");
        assert_eq!(storage.list_all(&blob, "root/blobs/").await.expect("list"), ["root/blobs/y/data"]);
        let internal = storage.list_all(&blob, "root/_regctl-s3/").await.expect("list");
        assert!(internal.is_empty(), "source or record left after settling: {internal:?}");
        assert_eq!(storage.get(&blob).await.expect("get").as_ref(), content.as_slice());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_a_forwarded_object_removes_its_source_and_record() {
        let Some(moto) = suite::start_moto() else { return };
        let storage = moto_storage(&moto, "").await;
        let content = vec![7u8; (5 << 20) + 1];
        let source = completed_upload(&storage, &StoragePath::new(["_uploads/u4/data"]), &content).await;
        let blob = StoragePath::new(["blobs/z/data"]);
        storage
            .write_forward(&blob, storage.key(&blob), source, content.len() as u64)
            .await
            .expect("forward");
        storage.delete(&StoragePath::new(["blobs/z"])).await.expect("delete");
        assert!(storage.stat(&blob).await.is_err_and(|e| e.is_not_found()));
        let keys = storage.list_all(&blob, "").await.expect("list");
        assert!(keys.is_empty(), "left behind: {keys:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tidy_settles_what_a_crash_left_and_aborts_abandoned_uploads() {
        let Some(moto) = suite::start_moto() else { return };
        let storage = moto_storage(&moto, "").await;
        // A process wrote a forward and died before copying.
        let content = vec![3u8; (5 << 20) + 3];
        let source = completed_upload(&storage, &StoragePath::new(["_uploads/u5/data"]), &content).await;
        let blob = StoragePath::new(["blobs/w/data"]);
        storage
            .write_forward(&blob, storage.key(&blob), source, content.len() as u64)
            .await
            .expect("forward");
        // Another died after starting a multipart upload but before saving its state.
        let orphan = storage.new_object_key();
        storage.create_multipart(&blob, &orphan).await.expect("create");

        // A fresh record belongs to a live process: left alone.
        storage.settle_pending(PENDING_MIN_AGE).await.expect("settle");
        assert!(storage.list_all(&blob, "_regctl-s3/pending/").await.expect("list").len() == 1);
        storage.settle_pending(Duration::ZERO).await.expect("settle");
        assert_eq!(storage.list_all(&blob, "").await.expect("list"), ["blobs/w/data"]);
        assert_eq!(storage.get(&blob).await.expect("get").as_ref(), content.as_slice());

        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(storage.abort_abandoned(long_ago).await.expect("tidy"), 0, "a young upload is kept");
        let later = SystemTime::now() + Duration::from_secs(5);
        assert_eq!(storage.abort_abandoned(later).await.expect("tidy"), 1);
        let open =
            storage.client.list_multipart_uploads().bucket(&storage.bucket).send().await.expect("list");
        assert!(open.uploads().is_empty(), "multipart uploads left open: {:?}", open.uploads());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redirects_are_presigned_urls_when_enabled() {
        let Some(moto) = suite::start_moto() else { return };
        let mut storage = moto_storage(&moto, "").await;
        let blob = StoragePath::new(["blobs/v/data"]);
        storage.put(&blob, Bytes::from_static(b"redirected")).await.expect("put");
        assert_eq!(storage.redirect_url(&blob).await.expect("url"), None, "off by default");
        storage.redirect = Some(Duration::from_secs(60));
        let url = storage.redirect_url(&blob).await.expect("url").expect("a URL");
        assert!(url.starts_with(&moto.endpoint) && url.contains("X-Amz-Signature="), "{url}");
        assert!(storage.redirect_url(&StoragePath::new(["nothing"])).await.is_err_and(|e| e.is_not_found()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_an_upload_aborts_its_multipart_upload() {
        let Some(moto) = suite::start_moto() else { return };
        let storage = moto_storage(&moto, "").await;
        let upload = StoragePath::new(["_uploads/u2/data"]);
        let chunk: ByteStream = stream::iter(vec![Ok(Bytes::from(vec![1u8; 6 << 20]))]).boxed();
        storage.append(&upload, 0, chunk).await.expect("append");
        storage.delete(&StoragePath::new(["_uploads/u2"])).await.expect("delete");
        let open =
            storage.client.list_multipart_uploads().bucket(&storage.bucket).send().await.expect("list");
        assert!(open.uploads().is_empty(), "multipart uploads left open: {:?}", open.uploads());
    }

    #[tokio::test]
    async fn abandoned_uploads_are_dated_by_their_key() {
        let mut config = S3Config::for_bucket("b".into());
        config.rootdirectory = "/root".into();
        let storage = S3Storage::new(&config).await;
        let key = storage.new_object_key();
        let begun = storage.begun_at(&key, None).expect("a time");
        assert!(begun.elapsed().expect("past") < Duration::from_secs(60), "{key}");
        let other = Some(SystemTime::UNIX_EPOCH);
        assert_eq!(storage.begun_at(&key, other), Some(begun), "the key wins over Initiated");
        assert_eq!(storage.begun_at("root/docker/registry/v2/x/data", other), other);
    }

    #[test]
    fn copy_source_keys_are_encoded() {
        assert_eq!(urlencode_key("a/b c+d"), "a/b%20c%2Bd");
        assert_eq!(urlencode_key("docker/registry/v2/x.y_z-1~"), "docker/registry/v2/x.y_z-1~");
    }

    #[test]
    fn upload_size_counts_parts_and_tail() {
        let state = UploadState {
            upload_id: Some("u".into()),
            parts: vec![Part { number: 1, etag: "e".into(), size: 10 }],
            tail: Some(("t".into(), 3)),
            data_key: None,
        };
        assert_eq!(state.size(), 13);
    }
}
