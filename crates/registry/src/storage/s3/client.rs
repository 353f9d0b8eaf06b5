//! The SDK plumbing: connecting to the bucket, and the S3 calls every other part is made of
//! (objects, multipart uploads, server-side copies, batch deletes), with their errors mapped to
//! [`StorageError`]s that keep the AWS error code.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::multipart::Part;
use super::{MIN_PART_SIZE, S3Storage};
use crate::config::S3Config;
use crate::storage::{Condition, ETag, ObjectMeta, StorageError, StoragePath};

/// Objects up to this size are copied with one `CopyObject`; larger ones part by part.
const COPY_PART_SIZE: u64 = 256 << 20;
/// Part copies in flight when copying a large object.
const COPY_CONCURRENCY: usize = 8;
/// Keys per `DeleteObjects` call (S3's maximum).
const DELETE_BATCH: usize = 1000;

/// True when an S3 error means "no such object / upload".
pub(super) fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
        || matches!(e.code(), Some("NoSuchKey" | "NotFound" | "NoSuchUpload"))
}

/// An S3 client for the bucket described by `config`: its region and endpoint, with
/// credentials from the configuration or else the standard chain (environment, profile, EC2
/// instance profile via IMDSv2). [`S3Storage::new`] connects with it, and so do the operator's
/// commands that read the bucket's object versions (`regctl history`, `restore`).
pub async fn connect(config: &S3Config) -> Client {
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
    Client::from_conf(builder.build())
}

impl S3Storage {
    /// Connects to the bucket described by `config` (see [`connect`]).
    pub async fn new(config: &S3Config) -> S3Storage {
        let encryption = match (&config.keyid, config.encrypt) {
            (Some(key), _) => Some((ServerSideEncryption::AwsKms, Some(key.clone()))),
            (None, true) => Some((ServerSideEncryption::Aes256, None)),
            (None, false) => None,
        };
        S3Storage {
            client: connect(config).await,
            bucket: config.bucket.clone(),
            prefix: config.key_prefix(),
            part_size: usize::try_from(config.chunksize.max(MIN_PART_SIZE)).unwrap_or(usize::MAX),
            encryption,
            redirect: config.redirect.then_some(config.redirectexpiry),
            fresh: Arc::default(),
        }
    }

    pub(super) fn backend<E: std::error::Error + Send + Sync + 'static>(
        path: &StoragePath,
    ) -> impl FnOnce(E) -> StorageError {
        let path = path.clone();
        move |e| StorageError::Backend { path, source: io::Error::other(e) }
    }

    /// Maps an SDK error to `NotFound` or a backend failure, keeping the AWS error code.
    pub(super) fn sdk_err<E>(path: &StoragePath) -> impl FnOnce(SdkError<E, HttpResponse>) -> StorageError
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

    pub(super) async fn put_key(
        &self,
        path: &StoragePath,
        key: &str,
        data: Bytes,
    ) -> Result<(), StorageError> {
        self.put_request(key, data).send().await.map_err(Self::sdk_err(path))?;
        self.wrote(key);
        Ok(())
    }

    /// A `PutObject` of `data` at `key` with `If-None-Match: *` or `If-Match`, for
    /// [`crate::storage::Storage::put_if`]: `Precondition` when S3 refuses it, unless the
    /// object then holds exactly `data` (the SDK's retry of a write that took effect the first
    /// time is refused too).
    pub(super) async fn put_key_if(
        &self,
        path: &StoragePath,
        key: &str,
        data: Bytes,
        condition: Condition<'_>,
    ) -> Result<ETag, StorageError> {
        let put = self.put_request(key, data.clone());
        let put = match condition {
            Condition::Absent => put.if_none_match("*"),
            Condition::Unchanged(tag) => put.if_match(tag.as_str()),
        };
        let refused = match put.send().await {
            Ok(out) => {
                self.wrote(key);
                return Ok(ETag::new(out.e_tag().unwrap_or_default()));
            }
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                // 404: an `If-Match` of an object deleted meanwhile; 409: another conditional
                // write of the key was under way (S3 asks to retry, i.e. read again).
                let refused = is_not_found(&e)
                    || matches!(e.code(), Some("PreconditionFailed" | "ConditionalRequestConflict"))
                    || matches!(status, Some(409 | 412));
                if !refused {
                    return Err(Self::sdk_err(path)(e));
                }
                e
            }
        };
        match self.read_whole(path, || self.get_object(path, key, None)).await {
            Ok((stored, tag)) if stored == data => Ok(ETag::new(tag)),
            Ok(_) => Err(StorageError::Precondition(path.clone())),
            Err(e) if e.is_not_found() => Err(StorageError::Precondition(path.clone())),
            Err(_) => Err(Self::sdk_err(path)(refused)),
        }
    }

    /// A `PutObject` of `data` at `key`, encrypted as configured.
    pub(super) fn put_request(
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

    pub(super) async fn get_key(&self, path: &StoragePath, key: &str) -> Result<Bytes, StorageError> {
        let (body, _) = self.read_whole(path, || self.get_object(path, key, None)).await?;
        Ok(body)
    }

    pub(super) async fn get_object(
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

    pub(super) async fn head_meta(&self, path: &StoragePath, key: &str) -> Result<ObjectMeta, StorageError> {
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

    /// Reads one of this backend's own JSON objects; `None` when it is absent.
    pub(super) async fn get_json<T: DeserializeOwned>(
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

    pub(super) async fn put_json<T: Serialize>(
        &self,
        path: &StoragePath,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        let json = serde_json::to_vec(value).map_err(Self::backend(path))?;
        self.put_key(path, key, Bytes::from(json)).await
    }

    pub(super) async fn upload_part(
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

    pub(super) async fn create_multipart(
        &self,
        path: &StoragePath,
        key: &str,
    ) -> Result<String, StorageError> {
        let mut create = self.client.create_multipart_upload().bucket(&self.bucket).key(key);
        if let Some((sse, key_id)) = &self.encryption {
            create = create.server_side_encryption(sse.clone()).set_ssekms_key_id(key_id.clone());
        }
        let out = create.send().await.map_err(Self::sdk_err(path))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| Self::backend(path)(io::Error::other("S3 returned no upload id")))
    }

    pub(super) async fn complete_multipart(
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
    pub(super) async fn copy(
        &self,
        path: &StoragePath,
        from: &str,
        to: &str,
        size: u64,
    ) -> Result<(), StorageError> {
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

    pub(super) async fn abort(&self, upload_id: &str, key: &str) {
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

    pub(super) async fn delete_keys(
        &self,
        path: &StoragePath,
        keys: Vec<String>,
    ) -> Result<(), StorageError> {
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

/// The bytes `x-amz-copy-source` keeps as they are: RFC 3986's unreserved characters and `/`.
const COPY_SOURCE_KEEP: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/`.
pub(super) fn urlencode_key(key: &str) -> String {
    utf8_percent_encode(key, COPY_SOURCE_KEEP).to_string()
}
