//! `regctl restore`: puts a tag back as it was, from the S3 versions of the bucket. The plan
//! walks what the tag needs (the manifest, an index's children recursively, each image's config
//! and layers, and the repository's links to them), restores every blob a delete or a garbage
//! collection removed by copying its newest noncurrent version back, writes the missing links,
//! and moves the tag last, so a server never serves a tag whose content is not there yet.
//! Restored objects are new writes: a garbage collection running meanwhile spares them for its
//! grace period.

use std::collections::HashSet;
use std::time::SystemTime;

use anyhow::Context;
use regctl_registry::layout;
use regctl_registry::oci::manifest::References;
use regctl_registry::oci::{Digest, Manifest, RepoName, Tag};
use regctl_registry::storage::StoragePath;
use serde::Serialize;

use super::history::{TagVersion, TagVersions, tag_versions};
use super::versions::{Version, VersionedBucket, rfc3339};

/// Which version of a tag to put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The newest version that is not a deletion.
    LastPushed,
    /// The newest version that pointed at this digest.
    Digest(Digest),
    /// The version that was current at this time.
    At(SystemTime),
}

/// What to restore: one tag, or every deleted tag of a repository.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The repository.
    pub repository: RepoName,
    /// The tag; `None` restores every deleted tag of the repository (each to its last push).
    pub tag: Option<Tag>,
    /// Which version of the tag (with a tag only).
    pub target: Target,
}

/// What a restore does (or did): the tags it moves and the objects it writes, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The bucket.
    pub bucket: String,
    /// The repository.
    pub repository: String,
    /// The tags put back.
    pub tags: Vec<TagChange>,
    /// The objects written, in the order they are written: blobs, then links, then the tags.
    pub steps: Vec<Step>,
    /// Objects the tags need that are there already.
    pub present: usize,
    /// Tags of the repository that exist and are left as they are (`restore REPO`).
    pub kept_tags: Vec<String>,
}

/// A tag moved back.
#[derive(Debug, Clone, Serialize)]
pub struct TagChange {
    /// The tag.
    pub tag: String,
    /// The digest it points at now (`null`: deleted).
    pub from: Option<String>,
    /// The digest it is put back to.
    pub to: String,
    /// When that digest was pushed to the tag (RFC 3339).
    pub pushed_at: String,
}

/// One object written by a restore.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What it is, e.g. `blob sha256:… (layer of sha256:…)` or `tag v1`.
    pub what: String,
    /// Its key in the bucket.
    pub key: String,
    /// `restore` (an earlier version copied back) or `write` (a link, whose content is known).
    pub action: &'static str,
    /// The size of a restored blob.
    pub size: u64,
    /// The version restored, and when it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// When the restored version was written (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_at: Option<String>,
    #[serde(skip)]
    source: Option<Version>,
    #[serde(skip)]
    content: Vec<u8>,
}

impl Plan {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The blobs restored: how many, and their bytes.
    pub fn blobs(&self) -> (usize, u64) {
        let blobs = self.steps.iter().filter(|s| s.action == "restore");
        blobs.fold((0, 0), |(n, bytes), s| (n + 1, bytes + s.size))
    }
}

/// Where a needed object stands.
enum State {
    /// There; this version holds its bytes.
    Present(Version),
    /// Deleted, and this earlier version (of its key, or of a forward's source) can be copied
    /// back to it.
    Restorable(Version),
    /// No version left.
    Gone,
}

/// Builds the plan: which tags move, and every object they need that is missing. Fails, naming
/// each one, when a blob the tags need has no version left.
pub async fn plan(bucket: &VersionedBucket, opts: &RestoreOptions) -> anyhow::Result<Plan> {
    bucket.require_versioning().await?;
    let repo = &opts.repository;
    let found = tag_versions(bucket, repo, opts.tag.as_ref()).await?;
    let mut planner = Planner {
        bucket,
        repo,
        seen: HashSet::new(),
        blobs: Vec::new(),
        links: Vec::new(),
        tags: Vec::new(),
        gone: Vec::new(),
        present: 0,
    };
    let mut changes = Vec::new();
    let mut kept_tags = Vec::new();
    match &opts.tag {
        Some(tag) => {
            let versions = found.first().with_context(|| {
                format!(
                    "no version of tag {repo}:{tag} in S3 bucket {}: it never existed there, or its versions \
                     have expired",
                    bucket.name
                )
            })?;
            let chosen =
                choose(versions, &opts.target).with_context(|| format!("cannot restore {repo}:{tag}"))?;
            changes.push(planner.tag(versions, chosen).await?);
        }
        None => {
            if found.is_empty() {
                anyhow::bail!(
                    "no version of repository {repo} in S3 bucket {}: it never existed there, or its versions \
                     have expired",
                    bucket.name
                );
            }
            for versions in &found {
                match (versions.current(), versions.last_pushed()) {
                    (Some(_), _) => kept_tags.push(versions.tag.clone()),
                    (None, Some(chosen)) => changes.push(planner.tag(versions, chosen).await?),
                    (None, None) => {
                        planner.gone.push(format!("tag {} (only deletions are left)", versions.tag))
                    }
                }
            }
        }
    }
    if !planner.gone.is_empty() {
        anyhow::bail!(
            "cannot restore {}: {} of the objects it needs ha{} no version left in S3 bucket {} (expired by \
             the bucket's noncurrent-version lifecycle, or deleted); nothing was written: {}. `regctl \
             history` lists the other digests the tag held, which `--to DIGEST` may still restore",
            match &opts.tag {
                Some(tag) => format!("{repo}:{tag}"),
                None => format!("repository {repo}"),
            },
            planner.gone.len(),
            if planner.gone.len() == 1 { "s" } else { "ve" },
            bucket.name,
            planner.gone.join("; ")
        );
    }
    let Planner { blobs, links, tags, present, .. } = planner;
    Ok(Plan {
        bucket: bucket.name.clone(),
        repository: repo.to_string(),
        tags: changes,
        steps: blobs.into_iter().chain(links).chain(tags).collect(),
        present,
        kept_tags,
    })
}

