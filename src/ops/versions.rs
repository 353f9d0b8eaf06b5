//! A registry's versioned S3 bucket, as `history` and `restore` read it: every version and
//! delete marker of a key, a version's bytes, and a noncurrent version made current again.
//! These calls run with the operator's credentials (the instance role may not read versions).

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, CompletedMultipartUpload, CompletedPart};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use regctl_registry::storage::StoragePath;

use crate::aws::{AwsError, AwsResultExt};

/// The largest object one `CopyObject` copies (S3's limit); larger ones are copied in parts.
const COPY_MAX: u64 = 5 << 30;
/// Part size of a copy in parts.
const COPY_PART: u64 = 512 << 20;
/// What stays unescaped in an `x-amz-copy-source` key: S3's unreserved characters and `/`.
const COPY_SOURCE_KEEP: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// A bucket in distribution's layout under a key prefix.
#[derive(Debug, Clone)]
pub struct VersionedBucket {
    /// The S3 client (the operator's credentials).
    pub client: Client,
    /// The bucket.
    pub name: String,
    /// The prefix of every registry key (`rootdirectory/`, or empty).
    pub prefix: String,
}

/// One version of a key: an object, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The key.
    pub key: String,
    /// S3's version id (`null` for an object written before versioning was enabled).
    pub id: String,
    /// When it was written, to the second.
    pub modified: SystemTime,
    /// True for a delete marker (the key was deleted then).
    pub deleted: bool,
    /// True for the key's current version.
    pub latest: bool,
    /// Size in bytes (0 for a delete marker).
    pub size: u64,
}

impl VersionedBucket {
    /// `what` on this bucket, for errors.
    fn resource(&self) -> String {
        format!("S3 bucket {}", self.name)
    }

    /// The key of a registry path.
    pub fn key(&self, path: &StoragePath) -> String {
        format!("{}{}", self.prefix, path.as_str())
    }

    /// Fails unless the bucket keeps versions (enabled now, or suspended after having been).
    pub async fn require_versioning(&self) -> anyhow::Result<()> {
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(&self.name)
            .send()
            .await
            .aws("s3:GetBucketVersioning", &self.resource())?;
        match out.status() {
            Some(BucketVersioningStatus::Enabled | BucketVersioningStatus::Suspended) => Ok(()),
            _ => Err(crate::usage!(
                "S3 bucket {} does not keep object versions (versioning was never enabled), so there is \
                 no history to read or restore from; `regctl provision` turns it on for new writes",
                self.name
            )),
        }
    }

    /// Every version and delete marker of the keys starting with `prefix`, by key, newest
    /// first within a key.
    pub async fn versions(&self, prefix: &str) -> Result<Vec<Version>, AwsError> {
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.name)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(id_marker.take())
                .send()
                .await
                .aws("s3:ListBucketVersions", &self.resource())?;
            // To the second, as AWS lists them (and as they are printed and given to --at);
            // emulators add milliseconds.
            let time = |t: Option<&aws_sdk_s3::primitives::DateTime>| {
                let seconds = t.map_or(0, |t| u64::try_from(t.secs()).unwrap_or(0));
                SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
            };
            for v in out.versions() {
                let Some(key) = v.key() else { continue };
                found.push(Version {
                    key: key.to_string(),
                    id: v.version_id().unwrap_or("null").to_string(),
                    modified: time(v.last_modified()),
                    deleted: false,
                    latest: v.is_latest() == Some(true),
                    size: v.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
            for m in out.delete_markers() {
                let Some(key) = m.key() else { continue };
                found.push(Version {
                    key: key.to_string(),
                    id: m.version_id().unwrap_or("null").to_string(),
                    modified: time(m.last_modified()),
                    deleted: true,
                    latest: m.is_latest() == Some(true),
                    size: 0,
                });
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_version_id_marker().map(str::to_string);
            if out.is_truncated() != Some(true) || key_marker.is_none() {
                break;
            }
        }
        // Newest first; the current version first among versions of the same second.
        found.sort_by(|a, b| {
            a.key.cmp(&b.key).then(b.modified.cmp(&a.modified)).then(b.latest.cmp(&a.latest))
        });
        Ok(found)
    }

    /// The versions of exactly `key`, newest first.
    pub async fn versions_of(&self, key: &str) -> Result<Vec<Version>, AwsError> {
        let mut versions = self.versions(key).await?;
        versions.retain(|v| v.key == key);
        Ok(versions)
    }

    /// The bytes of one version of a key.
    pub async fn read(&self, version: &Version) -> Result<Vec<u8>, AwsError> {
        let resource = format!("{} (s3://{}/{})", self.resource(), self.name, version.key);
        let out = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(&version.key)
            .version_id(&version.id)
            .send()
            .await
            .aws("s3:GetObjectVersion", &resource)?;
        let body = out.body.collect().await.map_err(|e| {
            AwsError::local("s3:GetObjectVersion", resource.clone(), format!("reading the body: {e}"))
        })?;
        Ok(body.into_bytes().to_vec())
    }

    /// Copies `version` to the key `to`, server-side (in parts when larger than one copy takes):
    /// onto its own key, this makes a noncurrent version current again.
    pub async fn copy(&self, version: &Version, to: &str) -> Result<(), AwsError> {
        let source = format!(
            "{}/{}?versionId={}",
            self.name,
            utf8_percent_encode(&version.key, COPY_SOURCE_KEEP),
            utf8_percent_encode(&version.id, NON_ALPHANUMERIC)
        );
        let resource = format!("{} (s3://{}/{to})", self.resource(), self.name);
        if version.size <= COPY_MAX {
            self.client
                .copy_object()
                .bucket(&self.name)
                .key(to)
                .copy_source(&source)
                .send()
                .await
                .aws("s3:GetObjectVersion", &resource)?;
            return Ok(());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(to)
            .send()
            .await
            .aws("s3:PutObject", &resource)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| AwsError::local("s3:PutObject", resource.clone(), "no upload id in the answer"))?;
        let mut parts = Vec::new();
        for (index, start) in
            (0..version.size).step_by(usize::try_from(COPY_PART).unwrap_or(usize::MAX)).enumerate()
        {
            let end = (start + COPY_PART).min(version.size) - 1;
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let copied = self
                .client
                .upload_part_copy()
                .bucket(&self.name)
                .key(to)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .aws("s3:GetObjectVersion", &resource);
            let copied = match copied {
                Ok(c) => c,
                Err(e) => {
                    let abort = self.client.abort_multipart_upload().bucket(&self.name).key(to);
                    let _ = abort.upload_id(upload_id).send().await;
                    return Err(e);
                }
            };
            let etag = copied.copy_part_result().and_then(|r| r.e_tag()).map(str::to_string);
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(to)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .aws("s3:PutObject", &resource)?;
        Ok(())
    }

    /// Writes `data` at `key` (a link, whose content is its digest).
    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), AwsError> {
        let resource = format!("{} (s3://{}/{key})", self.resource(), self.name);
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(data))
            .send()
            .await
            .aws("s3:PutObject", &resource)?;
        Ok(())
    }
}

/// RFC 3339 time to the second, as `history` and `restore` print times.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
