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
//! being filled while the previous one uploads, so memory per upload stays near two parts.
//! The state object is written last: it is the commit point of an append, so a failed or
//! interrupted append leaves the upload exactly as it was.

use std::io;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};

use super::{ByteStream, ObjectMeta, Storage, StorageError, StoragePath};
use crate::config::S3Config;

/// Suffix of the object holding an upload's multipart state.
const STATE_SUFFIX: &str = ".s3upload";
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

/// Storage in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    /// Key prefix with a trailing `/`, or empty.
    prefix: String,
    part_size: usize,
    encryption: Option<(ServerSideEncryption, Option<String>)>,
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

/// True when an S3 error means "no such object / upload".
fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
        || matches!(e.code(), Some("NoSuchKey" | "NotFound" | "NoSuchUpload"))
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
        }
    }

    fn key(&self, path: &StoragePath) -> String {
        format!("{}{}", self.prefix, path.as_str())
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
        let mut put = self.client.put_object().bucket(&self.bucket).key(key).body(S3Body::from(data));
        if let Some((sse, key_id)) = &self.encryption {
            put = put.server_side_encryption(sse.clone()).set_ssekms_key_id(key_id.clone());
        }
        put.send().await.map_err(Self::sdk_err(path))?;
        Ok(())
    }

    async fn get_key(&self, path: &StoragePath, key: &str) -> Result<Bytes, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(Self::sdk_err(path))?;
        let body = out.body.collect().await.map_err(Self::backend(path))?;
        Ok(body.into_bytes())
    }

    async fn head_key(&self, path: &StoragePath, key: &str) -> Result<u64, StorageError> {
        Ok(self.head_meta(path, key).await?.size)
    }

    async fn head_meta(&self, path: &StoragePath, key: &str) -> Result<ObjectMeta, StorageError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(Self::sdk_err(path))?;
        let size = out.content_length().map_or(0, |l| u64::try_from(l).unwrap_or(0));
        Ok(ObjectMeta {
            size,
            modified: out.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        })
    }

    async fn load_state(&self, path: &StoragePath) -> Result<Option<UploadState>, StorageError> {
        let key = format!("{}{STATE_SUFFIX}", self.key(path));
        match self.get_key(path, &key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(Self::backend(path)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn save_state(&self, path: &StoragePath, state: &UploadState) -> Result<(), StorageError> {
        let key = format!("{}{STATE_SUFFIX}", self.key(path));
        let json = serde_json::to_vec(state).map_err(Self::backend(path))?;
        self.put_key(path, &key, Bytes::from(json)).await
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
        self.get_key(path, &self.key(path)).await
    }

    async fn reader(
        &self,
        path: &StoragePath,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        let mut get = self.client.get_object().bucket(&self.bucket).key(self.key(path));
        if let Some(range) = range {
            if range.is_empty() {
                return Ok(stream::empty().boxed());
            }
            get = get.range(format!("bytes={}-{}", range.start, range.end - 1));
        }
        let out = get.send().await.map_err(Self::sdk_err(path))?;
        let body = stream::unfold(out.body, |mut body| async move {
            body.next().await.map(|chunk| (chunk.map_err(io::Error::other), body))
        });
        Ok(body.boxed())
    }

    async fn stat(&self, path: &StoragePath) -> Result<ObjectMeta, StorageError> {
        if let Some(state) = self.load_state(path).await? {
            return Ok(ObjectMeta { size: state.size(), modified: None });
        }
        self.head_meta(path, &self.key(path)).await
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
            for key in dirs.chain(objects) {
                if let Some(name) = key.strip_prefix(&prefix)
                    && !name.is_empty()
                    && !name.ends_with(STATE_SUFFIX)
                    && !name.contains(TAIL_INFIX)
                {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    async fn append(
        &self,
        path: &StoragePath,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<u64, StorageError> {
        let key = self.key(path);
        let mut state = match self.load_state(path).await? {
            Some(state) => state,
            None if offset == 0 => UploadState::default(),
            None => {
                let actual = match self.head_key(path, &key).await {
                    Ok(size) => size,
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
        let mut buffer = match &old_tail {
            Some((tail_key, _)) => BytesMut::from(self.get_key(path, tail_key).await?.as_ref()),
            None => BytesMut::new(),
        };
        let mut uploaded = Vec::new();
        let mut in_flight: Option<tokio::task::JoinHandle<Result<Part, StorageError>>> = None;
        let mut next_number = state.parts.last().map_or(1, |p| p.number + 1);
        let streamed: Result<(), StorageError> = async {
            loop {
                while buffer.len() >= self.part_size {
                    let part = buffer.split_to(self.part_size).freeze();
                    let upload_id = match &state.upload_id {
                        Some(id) => id.clone(),
                        None => {
                            let id = self.create_multipart(path, &key).await?;
                            state.upload_id = Some(id.clone());
                            id
                        }
                    };
                    if let Some(previous) = in_flight.take() {
                        uploaded.push(previous.await.map_err(Self::backend(path))??);
                    }
                    let (this, path, key, number) = (self.clone(), path.clone(), key.clone(), next_number);
                    next_number += 1;
                    in_flight = Some(tokio::spawn(async move {
                        this.upload_part(&path, &key, &upload_id, number, part).await
                    }));
                }
                match data.next().await {
                    Some(chunk) => buffer.extend_from_slice(&chunk.map_err(StorageError::Body)?),
                    None => return Ok(()),
                }
            }
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
        let size = state.size() + buffer.len() as u64;
        if !buffer.is_empty() {
            let tail_key = format!("{key}{TAIL_INFIX}{size}");
            let len = buffer.len() as u64;
            self.put_key(path, &tail_key, buffer.freeze()).await?;
            state.tail = Some((tail_key, len));
        }
        self.save_state(path, &state).await?;
        if let Some((old_key, _)) = old_tail
            && state.tail.as_ref().is_none_or(|(k, _)| *k != old_key)
            && let Err(e) = self.delete_keys(path, vec![old_key]).await
        {
            tracing::warn!(error = %e, "could not remove an old upload tail");
        }
        Ok(size)
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<(), StorageError> {
        let (from_key, to_key) = (self.key(from), self.key(to));
        let Some(mut state) = self.load_state(from).await? else {
            let size = self.head_key(from, &from_key).await?;
            self.copy(from, &from_key, &to_key, size).await?;
            return self.delete_keys(from, vec![from_key]).await;
        };
        let mut leftovers = vec![format!("{from_key}{STATE_SUFFIX}")];
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
                if let Some((tail_key, _)) = &tail {
                    let data = self.get_key(from, tail_key).await?;
                    let number = state.parts.last().map_or(1, |p| p.number + 1);
                    let part = self.upload_part(from, &from_key, upload_id, number, data).await?;
                    state.parts.push(part);
                    leftovers.push(tail_key.clone());
                }
                self.complete_multipart(from, &from_key, upload_id, &state.parts).await?;
                self.copy(from, &from_key, &to_key, state.size()).await?;
                leftovers.push(from_key);
            }
        }
        self.delete_keys(from, leftovers).await
    }

    async fn delete(&self, path: &StoragePath) -> Result<(), StorageError> {
        let key = self.key(path);
        let mut keys = self.list_all(path, &format!("{key}/")).await?;
        match self.head_key(path, &key).await {
            Ok(_) => keys.push(key),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        if keys.is_empty() {
            return Err(StorageError::NotFound(path.clone()));
        }
        for state_key in keys.iter().filter(|k| k.ends_with(STATE_SUFFIX)) {
            let state = self.get_key(path, state_key).await?;
            if let Ok(UploadState { upload_id: Some(id), .. }) = serde_json::from_slice(&state) {
                self.abort(&id, state_key.trim_end_matches(STATE_SUFFIX)).await;
            }
        }
        self.delete_keys(path, keys).await
    }

    async fn walk(&self, dir: &StoragePath) -> Result<Vec<(String, ObjectMeta)>, StorageError> {
        // One paginated listing of the whole tree (1000 keys a call) instead of list + stat.
        let prefix =
            if dir.as_str().is_empty() { self.prefix.clone() } else { format!("{}/", self.key(dir)) };
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(dir))?;
            for object in page.contents() {
                let Some(name) = object.key().and_then(|k| k.strip_prefix(&prefix)) else { continue };
                if name.is_empty() || name.ends_with(STATE_SUFFIX) || name.contains(TAIL_INFIX) {
                    continue;
                }
                let size = object.size().map_or(0, |s| u64::try_from(s).unwrap_or(0));
                let modified = object.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok());
                found.push((name.to_string(), ObjectMeta { size, modified }));
            }
        }
        Ok(found)
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
        storage.rename(&upload, &blob).await.expect("commit");
        assert_eq!(storage.get(&blob).await.expect("get").as_ref(), content.as_slice());
        assert!(storage.list(&StoragePath::new(["_uploads/u1"])).await.expect("list").is_empty());
        let leftovers = storage.list_all(&upload, "_uploads/").await.expect("list");
        assert!(leftovers.is_empty(), "upload objects left behind: {leftovers:?}");
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
        };
        assert_eq!(state.size(), 13);
    }
}
