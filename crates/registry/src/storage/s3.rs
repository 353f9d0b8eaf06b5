//! S3 storage (`aws-sdk-s3`), in the same layout as the filesystem, under a root prefix.
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
//!
//! Right after a write, S3 may still answer NoSuchKey for the object (AWS advises waiting after
//! versioning is first enabled on a bucket, and this server reads its own upload states, tails,
//! forwards and links back at once). A read of a key this process wrote moments ago and has not
//! deleted is therefore retried for a few seconds before "not found" is believed; a read of any
//! other key is answered at once, so a miss costs nothing.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use memmap2::MmapMut;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ByteStream, ObjectMeta, Storage, StorageError, StoragePath};
use crate::config::S3Config;

/// Suffix of the object holding an upload's multipart state.
const STATE_SUFFIX: &str = ".s3upload";
/// Suffix of the forward that stands for an object whose bytes are still at their source.
const LINK_SUFFIX: &str = ".s3link";
/// Directory (under the root prefix) of this backend's own objects.
const INTERNAL_DIR: &str = "_regctl-s3";
/// How long a source outlives its forward, for reads that followed the forward just before.
const SOURCE_GRACE: Duration = Duration::from_secs(30);
/// Pending copies younger than this belong to a live process; `tidy` leaves them alone.
const PENDING_MIN_AGE: Duration = Duration::from_secs(3600);
/// Infix of the objects holding an upload's unfilled tail.
const TAIL_INFIX: &str = ".s3tail-";
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Objects up to this size are copied with one `CopyObject`; larger ones part by part.
const COPY_PART_SIZE: u64 = 256 << 20;
/// Part copies in flight when copying a large object.
const COPY_CONCURRENCY: usize = 8;
/// Keys per `DeleteObjects` call (S3's maximum).
const DELETE_BATCH: usize = 1000;
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
    /// The keys this process wrote in the last [`FRESH_WINDOW`], and when.
    fresh: Arc<Mutex<HashMap<String, Instant>>>,
}

/// What an append has stored so far, kept in `<key>.s3upload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UploadState {
    /// The multipart upload, created when the first full part is ready.
    upload_id: Option<String>,
    /// Parts uploaded, in order.
    parts: Vec<Part>,
    /// Key of the tail object and its length, when bytes wait for a full part.
    tail: Option<(String, u64)>,
    /// The key the multipart upload writes to; the upload's own key in states written before
    /// uploads had keys of their own.
    #[serde(default)]
    data_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    number: i32,
    etag: String,
    size: u64,
}

impl UploadState {
    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum::<u64>() + self.tail.as_ref().map_or(0, |t| t.1)
    }
}

/// An object committed by `rename` whose bytes are still at `source`: kept at `<target>.s3link`
/// and at `pending` until a copy has put them at `target`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Forward {
    source: String,
    target: String,
    size: u64,
    pending: String,
}

/// True when an S3 error means "no such object / upload".
fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
        || matches!(e.code(), Some("NoSuchKey" | "NotFound" | "NoSuchUpload"))
}

/// The path named in errors about this backend's own objects.
fn internal_path() -> StoragePath {
    StoragePath::new([INTERNAL_DIR])
}