/// The version of a tag that `target` names.
fn choose<'a>(versions: &'a TagVersions, target: &Target) -> anyhow::Result<&'a TagVersion> {
    let pushed = || {
        let digests: Vec<String> = versions.versions.iter().filter_map(|v| v.digest.clone()).collect();
        if digests.is_empty() { "none".to_string() } else { digests.join(", ") }
    };
    match target {
        Target::LastPushed => versions
            .last_pushed()
            .with_context(|| format!("only deletions of tag {} are left, no push", versions.tag)),
        Target::Digest(digest) => {
            let digest = digest.to_string();
            versions.versions.iter().find(|v| v.digest.as_deref() == Some(digest.as_str())).with_context(
                || {
                    format!(
                        "tag {} never pointed at {digest} in the versions left (it pointed at: {})",
                        versions.tag,
                        pushed()
                    )
                },
            )
        }
        Target::At(at) => match versions.at(*at) {
            Some(v) if v.digest.is_some() => Ok(v),
            Some(v) => anyhow::bail!(
                "tag {} was deleted at {} (by the deletion of {}): pick another time, or --to DIGEST",
                versions.tag,
                rfc3339(*at),
                rfc3339(v.version.modified)
            ),
            None => anyhow::bail!(
                "tag {} did not exist yet at {} (or the versions of then have expired); its oldest version \
                 left is of {}",
                versions.tag,
                rfc3339(*at),
                versions.versions.last().map_or_else(|| "never".to_string(), |v| rfc3339(v.version.modified))
            ),
        },
    }
}

/// The walk of what the tags need.
struct Planner<'a> {
    bucket: &'a VersionedBucket,
    repo: &'a RepoName,
    /// Keys already looked at.
    seen: HashSet<String>,
    blobs: Vec<Step>,
    links: Vec<Step>,
    tags: Vec<Step>,
    /// What is needed but has no version left.
    gone: Vec<String>,
    present: usize,
}

