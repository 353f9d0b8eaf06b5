//! `regctl history`: what each tag of a repository pointed at over time, read from the S3
//! versions of its link (`_manifests/tags/<tag>/current/link`): every version is a push that
//! moved it, every delete marker a deletion (of the tag, or of the whole repository).

use std::time::SystemTime;

use regctl_registry::layout;
use regctl_registry::oci::{RepoName, Tag};
use serde::Serialize;

use super::versions::{Version, VersionedBucket, rfc3339};

/// One version of a tag's link: the digest it held, or a deletion.
#[derive(Debug, Clone)]
pub struct TagVersion {
    /// The S3 version (or delete marker).
    pub version: Version,
    /// The digest the link held (`None` for a delete marker).
    pub digest: Option<String>,
}

/// Every version of one tag's link, newest first.
#[derive(Debug, Clone)]
pub struct TagVersions {
    /// The tag.
    pub tag: String,
    /// Its versions, newest first.
    pub versions: Vec<TagVersion>,
}

impl TagVersions {
    /// The digest the tag points at now (`None` when it is deleted).
    pub fn current(&self) -> Option<&str> {
        self.versions.first().filter(|v| v.version.latest).and_then(|v| v.digest.as_deref())
    }

    /// The newest version that is not a deletion.
    pub fn last_pushed(&self) -> Option<&TagVersion> {
        self.versions.iter().find(|v| v.digest.is_some())
    }

    /// The version that was current at `at` (the newest written at or before it).
    pub fn at(&self, at: SystemTime) -> Option<&TagVersion> {
        self.versions.iter().find(|v| v.version.modified <= at)
    }
}

/// What `regctl history` reports (`--output json`).
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// The bucket read.
    pub bucket: String,
    /// The repository.
    pub repository: String,
    /// Each tag ever seen in it, by name.
    pub tags: Vec<TagHistory>,
}

/// The history of one tag.
#[derive(Debug, Clone, Serialize)]
pub struct TagHistory {
    /// The tag.
    pub tag: String,
    /// The digest it points at now; `null` when it is deleted.
    pub current: Option<String>,
    /// What happened to it, oldest first; a re-push of the digest it already held is not an
    /// event.
    pub events: Vec<Event>,
}

/// A push that moved the tag, or its deletion.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// `pushed` or `deleted`.
    pub action: &'static str,
    /// The digest it pointed at from then on (`null` when deleted).
    pub digest: Option<String>,
    /// The S3 version id of the link (or of the delete marker).
    pub version_id: String,
}

/// The key prefix of the tag links of `repo` (of `tag` alone when given).
fn tags_prefix(bucket: &VersionedBucket, repo: &RepoName, tag: Option<&Tag>) -> String {
    match tag {
        Some(tag) => bucket.key(&layout::tag_current_link(repo, tag)),
        None => format!("{}/", bucket.key(&layout::tags(repo))),
    }
}

/// Every version of the tag links of `repo` (of `tag` alone when given), by tag name; each
/// version's digest is read from the bucket.
pub async fn tag_versions(
    bucket: &VersionedBucket,
    repo: &RepoName,
    tag: Option<&Tag>,
) -> anyhow::Result<Vec<TagVersions>> {
    let prefix = tags_prefix(bucket, repo, tag);
    let dir = format!("{}/", bucket.key(&layout::tags(repo)));
    let mut found: Vec<TagVersions> = Vec::new();
    for version in bucket.versions(&prefix).await? {
        let Some(name) = version.key.strip_prefix(&dir).and_then(|k| k.strip_suffix("/current/link")) else {
            continue;
        };
        let name = name.to_string();
        if name.contains('/') || tag.is_some_and(|t| t.as_str() != name) {
            continue;
        }
        let digest = if version.deleted {
            None
        } else {
            Some(String::from_utf8_lossy(&bucket.read(&version).await?).trim().to_string())
        };
        let entry = TagVersion { version, digest };
        match found.last_mut() {
            Some(last) if last.tag == name => last.versions.push(entry),
            _ => found.push(TagVersions { tag: name, versions: vec![entry] }),
        }
    }
    Ok(found)
}

/// The history of `repo` (of `tag` alone when given). No version at all is an error naming
/// where it looked: a typo, or versions that have expired.
pub async fn history(
    bucket: &VersionedBucket,
    repo: &RepoName,
    tag: Option<&Tag>,
) -> anyhow::Result<History> {
    bucket.require_versioning().await?;
    let found = tag_versions(bucket, repo, tag).await?;
    if found.is_empty() {
        let what = tag.map_or_else(|| format!("repository {repo}"), |t| format!("tag {repo}:{t}"));
        anyhow::bail!(
            "no version of {what} in S3 bucket {} (under s3://{}/{}): it never existed there, or its \
             versions have expired",
            bucket.name,
            bucket.name,
            tags_prefix(bucket, repo, tag)
        );
    }
    let tags = found.iter().map(tag_history).collect();
    Ok(History { bucket: bucket.name.clone(), repository: repo.to_string(), tags })
}

/// The events of one tag, oldest first, without repeats.
fn tag_history(t: &TagVersions) -> TagHistory {
    let mut events: Vec<Event> = Vec::new();
    for v in t.versions.iter().rev() {
        if events.last().is_some_and(|last| last.digest == v.digest) {
            continue;
        }
        events.push(Event {
            at: rfc3339(v.version.modified),
            action: if v.digest.is_some() { "pushed" } else { "deleted" },
            digest: v.digest.clone(),
            version_id: v.version.id.clone(),
        });
    }
    TagHistory { tag: t.tag.clone(), current: t.current().map(str::to_string), events }
}