impl S3Storage {
    /// Connects to the bucket described by `config`, with credentials from the configuration
    /// or else the standard chain (environment, profile, EC2 instance profile via IMDSv2).
    pub async fn new(config: &S3Config) -> S3Storage {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(300))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let (Some(access), Some(secret)) = (&config.accesskey, &config.secretkey) {
            loader = loader.credentials_provider(Credentials::new(
                access.clone(),
                secret.expose().to_string(),
                None,
                None,
                "regctl-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.forcepathstyle);
        if let Some(endpoint) = &config.regionendpoint {
            let endpoint = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("{}://{endpoint}", if config.secure { "https" } else { "http" })
            };
            builder = builder.endpoint_url(endpoint);
        }
        let prefix = config.rootdirectory.trim_matches('/');
        let encryption = match (&config.keyid, config.encrypt) {
            (Some(key), _) => Some((ServerSideEncryption::AwsKms, Some(key.clone()))),
            (None, true) => Some((ServerSideEncryption::Aes256, None)),
            (None, false) => None,
        };
        S3Storage {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            part_size: usize::try_from(config.chunksize.max(MIN_PART_SIZE)).unwrap_or(usize::MAX),
            encryption,
            redirect: config.redirect.then_some(config.redirectexpiry),
            fresh: Arc::default(),
        }
    }

    /// Remembers that this process has just written `key`.
    fn wrote(&self, key: &str) {
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
    fn is_fresh(&self, key: &str) -> bool {
        self.fresh.lock().is_ok_and(|f| f.get(key).is_some_and(|at| at.elapsed() < FRESH_WINDOW))
    }

    /// Runs a read of `key`; while it answers "not found" for a key this process has just
    /// written, waits and reads again (a few seconds in all), since S3 may not show it yet.
    async fn read_fresh<T, F, Fut>(&self, key: &str, read: F) -> Result<T, StorageError>
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

    fn key(&self, path: &StoragePath) -> String {
        format!("{}{}", self.prefix, path.as_str())
    }

    /// A fresh key for the object a multipart upload writes, named after the time it begins
    /// (see [`S3Storage::begun_at`]).
    fn new_object_key(&self) -> String {
        let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!("{}{INTERNAL_DIR}/objects/{secs}-{}", self.prefix, uuid::Uuid::new_v4().simple())
    }

    /// When the multipart upload of `key` began: from the key's name for this backend's own
    /// objects (our clock, not the endpoint's idea of `Initiated`, which emulators get wrong),
    /// else `initiated`.
    fn begun_at(&self, key: &str, initiated: Option<SystemTime>) -> Option<SystemTime> {
        let name = key.strip_prefix(&format!("{}{INTERNAL_DIR}/objects/", self.prefix));
        match name.and_then(|n| n.split_once('-')) {
            Some((secs, _)) => secs.parse().ok().map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            None => initiated,
        }
    }

    fn backend<E: std::error::Error + Send + Sync + 'static>(
        path: &StoragePath,
    ) -> impl FnOnce(E) -> StorageError {
        let path = path.clone();
        move |e| StorageError::Backend { path, source: io::Error::other(e) }
    }

    /// Maps an SDK error to `NotFound` or a backend failure, keeping the AWS error code.
    fn sdk_err<E>(path: &StoragePath) -> impl FnOnce(SdkError<E, HttpResponse>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let path = path.clone();
        move |e| {
            if is_not_found(&e) {
                return StorageError::NotFound(path);
            }
            let code = e.code().unwrap_or("unknown").to_string();
            let message = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
            StorageError::Backend { path, source: io::Error::other(format!("S3 {code}: {message}")) }
        }
    }

    async fn put_key(&self, path: &StoragePath, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_request(key, data).send().await.map_err(Self::sdk_err(path))?;
        self.wrote(key);
        Ok(())
    }

    /// A `PutObject` of `data` at `key`, encrypted as configured.
    fn put_request(
        &self,
        key: &str,
        data: Bytes,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let put = self.client.put_object().bucket(&self.bucket).key(key).body(S3Body::from(data));
        match &self.encryption {
            Some((sse, key_id)) => put.server_side_encryption(sse.clone()).set_ssekms_key_id(key_id.clone()),
            None => put,
        }
    }

    async fn get_key(&self, path: &StoragePath, key: &str) -> Result<Bytes, StorageError> {
        let (body, _) = self.read_whole(path, || self.get_object(path, key, None)).await?;
        Ok(body)
    }

    /// Reads the whole object `request` opens, with its ETag. A body cut short is requested
    /// again, up to [`READ_ATTEMPTS`] times: the objects read whole are small (links, upload
    /// state, tails), and a commit must not fail on one broken connection.
    async fn read_whole<F, Fut>(
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

    async fn get_object(
        &self,
        path: &StoragePath,
        key: &str,
        range: Option<&Range<u64>>,
    ) -> Result<GetObjectOutput, StorageError> {
        self.read_fresh(key, || {
            let mut get = self.client.get_object().bucket(&self.bucket).key(key);
            if let Some(range) = range {
                get = get.range(format!("bytes={}-{}", range.start, range.end - 1));
            }
            async move { get.send().await.map_err(Self::sdk_err(path)) }
        })
        .await
    }

    /// Starts reading the object at `key` (or `range` of it), following its forward when the
    /// bytes are not in place yet.
    async fn open(
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

    async fn head_meta(&self, path: &StoragePath, key: &str) -> Result<ObjectMeta, StorageError> {
        let out = self
            .read_fresh(key, || async move {
                self.client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(Self::sdk_err(path))
            })
            .await?;
        let size = out.content_length().map_or(0, |l| u64::try_from(l).unwrap_or(0));
        Ok(ObjectMeta {
            size,
            modified: out.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        })
    }

    /// Where the bytes of the object at `key` are (the key itself, or its forward's source), and
    /// how many there are.
    async fn locate(&self, path: &StoragePath, key: &str) -> Result<(String, ObjectMeta), StorageError> {
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

    /// The keys that stand for the object at `key`: the object itself, its upload state, tail
    /// and forward, as one listing sees them.
    async fn siblings(&self, path: &StoragePath, key: &str) -> Result<Vec<String>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(key)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(path))?;
            for k in page.contents().iter().filter_map(|o| o.key()) {
                let Some(rest) = k.strip_prefix(key) else { continue };
                if rest.is_empty()
                    || rest == STATE_SUFFIX
                    || rest == LINK_SUFFIX
                    || rest.starts_with(TAIL_INFIX)
                {
                    found.push(k.to_string());
                }
            }
        }
        Ok(found)
    }

    /// The forward of `key`, when `found` (from [`S3Storage::siblings`]) lists one.
    async fn forward_in(
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

    /// Reads one of this backend's own JSON objects; `None` when it is absent.
    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &StoragePath,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        match self.get_key(path, key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(Self::backend(path)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_json<T: Serialize>(
        &self,
        path: &StoragePath,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        let json = serde_json::to_vec(value).map_err(Self::backend(path))?;
        self.put_key(path, key, Bytes::from(json)).await
    }

    async fn load_state(&self, path: &StoragePath) -> Result<Option<UploadState>, StorageError> {
        Ok(self.load_state_tagged(path).await?.map(|(state, _)| state))
    }

    /// An upload's state with the ETag of the object holding it, for [`S3Storage::save_state`].
    async fn load_state_tagged(
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
    async fn save_state(
        &self,
        path: &StoragePath,
        state: &UploadState,
        loaded: Option<&str>,
    ) -> Result<bool, StorageError> {
        let key = format!("{}{STATE_SUFFIX}", self.key(path));
        let json = Bytes::from(serde_json::to_vec(state).map_err(Self::backend(path))?);
        let put = self.put_request(&key, json.clone());
        let put = match loaded {
            Some(etag) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        let refused = match put.send().await {
            Ok(_) => {
                self.wrote(&key);
                return Ok(true);
            }
            Err(e) => {
                let code = e.code();
                let status = e.raw_response().map(|r| r.status().as_u16());
                let refused = is_not_found(&e)
                    || matches!(code, Some("PreconditionFailed" | "ConditionalRequestConflict"))
                    || matches!(status, Some(409 | 412));
                if !refused {
                    return Err(Self::sdk_err(path)(e));
                }
                e
            }
        };
        // A retry of a write that took effect the first time is refused too: then the stored
        // state is ours, byte for byte (its tail key is unique, its parts' ETags ours).
        match self.get_key(path, &key).await {
            Ok(stored) if stored == json => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.is_not_found() => Ok(false),
            Err(_) => Err(Self::sdk_err(path)(refused)),
        }
    }

    async fn upload_part(
        &self,
        path: &StoragePath,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<Part, StorageError> {
        let size = data.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(S3Body::from(data))
            .send()
            .await
            .map_err(Self::sdk_err(path))?;
        Ok(Part { number, etag: out.e_tag().unwrap_or_default().to_string(), size })
    }

    async fn create_multipart(&self, path: &StoragePath, key: &str) -> Result<String, StorageError> {
        let mut create = self.client.create_multipart_upload().bucket(&self.bucket).key(key);
        if let Some((sse, key_id)) = &self.encryption {
            create = create.server_side_encryption(sse.clone()).set_ssekms_key_id(key_id.clone());
        }
        let out = create.send().await.map_err(Self::sdk_err(path))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| Self::backend(path)(io::Error::other("S3 returned no upload id")))
    }

    async fn complete_multipart(
        &self,
        path: &StoragePath,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<(), StorageError> {
        let completed = parts
            .iter()
            .map(|p| CompletedPart::builder().part_number(p.number).e_tag(&p.etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .map_err(Self::sdk_err(path))?;
        self.wrote(key);
        Ok(())
    }

    /// Copies an object inside the bucket: one `CopyObject` for small objects, parallel part
    /// copies for large ones (S3 copies at its own speed; no byte crosses this server).
    async fn copy(&self, path: &StoragePath, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        let source = format!("{}/{}", self.bucket, urlencode_key(from));
        if size <= COPY_PART_SIZE {
            let mut copy = self.client.copy_object().bucket(&self.bucket).key(to).copy_source(&source);
            if let Some((sse, key_id)) = &self.encryption {
                copy = copy.server_side_encryption(sse.clone()).set_ssekms_key_id(key_id.clone());
            }
            copy.send().await.map_err(Self::sdk_err(path))?;
            self.wrote(to);
            return Ok(());
        }
        let upload_id = self.create_multipart(path, to).await?;
        let ranges: Vec<(i32, u64, u64)> = (0..size.div_ceil(COPY_PART_SIZE))
            .map(|i| {
                let start = i * COPY_PART_SIZE;
                (i32::try_from(i + 1).unwrap_or(i32::MAX), start, (start + COPY_PART_SIZE).min(size) - 1)
            })
            .collect();
        let copies = stream::iter(ranges).map(|(number, start, end)| {
            let (source, upload_id) = (source.clone(), upload_id.clone());
            async move {
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(to)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(Self::sdk_err(path))?;
                let etag = out.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default().to_string();
                Ok::<_, StorageError>(Part { number, etag, size: end - start + 1 })
            }
        });
        let result: Result<Vec<Part>, StorageError> = copies.buffered(COPY_CONCURRENCY).try_collect().await;
        match result {
            Ok(parts) => self.complete_multipart(path, to, &upload_id, &parts).await,
            Err(e) => {
                self.abort(&upload_id, to).await;
                Err(e)
            }
        }
    }

    async fn abort(&self, upload_id: &str, key: &str) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = aborted
            && !is_not_found(&e)
        {
            tracing::warn!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "could not abort a multipart upload");
        }
    }

    /// Commits the object `target` as a forward to the bytes at `source`: two small writes,
    /// whatever the size. The caller then has the bytes copied into place ([`S3Storage::settle`]).
    async fn write_forward(
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
    fn spawn_settle(&self, forward: Forward) {
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
    async fn settle(&self, forward: &Forward, grace: Duration) -> Result<(), StorageError> {
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
    async fn settle_pending(&self, min_age: Duration) -> Result<(), StorageError> {
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

    /// Aborts the multipart uploads under the root begun before `cutoff`; returns how many.
    async fn abort_abandoned(&self, cutoff: SystemTime) -> Result<u64, StorageError> {
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

    /// Every key under `prefix` (recursively).
    async fn list_all(&self, path: &StoragePath, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(path))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        Ok(keys)
    }
    async fn delete_keys(&self, path: &StoragePath, keys: Vec<String>) -> Result<(), StorageError> {
        // A key deleted is missing for real from now on.
        if let Ok(mut fresh) = self.fresh.lock() {
            for key in &keys {
                fresh.remove(key);
            }
        }
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build().map_err(Self::backend(path)))
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(Self::backend(path))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(Self::sdk_err(path))?;
            if let Some(failed) = out.errors().first() {
                let message = format!(
                    "S3 could not delete {}: {} {}",
                    failed.key().unwrap_or("?"),
                    failed.code().unwrap_or("?"),
                    failed.message().unwrap_or("")
                );
                return Err(Self::backend(path)(io::Error::other(message)));
            }
        }
        Ok(())
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

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/`.
fn urlencode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

    async fn list(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError> {
        let prefix =
            if dir.as_str().is_empty() { self.prefix.clone() } else { format!("{}/", self.key(dir)) };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(dir))?;
            let dirs =
                page.common_prefixes().iter().filter_map(|p| p.prefix()).map(|p| p.trim_end_matches('/'));
            let objects = page.contents().iter().filter_map(|o| o.key());
            names.extend(dirs.chain(objects).filter_map(|key| child_name(&prefix, key)).map(str::to_string));
        }
        // An object being copied into place shows as itself and as its forward.
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Lists from the key of `after` on, in pages of the page's size, and stops once the page
    /// is known: see [`unreached_prefixes`] for where key order and name order differ.
    async fn list_page(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let prefix =
            if dir.as_str().is_empty() { self.prefix.clone() } else { format!("{}/", self.key(dir)) };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            // One more: the listing starts with `after`'s own key when it is a child.
            .max_keys(i32::try_from(limit.saturating_add(1).min(1000)).unwrap_or(1000))
            .set_start_after(after.map(|a| format!("{prefix}{a}")))
            .into_paginator()
            .send();
        let mut found = std::collections::BTreeSet::new();
        let mut reached = None;
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(dir))?;
            let dirs = page.common_prefixes().iter().filter_map(|p| p.prefix());
            let objects = page.contents().iter().filter_map(|o| o.key());
            for key in dirs.chain(objects) {
                if reached.as_deref().is_none_or(|r: &str| key > r) {
                    reached = Some(key.to_string());
                }
                if let Some(name) = child_name(&prefix, key.trim_end_matches('/'))
                    && after.is_none_or(|a| name > a)
                {
                    found.insert(name.to_string());
                }
            }
            if found.len() >= limit && page.is_truncated() == Some(true) {
                // Stopped early: only the page's last name's prefixes can still be missing.
                let last = found.iter().nth(limit - 1).cloned().unwrap_or_default();
                for name in unreached_prefixes(&last, &prefix, reached.as_deref().unwrap_or_default()) {
                    if after.is_none_or(|a| name > a)
                        && !found.contains(name)
                        && self.holds_child(dir, &prefix, name).await?
                    {
                        found.insert(name.to_string());
                    }
                }
                break;
            }
        }
        Ok(found.into_iter().take(limit).collect())
    }

    async fn append(
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

    async fn rename(&self, from: &StoragePath, to: &StoragePath, size: u64) -> Result<(), StorageError> {
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
        // One paginated listing of the whole tree (1000 keys a call) instead of list + stat.
        let prefix =
            if dir.as_str().is_empty() { self.prefix.clone() } else { format!("{}/", self.key(dir)) };
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        let mut forwards = Vec::new();
        let internal = format!("{INTERNAL_DIR}/");
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(dir))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(name) = key.strip_prefix(&prefix) else { continue };
                if name.is_empty()
                    || name.starts_with(&internal)
                    || name.ends_with(STATE_SUFFIX)
                    || name.contains(TAIL_INFIX)
                {
                    continue;
                }
                let modified = object.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok());
                if let Some(name) = name.strip_suffix(LINK_SUFFIX) {
                    forwards.push((name.to_string(), key.to_string(), modified));
                    continue;
                }
                let size = object.size().map_or(0, |s| u64::try_from(s).unwrap_or(0));
                visitor(name.to_string(), ObjectMeta { size, modified });
            }
        }
        // Forwards are few (copies under way): each one whose object is not in place yet
        // (and so was not listed) stands for it.
        for (name, link, modified) in forwards {
            let object = link.strip_suffix(LINK_SUFFIX).unwrap_or(&link);
            match self.head_meta(dir, object).await {
                Ok(_) => continue,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            if let Some(forward) = self.get_json::<Forward>(dir, &link).await? {
                visitor(name, ObjectMeta { size: forward.size, modified });
            }
        }
        Ok(())
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

/// The name of the child of directory `prefix` that `key` (a key, or a common prefix without
/// its `/`) stands for; `None` for this backend's own objects.
fn child_name<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let name = key.strip_prefix(prefix)?;
    let name = name.strip_suffix(LINK_SUFFIX).unwrap_or(name);
    let own =
        name.is_empty() || name == INTERNAL_DIR || name.ends_with(STATE_SUFFIX) || name.contains(TAIL_INFIX);
    (!own).then_some(name)
}

/// The names that sort before `name` but whose keys a listing of directory `prefix` has not
/// reached at key `reached`.
///
/// S3 orders keys by their bytes, and a child's key is its name followed by `/` (a directory)
/// or `.s3link` (a forward). Names compare as keys do except where one name continues another
/// with a byte below `/` (`-` or `.`): `a` < `a-b` but `a-b/` < `a/`. So a name whose key was not
/// reached sorts before `name` only if it is `name` cut before such a byte; each is looked up.
fn unreached_prefixes<'n>(name: &'n str, prefix: &str, reached: &str) -> Vec<&'n str> {
    name.char_indices()
        .filter(|&(i, c)| i > 0 && c < '/')
        .map(|(i, _)| &name[..i])
        .filter(|cut| format!("{prefix}{cut}/").as_str() > reached)
        .collect()
}

impl S3Storage {
    /// Whether `name` is a child of directory `prefix` (of `dir`): a directory holding a key,
    /// or a forward (an object's own key sorts before its name's continuations, so a listing
    /// that reached them has seen it).
    async fn holds_child(&self, dir: &StoragePath, prefix: &str, name: &str) -> Result<bool, StorageError> {
        for (under, exact) in
            [(format!("{prefix}{name}/"), false), (format!("{prefix}{name}{LINK_SUFFIX}"), true)]
        {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&under)
                .max_keys(1)
                .send()
                .await
                .map_err(Self::sdk_err(dir))?;
            if page.contents().iter().filter_map(|o| o.key()).any(|k| !exact || k == under) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