impl Planner<'_> {
    /// Plans putting the tag of `versions` back to `chosen`.
    async fn tag(&mut self, versions: &TagVersions, chosen: &TagVersion) -> anyhow::Result<TagChange> {
        let name = &versions.tag;
        let tag = Tag::parse(name).with_context(|| format!("{name:?} in the bucket is not a valid tag"))?;
        let text = chosen.digest.clone().unwrap_or_default();
        let digest: Digest = text
            .parse()
            .map_err(|e| anyhow::anyhow!("tag {name}'s link holds {text:?}, not a digest: {e}"))?;
        self.manifest(&digest, "tagged manifest").await?;
        self.link(
            layout::tag_index_link(self.repo, &tag, &digest),
            &digest,
            format!("tag {name} history link"),
        )
        .await?;
        let current = versions.current().map(str::to_string);
        if current.as_deref() != Some(text.as_str()) {
            self.tags.push(Step {
                what: format!("tag {name} -> {digest}"),
                key: self.bucket.key(&layout::tag_current_link(self.repo, &tag)),
                action: "write",
                size: 0,
                version_id: None,
                version_at: None,
                source: None,
                content: text.clone().into_bytes(),
            });
        }
        Ok(TagChange {
            tag: name.clone(),
            from: current,
            to: text,
            pushed_at: rfc3339(chosen.version.modified),
        })
    }

    /// Plans a manifest: its bytes, its revision link, and what it names (recursively).
    async fn manifest(&mut self, digest: &Digest, role: &str) -> anyhow::Result<()> {
        let Some(body) = self.blob(digest, role, true).await? else { return Ok(()) };
        self.link(layout::revision_link(self.repo, digest), digest, format!("manifest link {digest}"))
            .await?;
        // Foreign layers are not in the registry; a schema 1 manifest names its layers only.
        let (blobs, children) = match Manifest::read(&body) {
            Ok(m) => {
                let config = m.config.iter().map(|d| (d.digest.clone(), "config"));
                let layers = m.layers.iter().filter(|d| !d.is_foreign()).map(|d| (d.digest.clone(), "layer"));
                (
                    config.chain(layers).collect::<Vec<_>>(),
                    m.manifests.iter().map(|d| d.digest.clone()).collect(),
                )
            }
            Err(_) => {
                let refs = References::of_stored(&body)
                    .map_err(|e| anyhow::anyhow!("manifest {digest} cannot be read: {e}"))?;
                (refs.blobs.into_iter().map(|d| (d, "layer")).collect(), refs.children)
            }
        };
        for (blob, kind) in &blobs {
            self.blob(blob, &format!("{kind} of {digest}"), false).await?;
            self.link(layout::layer_link(self.repo, blob), blob, format!("layer link {blob}")).await?;
        }
        for child in &children {
            Box::pin(self.manifest(child, &format!("manifest, child of {digest}"))).await?;
        }
        Ok(())
    }

    /// Plans a blob: nothing when it is there, its newest earlier version copied back when it
    /// was deleted, a "gone" entry when no version is left. Returns its bytes when `read` (and
    /// the blob was not planned before).
    async fn blob(&mut self, digest: &Digest, role: &str, read: bool) -> anyhow::Result<Option<Vec<u8>>> {
        let key = self.bucket.key(&layout::blob_data(digest));
        if !self.seen.insert(key.clone()) {
            return Ok(None);
        }
        let what = format!("blob {digest} ({role})");
        let readable = match self.state(&key).await? {
            State::Present(version) => {
                self.present += 1;
                version
            }
            State::Restorable(version) => {
                self.blobs.push(Step {
                    what,
                    key,
                    action: "restore",
                    size: version.size,
                    version_id: Some(version.id.clone()),
                    version_at: Some(rfc3339(version.modified)),
                    source: Some(version.clone()),
                    content: Vec::new(),
                });
                version
            }
            State::Gone => {
                self.gone.push(what);
                return Ok(None);
            }
        };
        if !read {
            return Ok(None);
        }
        Ok(Some(self.bucket.read(&readable).await?))
    }

    /// Plans a link: written when it is not there (its content is the digest).
    async fn link(&mut self, path: StoragePath, digest: &Digest, what: String) -> anyhow::Result<()> {
        let key = self.bucket.key(&path);
        if !self.seen.insert(key.clone()) {
            return Ok(());
        }
        match self.state(&key).await? {
            State::Present(_) => self.present += 1,
            State::Restorable(_) | State::Gone => self.links.push(Step {
                what,
                key,
                action: "write",
                size: 0,
                version_id: None,
                version_at: None,
                source: None,
                content: digest.to_string().into_bytes(),
            }),
        }
        Ok(())
    }

    /// Where `key` stands. A blob committed by the S3 backend may still be a forward
    /// (`<key>.s3link`) to the bytes where they were uploaded: then the version that holds the
    /// bytes is the source's.
    async fn state(&self, key: &str) -> anyhow::Result<State> {
        let forward_key = format!("{key}.s3link");
        let all = self.bucket.versions(key).await?;
        let (own, forwards): (Vec<Version>, Vec<Version>) = all.into_iter().partition(|v| v.key == key);
        let forwards: Vec<Version> = forwards.into_iter().filter(|v| v.key == forward_key).collect();
        if let Some(v) = own.first().filter(|v| v.latest && !v.deleted) {
            return Ok(State::Present(v.clone()));
        }
        if let Some(v) = own.iter().find(|v| !v.deleted) {
            return Ok(State::Restorable(v.clone()));
        }
        let Some(forward) = forwards.iter().find(|v| !v.deleted) else { return Ok(State::Gone) };
        let record: serde_json::Value = serde_json::from_slice(&self.bucket.read(forward).await?)
            .with_context(|| format!("{} is not a forward record", forward.key))?;
        let Some(source) = record["source"].as_str() else { return Ok(State::Gone) };
        let versions = self.bucket.versions_of(source).await?;
        Ok(match versions.into_iter().find(|v| !v.deleted) {
            Some(v) if forward.latest && v.latest => State::Present(v),
            Some(v) => State::Restorable(v),
            None => State::Gone,
        })
    }
}

/// Carries out `plan` in its order, calling `progress` after each object written.
pub async fn apply(bucket: &VersionedBucket, plan: &Plan, progress: &dyn Fn(&Step)) -> anyhow::Result<()> {
    for step in &plan.steps {
        match &step.source {
            Some(version) => bucket.copy(version, &step.key).await?,
            None => bucket.put(&step.key, step.content.clone()).await?,
        }
        progress(step);
    }
    Ok(())
}
