//! Garbage collection that is safe while pushes continue: `regctl gc`, and the server's
//! scheduled runs (`[gc] interval`).
//!
//! **Mark.** From every tag (or, without `delete_untagged`, every manifest revision) of every
//! repository: the manifest, its config and layers, the child manifests of an index, and the
//! referrers of every kept manifest. Every manifest revision is read, reachable or not, with
//! the parser pushes are validated with ([`References::of_stored`]); if one cannot be read,
//! what it keeps in use is unknown and the collection stops before deleting anything
//! ([`GcError::Unreadable`]). **Sweep.** Blobs nothing marked, untagged manifests (when
//! asked), the `_layers` links of deleted blobs, and upload sessions idle for longer than
//! `upload_max_age`.
//!
//! **Cost** (R repositories, T tags, M distinct manifests, B blobs). The mark reads one
//! repository at a time, depth first ([`Repositories`]): what it keeps is the
//! mark set, 32 bytes a marked blob or manifest ([`Key`], in a hash set: about 60 bytes
//! with the table), the child lists of index manifests, the directories still to list, and
//! what is to be deleted; a repository's links are dropped once it is marked. Blobs are
//! streamed ([`Storage::visit`]).
//! - Storage requests: per repository one `list` of its directory, one `walk` of its
//!   `_manifests` (of `_manifests/revisions` only, without `delete_untagged`) and of its
//!   `_layers` (of `_referrers` and `_uploads` when it has them); with `delete_untagged` one
//!   `get` per tag (8 at a time); one `get` per distinct manifest, however many repositories
//!   hold it; one walk of the blobs. On S3 a `list` or `walk` is one LIST request per 1000
//!   keys: about 3R + M + B/1000 requests in all (+ T with `delete_untagged`). **Per 10,000
//!   blobs the sweep's walk is 10 LIST requests** (0.2-0.3 s at 20-30 ms each); the mark costs
//!   the repositories, e.g. 1,000 repositories of 3 tags: about 3,000 requests, 1-1.5 minutes
//!   at 20-30 ms each (6,000 with `delete_untagged`).
//! - Time: proportional to those requests, O(R + T + M + B); marking is a hash lookup each. On
//!   the filesystem a walk is one blocking task for its whole tree, so the cost is the system
//!   calls reading the directories, not thread hand-offs.
//! - A real run (not `--dry-run`) that deletes blobs walks the repositories' `_layers` once more
//!   to remove links to them, and deletes each item with one request.
//!
//! [`References::of_stored`]: crate::oci::manifest::References::of_stored
//!
//! Pushes and collections coordinate through the pin protocol of [`crate::registry::pins`], so
//! a push running during a collection never loses a layer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::layout;
use crate::oci::Digest;
use crate::oci::manifest::References;
use crate::registry::pins::{LEASE, MIN_SETTLE, active_path, digest_lines, doomed_path, pins_dir, read_pins};
use crate::storage::{Storage, StorageError, StoragePath};
use crate::units::human_bytes;

/// What a collection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Only report what would be deleted.
    pub dry_run: bool,
    /// Also delete manifests that no tag reaches.
    pub delete_untagged: bool,
    /// Spare anything written more recently than this.
    pub grace: Duration,
    /// Purge upload sessions idle for longer than this.
    pub upload_max_age: Duration,
    /// Wait this long after announcing the collection, before marking.
    pub settle: Duration,
}

impl GcOptions {
    /// The options of `[gc]` in the configuration (`dry_run` from `dryrun`).
    pub fn from_config(config: &crate::config::GcConfig) -> GcOptions {
        GcOptions {
            dry_run: config.dryrun,
            delete_untagged: config.deleteuntagged,
            grace: config.graceperiod,
            upload_max_age: config.uploadmaxage,
            settle: config.settle,
        }
    }
}

/// A blob that was (or would be) deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct SweptBlob {
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A manifest removed from a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct SweptManifest {
    /// The repository.
    pub repository: String,
    /// The manifest's digest.
    pub digest: String,
}

/// An upload session purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct SweptUpload {
    /// The repository.
    pub repository: String,
    /// The session id.
    pub id: String,
}

/// What a collection deleted, or would delete in a dry run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GcReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Repositories seen.
    pub repositories: usize,
    /// Manifests kept (per repository).
    pub manifests_kept: usize,
    /// Blobs stored before the collection.
    pub blobs_total: usize,
    /// Blobs in use.
    pub blobs_in_use: usize,
    /// Unused blobs spared because they were written or linked within the grace period.
    pub blobs_spared_recent: usize,
    /// Unused blobs spared because a concurrent push pinned them.
    pub blobs_spared_pinned: usize,
    /// Blobs deleted, sorted by digest.
    pub blobs: Vec<SweptBlob>,
    /// Bytes those blobs held.
    pub bytes_freed: u64,
    /// Untagged manifests deleted, sorted.
    pub manifests: Vec<SweptManifest>,
    /// Upload sessions purged, sorted.
    pub uploads: Vec<SweptUpload>,
    /// Incomplete writes that only the backend sees (S3 multipart uploads whose session is
    /// gone), begun before the upload age, removed.
    pub incomplete_writes: u64,
    /// Manifests named by a link whose bytes are gone (what they named cannot be known; a
    /// manifest whose bytes cannot be read stops the collection instead: [`GcError::Unreadable`]).
    pub warnings: Vec<String>,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Another collection is running on the same storage.
    #[error(
        "another garbage collection has been running since {since} (storage object {path}); wait for it to \
         finish, or delete that object if its process is gone"
    )]
    Busy {
        /// When it started (RFC 3339).
        since: String,
        /// The announcement's storage path.
        path: String,
    },
    /// Something the mark could not read, so what it keeps in use is unknown: nothing was
    /// deleted.
    #[error(
        "nothing was deleted: what {} keep{} in use cannot be known: {}. Repair or delete {} (a manifest: DELETE \
         /v2/<name>/manifests/<digest>), then collect again",
        if .0.len() == 1 { "this" } else { "these" },
        if .0.len() == 1 { "s" } else { "" },
        .0.iter().map(Unreadable::to_string).collect::<Vec<_>>().join("; "),
        if .0.len() == 1 { "it" } else { "them" }
    )]
    Unreadable(Vec<Unreadable>),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A manifest (or link) a collection could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The repository it was found in.
    pub repository: String,
    /// What it is: `manifest <digest>`, `tag <name>`, `revision <alg>/<hex>`.
    pub item: String,
    /// Why it cannot be read.
    pub reason: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {} ({})", self.item, self.repository, self.reason)
    }
}

/// A digest as the mark set keeps it: its first 32 bytes (all of a SHA-256; a SHA-512's first
/// half, which no SHA-256 digest can be made to equal short of a preimage attack), a tenth of
/// the memory of its text.
type Key = [u8; 32];

fn key(digest: &Digest) -> Key {
    let mut key = [0u8; 32];
    // A parsed digest's hex is lowercase hex of at least 64 digits, so this cannot fail.
    let _ = hex::decode_to_slice(&digest.hex().as_bytes()[..64], &mut key);
    key
}

/// The repositories below [`layout::repositories`], one at a time, depth first: what is held
/// between two repositories is the directories still to be listed, nothing of the ones done.
struct Repositories {
    /// Directories to list: (repository name they would have, path).
    pending: Vec<(String, StoragePath)>,
}

impl Repositories {
    fn new() -> Repositories {
        Repositories { pending: vec![(String::new(), layout::repositories())] }
    }

    /// The next repository: its name, its directory and the names of its `_` parts. A
    /// directory with a `_` child is a repository; its other children may hold more.
    async fn next(
        &mut self,
        storage: &dyn Storage,
    ) -> Result<Option<(String, StoragePath, Vec<String>)>, StorageError> {
        while let Some((name, dir)) = self.pending.pop() {
            let mut children = storage.list(&dir).await?;
            // Reversed, so the stack pops them in name order.
            children.sort_unstable_by(|a, b| b.cmp(a));
            let mut parts = Vec::new();
            for child in children.into_iter().filter(|c| StoragePath::is_component(c)) {
                if child.starts_with('_') {
                    parts.push(child);
                } else {
                    let nested = if name.is_empty() { child.clone() } else { format!("{name}/{child}") };
                    self.pending.push((nested, dir.join(&child)));
                }
            }
            if !name.is_empty() && !parts.is_empty() {
                return Ok(Some((name, dir, parts)));
            }
        }
        Ok(None)
    }
}

/// One repository's links, read just before it is marked and dropped right after.
#[derive(Debug, Default)]
struct RepoLinks {
    /// Manifest revisions, and whether each was linked within the grace period.
    revisions: BTreeMap<Digest, bool>,
    /// Tags that have a `current` link.
    tags: Vec<String>,
    /// Tag history entries: digest -> their directories.
    tag_index: HashMap<Digest, Vec<StoragePath>>,
    /// Blobs linked within the grace period.
    recent_layers: Vec<Digest>,
    /// Referrers: subject -> (referrer, directory of the link).
    referrers: HashMap<Digest, Vec<(Digest, StoragePath)>>,
    /// Upload sessions: id -> latest modification time of anything in them.
    uploads: BTreeMap<String, Option<SystemTime>>,
    /// Revision links whose path names no digest: what their manifest keeps is unknown.
    unreadable: Vec<Unreadable>,
}

/// Parses `<alg>/<hex>` at `parts[i..i + 2]`.
fn digest_at(parts: &[&str], i: usize) -> Option<Digest> {
    let (alg, hex) = (parts.get(i)?, parts.get(i + 1)?);
    format!("{alg}:{hex}").parse().ok()
}

/// The `_` parts a collection reads; anything else under a repository is not ours.
const PARTS: [&str; 4] = ["_manifests", "_layers", "_referrers", "_uploads"];

/// Reads the links of repository `name` (directory `dir`), one walk of each of its `parts`.
/// Without `tags` only the revisions of `_manifests` are walked: the tags and their history
/// matter only to the deletion of untagged manifests ([`roots_of`]), and a repository's tags
/// are most of its directories.
async fn read_repository(
    storage: &dyn Storage,
    name: &str,
    dir: &StoragePath,
    parts: &[String],
    cutoff: SystemTime,
    tags: bool,
) -> Result<RepoLinks, StorageError> {
    let recent = |m: Option<SystemTime>| m.is_none_or(|m| m > cutoff);
    let mut repo = RepoLinks::default();
    for part in parts.iter().filter(|p| PARTS.contains(&p.as_str())) {
        let walked = match part.as_str() {
            "_manifests" if !tags => "_manifests/revisions",
            _ => part.as_str(),
        };
        for (relative, meta) in storage.walk(&StoragePath::new([dir.as_str(), walked])).await? {
            let full = format!("{walked}/{relative}");
            let rest: Vec<&str> = full.split('/').collect();
            if !rest.iter().all(|c| StoragePath::is_component(c)) {
                continue;
            }
            let at =
                |n: usize| StoragePath::new(std::iter::once(dir.as_str()).chain(rest[..n].iter().copied()));
            match rest.as_slice() {
                ["_manifests", "revisions", _, _, "link"] => match digest_at(&rest, 2) {
                    Some(d) => {
                        repo.revisions.insert(d, recent(meta.modified));
                    }
                    None => repo.unreadable.push(Unreadable {
                        repository: name.to_string(),
                        item: format!("revision {}", rest[2..4].join("/")),
                        reason: "its path names no digest this registry reads".into(),
                    }),
                },
                ["_manifests", "tags", tag, "current", "link"] => repo.tags.push((*tag).to_string()),
                ["_manifests", "tags", _, "index", _, _, "link"] => {
                    if let Some(d) = digest_at(&rest, 4) {
                        repo.tag_index.entry(d).or_default().push(at(6));
                    }
                }
                // Linked just now (an upload finished or a blob was mounted): it belongs to a
                // push whose manifest may not have landed yet.
                ["_layers", _, _, "link"] if recent(meta.modified) => {
                    repo.recent_layers.extend(digest_at(&rest, 1));
                }
                ["_referrers", _, _, _, _, "link"] => {
                    if let (Some(subject), Some(referrer)) = (digest_at(&rest, 1), digest_at(&rest, 3)) {
                        repo.referrers.entry(subject).or_default().push((referrer, at(5)));
                    }
                }
                ["_uploads", id, ..] => {
                    let latest = repo.uploads.entry((*id).to_string()).or_insert(meta.modified);
                    *latest = match (*latest, meta.modified) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                _ => {}
            }
        }
    }
    Ok(repo)
}

/// Reads the links of repository `name` found by its name (not by a walk).
async fn read_named(
    storage: &dyn Storage,
    name: &str,
    cutoff: SystemTime,
) -> Result<RepoLinks, StorageError> {
    let dir = layout::repositories().join(name);
    let parts = storage.list(&dir).await?;
    read_repository(storage, name, &dir, &parts, cutoff, true).await
}

/// The mark: what is in use, as compact [`Key`]s, and what is known of the manifests read so
/// far (a manifest shared by many repositories is read once).
#[derive(Default)]
struct Mark {
    /// Blobs and manifests in use.
    marked: HashSet<Key>,
    /// Manifests whose blobs are marked.
    expanded: HashSet<Key>,
    /// The child manifests of expanded indexes (an image has none and takes no entry).
    children: HashMap<Key, Box<[Digest]>>,
    /// Manifests read and found readable but not marked (untagged, under `delete_untagged`).
    checked: HashSet<Key>,
    /// Manifests that could not be read or whose bytes are gone (recorded once).
    failed: HashSet<Key>,
    /// Manifests (and links) whose content cannot be read: what they keep alive is unknown.
    unreadable: Vec<Unreadable>,
    /// Manifests whose bytes are gone.
    missing: Vec<String>,
}

impl Mark {
    /// Reads manifest `digest`, found in `repository`; `None` (and recorded) when its bytes are
    /// gone or cannot be read.
    async fn read(
        &mut self,
        storage: &dyn Storage,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<References>, StorageError> {
        let failure = match storage.get(&layout::blob_data(digest)).await {
            Ok(body) => match References::of_stored(&body) {
                Ok(refs) => return Ok(Some(refs)),
                Err(e) => {
                    self.unreadable.push(Unreadable {
                        repository: repository.to_string(),
                        item: format!("manifest {digest}"),
                        reason: e.to_string(),
                    });
                    key(digest)
                }
            },
            Err(e) if e.is_not_found() => {
                // No pull can reach what it named any more, and the bytes cannot come back but
                // by a push that uploads what it names again.
                self.missing.push(format!("manifest {digest} in {repository} has no bytes in storage"));
                key(digest)
            }
            Err(e) => return Err(e),
        };
        self.failed.insert(failure);
        Ok(None)
    }

    /// Marks the blobs manifest `digest` names (reading it the first time); its children.
    async fn expand(
        &mut self,
        storage: &dyn Storage,
        repository: &str,
        digest: &Digest,
    ) -> Result<Vec<Digest>, StorageError> {
        let k = key(digest);
        if self.expanded.contains(&k) {
            return Ok(self.children.get(&k).map(|c| c.to_vec()).unwrap_or_default());
        }
        if self.failed.contains(&k) {
            return Ok(Vec::new());
        }
        let Some(References { blobs, children }) = self.read(storage, repository, digest).await? else {
            return Ok(Vec::new());
        };
        self.marked.extend(blobs.iter().map(key));
        self.expanded.insert(k);
        self.checked.remove(&k);
        if !children.is_empty() {
            self.children.insert(k, children.clone().into_boxed_slice());
        }
        Ok(children)
    }

    /// Reads manifest `digest` once without marking what it names: unreadable bytes are a sign
    /// of something wrong (another tool's format, corruption) that the operator must see.
    async fn check(
        &mut self,
        storage: &dyn Storage,
        repository: &str,
        digest: &Digest,
    ) -> Result<(), StorageError> {
        let k = key(digest);
        if self.expanded.contains(&k) || self.checked.contains(&k) || self.failed.contains(&k) {
            return Ok(());
        }
        if self.read(storage, repository, digest).await?.is_some() {
            self.checked.insert(k);
        }
        Ok(())
    }

    /// Marks everything `roots` reach in repository `name` (and, with `follow_referrers`, the
    /// referrers of what they reach); returns the manifests of the repository kept.
    async fn repository(
        &mut self,
        storage: &dyn Storage,
        name: &str,
        repo: &RepoLinks,
        roots: Vec<Digest>,
        follow_referrers: bool,
    ) -> Result<HashSet<Digest>, StorageError> {
        let mut kept = HashSet::new();
        let mut work = roots;
        while let Some(digest) = work.pop() {
            if kept.contains(&digest) {
                continue;
            }
            self.marked.insert(key(&digest));
            work.extend(self.expand(storage, name, &digest).await?);
            if follow_referrers && let Some(referrers) = repo.referrers.get(&digest) {
                work.extend(referrers.iter().map(|(r, _)| r.clone()));
            }
            kept.insert(digest);
        }
        Ok(kept)
    }

    /// Stops the collection before it deletes anything if a manifest could not be read.
    fn refuse_on_doubt(&mut self) -> Result<(), GcError> {
        if self.unreadable.is_empty() {
            return Ok(());
        }
        Err(GcError::Unreadable(std::mem::take(&mut self.unreadable)))
    }
}

/// The roots of repository `name`: every revision, unless untagged ones are to go; then its
/// tags' manifests and the revisions linked within the grace period. Untagged revisions are
/// read all the same ([`Mark::check`]).
///
/// Every revision being a root, the tags add nothing: a pull by tag needs the revision link
/// (pushes write it before the tag), so the tag links are only read when untagged manifests
/// are to be deleted (one request per tag saved, as distribution does).
async fn roots_of(
    storage: &dyn Storage,
    name: &str,
    dir: &StoragePath,
    repo: &RepoLinks,
    options: &GcOptions,
    mark: &mut Mark,
) -> Result<Vec<Digest>, StorageError> {
    if !options.delete_untagged {
        return Ok(repo.revisions.keys().cloned().collect());
    }
    let tags = dir.join("_manifests").join("tags");
    // A handful of tag links read at once: on S3 each is a request of 10-30 ms.
    let mut links = Vec::new();
    for chunk in repo.tags.chunks(TAG_READS) {
        let paths: Vec<StoragePath> =
            chunk.iter().map(|t| tags.join(t).join("current").join("link")).collect();
        links.extend(
            chunk.iter().zip(futures_util::future::join_all(paths.iter().map(|p| storage.get(p))).await),
        );
    }
    let mut roots = Vec::new();
    for (tag, link) in links {
        match link {
            Ok(text) => match String::from_utf8_lossy(&text).trim().parse::<Digest>() {
                Ok(digest) => roots.push(digest),
                Err(e) => mark.unreadable.push(Unreadable {
                    repository: name.to_string(),
                    item: format!("tag {tag}"),
                    reason: format!("its link does not name a digest: {e}"),
                }),
            },
            Err(e) if e.is_not_found() => {} // the tag was deleted since the walk
            Err(e) => return Err(e),
        }
    }
    for (digest, recent) in &repo.revisions {
        if *recent {
            roots.push(digest.clone());
        } else {
            mark.check(storage, name, digest).await?;
        }
    }
    Ok(roots)
}

/// Tag links read concurrently within a repository.
const TAG_READS: usize = 8;

/// An untagged manifest to delete: the report's entry and the links that name it.
struct Untagged {
    repository: String,
    digest: Digest,
    /// Its revision, tag history and referrer links.
    links: Vec<StoragePath>,
}

/// Deletes `path`, treating "already gone" as done.
async fn remove(storage: &dyn Storage, path: &StoragePath) -> Result<(), StorageError> {
    match storage.delete(path).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Runs a garbage collection over `storage`.
///
/// Returns [`GcError::Busy`] when another collection announced itself less than six hours ago.
/// A dry run writes nothing and does not wait, so its report is exact only while no push runs.
pub async fn collect(storage: &dyn Storage, options: &GcOptions) -> Result<GcReport, GcError> {
    let started = Instant::now();
    if options.dry_run {
        let mut report = run(storage, options).await?;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    announce(storage, options.grace).await?;
    let result = run(storage, options).await;
    // Always withdraw, so pushes stop pinning and waiting.
    let withdrawn = async {
        remove(storage, &doomed_path()).await?;
        remove(storage, &active_path()).await
    }
    .await;
    let mut report = result?;
    withdrawn?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Writes the announcement, unless a live collection already did.
async fn announce(storage: &dyn Storage, grace: Duration) -> Result<(), GcError> {
    match storage.stat(&active_path()).await {
        Ok(meta) if meta.modified.is_none_or(|m| m.elapsed().map_or(true, |age| age < LEASE)) => {
            let text = storage.get(&active_path()).await.unwrap_or_default();
            let since = serde_json::from_slice::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["started"].as_str().map(str::to_string))
                .unwrap_or_else(|| "an unknown time".into());
            return Err(GcError::Busy { since, path: active_path().to_string() });
        }
        Ok(_) => tracing::warn!("replacing the announcement of a garbage collection that never finished"),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    // Pins of earlier collections protect nothing any more.
    remove(storage, &pins_dir()).await?;
    let note = serde_json::json!({
        "started": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "pid": std::process::id(),
        "grace_seconds": grace.as_secs_f64(),
    });
    storage.put(&active_path(), Bytes::from(note.to_string())).await?;
    Ok(())
}

/// Mark and sweep; the announcement is up unless this is a dry run.
async fn run(storage: &dyn Storage, options: &GcOptions) -> Result<GcReport, GcError> {
    if !options.dry_run {
        // Pushes that read "no collection" just before the announcement finish their manifest
        // within this time, so the mark below sees it.
        tokio::time::sleep(options.settle.max(MIN_SETTLE)).await;
    }
    let now = SystemTime::now();
    let cutoff = now.checked_sub(options.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let upload_cutoff = now.checked_sub(options.upload_max_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport { dry_run: options.dry_run, ..GcReport::default() };

    // Mark, one repository at a time: its links are read, marked from and dropped.
    let mut mark = Mark::default();
    let mut untagged: Vec<Untagged> = Vec::new();
    let mut recently_linked: HashSet<Key> = HashSet::new();
    let mut repositories = Repositories::new();
    while let Some((name, dir, parts)) = repositories.next(storage).await? {
        let repo = read_repository(storage, &name, &dir, &parts, cutoff, options.delete_untagged).await?;
        report.repositories += 1;
        recently_linked.extend(repo.recent_layers.iter().map(key));
        mark.unreadable.extend(repo.unreadable.iter().cloned());
        let roots = roots_of(storage, &name, &dir, &repo, options, &mut mark).await?;
        let kept = mark.repository(storage, &name, &repo, roots, options.delete_untagged).await?;
        report.manifests_kept += repo.revisions.keys().filter(|d| kept.contains(*d)).count();
        if options.delete_untagged {
            for digest in repo.revisions.keys().filter(|d| !kept.contains(*d)) {
                let revision = StoragePath::new([
                    dir.as_str(),
                    "_manifests/revisions",
                    digest.algorithm().as_str(),
                    digest.hex(),
                ]);
                let history = repo.tag_index.get(digest).into_iter().flatten().cloned();
                let referring = repo.referrers.values().flatten().filter(|(r, _)| r == digest);
                let links = std::iter::once(revision).chain(history).chain(referring.map(|(_, l)| l.clone()));
                untagged.push(Untagged {
                    repository: name.clone(),
                    digest: digest.clone(),
                    links: links.collect(),
                });
            }
        }
        for (id, latest) in &repo.uploads {
            if latest.is_some_and(|t| t <= upload_cutoff) {
                report.uploads.push(SweptUpload { repository: name.clone(), id: id.clone() });
            }
        }
    }
    mark.refuse_on_doubt()?;

    // Candidates: blobs nothing marked, streamed from storage.
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    storage
        .visit(&layout::blobs(), &mut |relative, meta| {
            let parts: Vec<&str> = relative.split('/').collect();
            let [alg, _, hex, "data"] = parts.as_slice() else { return };
            let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else { return };
            report.blobs_total += 1;
            let k = key(&digest);
            if mark.marked.contains(&k) {
                report.blobs_in_use += 1;
            } else if meta.modified.is_none_or(|m| m > cutoff) || recently_linked.contains(&k) {
                report.blobs_spared_recent += 1;
            } else {
                blobs.insert(digest, meta.size);
            }
        })
        .await?;

    if !options.dry_run && (!blobs.is_empty() || !untagged.is_empty()) {
        // Say what is about to go, then see what pushes pinned meanwhile.
        let doomed = digest_lines(blobs.keys().chain(untagged.iter().map(|u| &u.digest)));
        storage.put(&doomed_path(), doomed).await?;
        let pinned = read_pins(storage).await?;
        if !pinned.is_empty() {
            // A pinned manifest keeps what it names, as if it were tagged.
            let (spared, doomed): (Vec<Untagged>, Vec<Untagged>) =
                untagged.into_iter().partition(|u| pinned.contains(&u.digest));
            untagged = doomed;
            let mut keep = Mark { marked: pinned.iter().map(key).collect(), ..Mark::default() };
            for Untagged { repository, digest, .. } in spared {
                let repo = read_named(storage, &repository, cutoff).await?;
                keep.repository(storage, &repository, &repo, vec![digest], true).await?;
            }
            // The children of a spared manifest were not all read by the mark.
            keep.refuse_on_doubt()?;
            let before = blobs.len();
            blobs.retain(|d, _| !keep.marked.contains(&key(d)));
            report.blobs_spared_pinned = before - blobs.len();
        }
    }

    // Sweep.
    for u in &untagged {
        if !options.dry_run {
            for link in &u.links {
                remove(storage, link).await?;
            }
        }
    }
    report.manifests = untagged
        .into_iter()
        .map(|u| SweptManifest { repository: u.repository, digest: u.digest.to_string() })
        .collect();
    for (digest, size) in &blobs {
        report.blobs.push(SweptBlob { digest: digest.to_string(), size: *size });
        report.bytes_freed += size;
        if !options.dry_run {
            let hex = digest.hex();
            let dir =
                StoragePath::new([layout::blobs().as_str(), digest.algorithm().as_str(), &hex[..2], hex]);
            remove(storage, &dir).await?;
        }
    }
    if !options.dry_run {
        let deleted: HashSet<Key> = blobs.keys().map(key).collect();
        unlink_layers(storage, &deleted, cutoff).await?;
        for upload in &report.uploads {
            remove(
                storage,
                &layout::repositories().join(&upload.repository).join("_uploads").join(&upload.id),
            )
            .await?;
        }
        report.incomplete_writes = storage.tidy(upload_cutoff).await?;
        remove(storage, &pins_dir()).await?;
    }
    report.manifests.sort();
    report.uploads.sort();
    report.warnings = mark.missing;
    Ok(report)
}

/// Removes the `_layers` links to `deleted` blobs, one repository at a time. A link written
/// within the grace period belongs to a push that uploaded the blob again since: it stays.
async fn unlink_layers(
    storage: &dyn Storage,
    deleted: &HashSet<Key>,
    cutoff: SystemTime,
) -> Result<(), StorageError> {
    if deleted.is_empty() {
        return Ok(());
    }
    let mut repositories = Repositories::new();
    while let Some((_, dir, parts)) = repositories.next(storage).await? {
        if !parts.iter().any(|p| p == "_layers") {
            continue;
        }
        let layers = dir.join("_layers");
        for (relative, meta) in storage.walk(&layers).await? {
            let rest: Vec<&str> = relative.split('/').collect();
            let [alg, hex, "link"] = rest.as_slice() else { continue };
            let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else { continue };
            if deleted.contains(&key(&digest)) && meta.modified.is_some_and(|m| m <= cutoff) {
                remove(storage, &layers.join(alg).join(hex)).await?;
            }
        }
    }
    Ok(())
}

/// Runs a collection every `interval` in the background (the first one `interval` after
/// start), logging each report and counting it into `metrics`. A collection found running
/// elsewhere is skipped until the next turn.
pub fn spawn_scheduled(
    registry: std::sync::Arc<crate::Registry>,
    options: GcOptions,
    interval: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    tracing::info!(every = ?interval, grace = ?options.grace, delete_untagged = options.delete_untagged, "scheduled garbage collection on");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match collect(registry.storage(), &options).await {
                Ok(report) => {
                    tracing::info!(
                        dry_run = report.dry_run,
                        blobs = report.blobs.len(),
                        freed = %human_bytes(report.bytes_freed),
                        manifests = report.manifests.len(),
                        uploads = report.uploads.len(),
                        seconds = report.seconds,
                        "garbage collection finished"
                    );
                    if !report.dry_run {
                        metrics.gc_run(Some(crate::metrics::GcRun {
                            blobs: report.blobs.len() as u64,
                            bytes: report.bytes_freed,
                            manifests: report.manifests.len() as u64,
                            uploads: report.uploads.len() as u64,
                            duration: Duration::from_secs_f64(report.seconds),
                        }));
                    }
                }
                Err(GcError::Busy { since, .. }) => {
                    tracing::info!(since, "garbage collection skipped: another one is running");
                }
                Err(e) => {
                    tracing::error!(error = %e, "garbage collection failed");
                    metrics.gc_run(None);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;

    use super::*;
    use crate::oci::manifest::OCI_MANIFEST;
    use crate::oci::{Reference, RepoName};
    use crate::registry::Caller;
    use crate::registry::{Registry, spawn_watch};
    use crate::storage::FsStorage;

    async fn blob(registry: &Registry, name: &RepoName, bytes: &'static [u8]) -> (Digest, usize) {
        let digest = Digest::of(crate::oci::Algorithm::Sha256, bytes);
        let id = registry.start_upload(&Caller::default(), name).await.expect("start");
        let body = futures_util::stream::iter(vec![Ok(Bytes::from_static(bytes))]).boxed();
        registry
            .finish_upload(&Caller::default(), name, &id, &digest, None, Some(body))
            .await
            .expect("finish");
        (digest, bytes.len())
    }

    fn manifest(config: &(Digest, usize), layers: &[&(Digest, usize)]) -> Bytes {
        let d = |(digest, size): &(Digest, usize), mt: &str| serde_json::json!({"mediaType": mt, "digest": digest.to_string(), "size": size});
        let layers: Vec<_> = layers.iter().map(|l| d(l, "application/vnd.oci.image.layer.v1.tar")).collect();
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": d(config, "application/vnd.oci.image.config.v1+json"), "layers": layers,
        });
        Bytes::from(serde_json::to_vec(&m).expect("json"))
    }

    /// A client was told a blob exists just before a collection started, and pushes the
    /// manifest naming it after the mark: the server's pin keeps the blob.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blob_confirmed_before_the_collection_is_pinned_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let registry = Arc::new(Registry::new(storage.clone()));
        let name = RepoName::parse("gc/unit").expect("name");
        let shared = blob(&registry, &name, b"layer used by B, then by C").await;
        let config_b = blob(&registry, &name, b"{\"config\":\"B\"}").await;
        let body_b = manifest(&config_b, &[&shared]);
        let b = registry
            .put_manifest(
                &Caller::default(),
                &name,
                &Reference::parse("b").expect("tag"),
                Some(OCI_MANIFEST),
                body_b,
            )
            .await
            .expect("push B");
        registry
            .delete_manifest(&Caller::default(), &name, &Reference::Digest(b.digest.clone()))
            .await
            .expect("delete B");
        let options = GcOptions {
            dry_run: false,
            delete_untagged: false,
            grace: Duration::from_secs(1),
            upload_max_age: Duration::from_secs(3600),
            settle: Duration::ZERO,
        };
        tokio::time::sleep(Duration::from_millis(1500)).await; // B's content is now past the grace period

        let dry = collect(storage.as_ref(), &GcOptions { dry_run: true, ..options.clone() })
            .await
            .expect("dry run");
        assert_eq!(dry.blobs.len(), 3, "B's manifest, config and layer: {dry:?}");

        // C's client checks the shared layer (HEAD), then the collection starts.
        registry.blob_size(&name, &shared.0).await.expect("HEAD the shared layer");
        spawn_watch(registry.clone());
        let report = collect(storage.as_ref(), &options).await.expect("collect");
        assert_eq!(report.blobs_spared_pinned, 1, "{report:?}");
        let deleted: Vec<&str> = report.blobs.iter().map(|b| b.digest.as_str()).collect();
        let mut expected = vec![b.digest.to_string(), config_b.0.to_string()];
        expected.sort();
        assert_eq!(deleted, expected);

        // C's manifest, pushed after the mark, is accepted with its layer intact.
        let config_c = blob(&registry, &name, b"{\"config\":\"C\"}").await;
        let body_c = manifest(&config_c, &[&shared]);
        registry
            .put_manifest(
                &Caller::default(),
                &name,
                &Reference::parse("c").expect("tag"),
                Some(OCI_MANIFEST),
                body_c,
            )
            .await
            .expect("push C");
        assert!(storage.stat(&layout::blob_data(&shared.0)).await.is_ok());
        for gone in &expected {
            let digest: Digest = gone.parse().expect("digest");
            assert!(storage.stat(&layout::blob_data(&digest)).await.is_err_and(|e| e.is_not_found()));
        }
        // The announcement and the doomed list are gone once the collection ends (pins written
        // by requests that still saw it are cleared by the next collection).
        for path in [active_path(), doomed_path()] {
            assert!(storage.stat(&path).await.is_err_and(|e| e.is_not_found()), "{path} left behind");
        }
    }

    fn quick(dry_run: bool, delete_untagged: bool) -> GcOptions {
        GcOptions {
            dry_run,
            delete_untagged,
            grace: Duration::ZERO,
            upload_max_age: Duration::from_secs(3600),
            settle: Duration::ZERO,
        }
    }

    /// Writes `body` as a manifest of `name` straight into storage, as an older server or
    /// another tool could have; tagged `tag` when given.
    async fn store_manifest(
        storage: &dyn Storage,
        name: &RepoName,
        body: &[u8],
        tag: Option<&str>,
    ) -> Digest {
        let digest = Digest::of(crate::oci::Algorithm::Sha256, body);
        let link = Bytes::from(digest.to_string());
        storage.put(&layout::blob_data(&digest), Bytes::copy_from_slice(body)).await.expect("bytes");
        storage.put(&layout::revision_link(name, &digest), link.clone()).await.expect("revision");
        if let Some(tag) = tag {
            let tag = crate::oci::Tag::parse(tag).expect("tag");
            storage.put(&layout::tag_current_link(name, &tag), link).await.expect("tag");
        }
        digest
    }

    async fn exists(storage: &dyn Storage, digest: &Digest) -> bool {
        storage.stat(&layout::blob_data(digest)).await.is_ok()
    }

    /// Issue 23: a manifest whose bytes garbage collection cannot read had its config and
    /// layers deleted. Now the collection (the one `regctl gc` and the server's schedule run)
    /// deletes nothing and names it, whether a tag reaches it or not.
    #[tokio::test]
    async fn an_unreadable_manifest_stops_the_collection_before_it_deletes_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let registry = Registry::new(storage.clone());
        let name = RepoName::parse("gc/odd").expect("name");
        let garbage = blob(&registry, &name, b"nothing names this").await;
        let config = blob(&registry, &name, b"{\"config\":1}").await;
        let layer = blob(&registry, &name, b"a layer").await;
        let sane = manifest(&config, &[&layer]);
        let mut body = sane[..sane.len() - 1].to_vec();
        body.extend_from_slice(br#","x":"\ud800"}"#);
        for tag in [Some("t"), None] {
            let hostile = store_manifest(storage.as_ref(), &name, &body, tag).await;
            for (dry_run, delete_untagged) in [(true, false), (false, false), (false, true)] {
                let result = collect(storage.as_ref(), &quick(dry_run, delete_untagged)).await;
                let Err(GcError::Unreadable(items)) = &result else {
                    panic!("tag {tag:?}, dry run {dry_run}, untagged {delete_untagged}: {result:?}");
                };
                assert_eq!(items.len(), 1, "{items:?}");
                assert_eq!(
                    (items[0].repository.as_str(), items[0].item.clone()),
                    ("gc/odd", format!("manifest {hostile}"))
                );
                let message = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
                assert!(
                    message.starts_with("nothing was deleted") && message.contains(&hostile.to_string()),
                    "{message}"
                );
                for kept in [&garbage.0, &config.0, &layer.0, &hostile] {
                    assert!(exists(storage.as_ref(), kept).await, "{kept} deleted");
                }
            }
            // Untagged, it still stops the collection.
            if let Some(tag) = tag {
                registry
                    .delete_manifest(&Caller::default(), &name, &Reference::parse(tag).expect("tag"))
                    .await
                    .expect("untag");
            }
        }
        // Once it is deleted, the collection runs.
        let hostile = Digest::of(crate::oci::Algorithm::Sha256, &body);
        registry
            .delete_manifest(&Caller::default(), &name, &Reference::Digest(hostile.clone()))
            .await
            .expect("delete");
        let report = collect(storage.as_ref(), &quick(false, false)).await.expect("collect");
        assert_eq!(report.blobs.len(), 4, "{report:?}");
        assert!(!exists(storage.as_ref(), &garbage.0).await);
    }

    /// A tag whose link names no digest hides which manifest it keeps.
    #[tokio::test]
    async fn a_tag_link_that_names_no_digest_stops_the_collection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        let name = RepoName::parse("gc/tag").expect("name");
        let tag = crate::oci::Tag::parse("broken").expect("tag");
        storage
            .put(&layout::tag_current_link(&name, &tag), Bytes::from_static(b"sha256:zz"))
            .await
            .expect("put");
        let result = collect(&storage, &quick(true, true)).await;
        assert!(
            matches!(&result, Err(GcError::Unreadable(items)) if items[0].item == "tag broken"),
            "{result:?}"
        );
    }

    /// A manifest storage fails to read (here a directory where its bytes belong) is no
    /// reason to think it names nothing.
    #[tokio::test]
    async fn a_storage_error_during_the_mark_deletes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let registry = Registry::new(storage.clone());
        let name = RepoName::parse("gc/fault").expect("name");
        let garbage = blob(&registry, &name, b"nothing names this").await;
        let config = blob(&registry, &name, b"{\"config\":2}").await;
        let body = manifest(&config, &[]);
        let tag = Reference::parse("t").expect("tag");
        let pushed = registry
            .put_manifest(&Caller::default(), &name, &tag, Some(OCI_MANIFEST), body)
            .await
            .expect("push");
        let data = dir.path().join(layout::blob_data(&pushed.digest).as_str());
        std::fs::remove_file(&data).expect("remove the bytes");
        std::fs::create_dir(&data).expect("a directory in their place");
        for (dry_run, delete_untagged) in [(true, false), (false, true)] {
            let result = collect(storage.as_ref(), &quick(dry_run, delete_untagged)).await;
            assert!(matches!(result, Err(GcError::Storage(_))), "{result:?}");
            for kept in [&garbage.0, &config.0] {
                assert!(exists(storage.as_ref(), kept).await, "{kept} deleted");
            }
        }
    }

    /// Docker schema 1 manifests (pushes are refused, older registries stored them) keep the
    /// layers they name.
    #[tokio::test]
    async fn stored_schema1_manifests_keep_their_layers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let registry = Registry::new(storage.clone());
        let name = RepoName::parse("gc/old").expect("name");
        let layer = blob(&registry, &name, b"an old layer").await;
        let body = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{}"}}]}}"#, layer.0);
        store_manifest(storage.as_ref(), &name, body.as_bytes(), Some("old")).await;
        let report = collect(storage.as_ref(), &quick(false, true)).await.expect("collect");
        assert_eq!((report.blobs.len(), report.blobs_in_use), (0, 2), "{report:?}");
    }

    /// How many `op` calls `metrics` counted.
    fn ops(metrics: &crate::metrics::Metrics, op: &str) -> u64 {
        let prefix = format!("regctl_storage_operations_total{{operation=\"{op}\",outcome=\"ok\"}} ");
        let text = metrics.render(None);
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok()).unwrap_or(0)
    }

    /// Issue 22: the mark reads one repository at a time (nested ones, and ones holding only
    /// uploads, too) with a bounded number of requests each, and a manifest shared by every
    /// repository once.
    #[tokio::test]
    async fn the_mark_costs_a_few_requests_per_repository_and_one_read_per_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let fs: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let storage: Arc<dyn Storage> =
            Arc::new(crate::metrics::InstrumentedStorage::new(fs, metrics.clone()));
        let registry = Registry::new(storage.clone());
        let first = RepoName::parse("a").expect("name");
        let garbage = blob(&registry, &first, b"nothing names this").await;
        let mut bodies = Vec::new();
        for i in 0..3u8 {
            let config =
                blob(&registry, &first, [b"{\"c\":0}", b"{\"c\":1}", b"{\"c\":2}"][usize::from(i)]).await;
            let layer = blob(&registry, &first, [b"layer 0", b"layer 1", b"layer 2"][usize::from(i)]).await;
            bodies.push(manifest(&config, &[&layer]));
        }
        let mut names = vec!["a".to_string(), "a/c".to_string()];
        names.extend((0..10).map(|i| format!("team1/app{i}")));
        for (i, name) in names.iter().enumerate() {
            let name = RepoName::parse(name).expect("name");
            for t in 0..2 {
                store_manifest(storage.as_ref(), &name, &bodies[(i + t) % 3], Some(&format!("t{t}"))).await;
            }
        }
        registry
            .start_upload(&Caller::default(), &RepoName::parse("z/uploads").expect("name"))
            .await
            .expect("an upload");
        let (gets, lists, walks) = (ops(&metrics, "get"), ops(&metrics, "list"), ops(&metrics, "walk"));

        let report = collect(storage.as_ref(), &quick(true, false)).await.expect("collect");
        assert_eq!(report.repositories, names.len() + 1, "{report:?}");
        assert_eq!((report.blobs_in_use, report.blobs.len()), (9, 1), "{report:?}");
        assert_eq!(report.blobs[0].digest, garbage.0.to_string());
        // Each manifest once; no tag link (every revision is a root).
        assert_eq!(ops(&metrics, "get") - gets, 3);
        // Each repository's directory, and the namespaces above them (root, team1, z).
        assert_eq!(ops(&metrics, "list") - lists, names.len() as u64 + 1 + 3);
        // `_manifests` and `_layers` where there are any, `_uploads`, and the blobs.
        assert!(ops(&metrics, "walk") - walks <= 2 * names.len() as u64 + 2);
    }

    /// A real run removes the links to the blobs it deleted, and only those.
    #[tokio::test]
    async fn deleted_blobs_lose_their_layer_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let registry = Registry::new(storage.clone());
        let name = RepoName::parse("gc/links").expect("name");
        let unused = blob(&registry, &name, b"unused").await;
        let config = blob(&registry, &name, b"{\"config\":3}").await;
        registry
            .put_manifest(
                &Caller::default(),
                &name,
                &Reference::parse("t").expect("tag"),
                Some(OCI_MANIFEST),
                manifest(&config, &[]),
            )
            .await
            .expect("push");
        let report = collect(storage.as_ref(), &quick(false, false)).await.expect("collect");
        assert_eq!(report.blobs.len(), 1, "{report:?}");
        assert!(storage.stat(&layout::layer_link(&name, &unused.0)).await.is_err_and(|e| e.is_not_found()));
        assert!(storage.stat(&layout::layer_link(&name, &config.0)).await.is_ok());
    }

    /// Names no path may hold, written into the root by another tool or a hostile bucket: the
    /// catalog, a collection and the pin reader skip them instead of panicking.
    #[tokio::test]
    async fn objects_whose_names_cannot_be_paths_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v2 = dir.path().join("docker/registry/v2");
        std::fs::create_dir_all(v2.join("repositories/bad\\name/_manifests/tags/t/current")).expect("mkdir");
        std::fs::write(v2.join("repositories/bad\\name/_manifests/tags/t/current/link"), b"sha256:x")
            .expect("link");
        std::fs::create_dir_all(v2.join("repositories/ok/_layers/sha256/a\\b")).expect("mkdir");
        std::fs::write(v2.join("repositories/ok/_layers/sha256/a\\b/link"), b"sha256:x").expect("link");
        std::fs::create_dir_all(v2.join("_regctl/gc/pins")).expect("mkdir");
        std::fs::write(v2.join("_regctl/gc/pins/x\\y"), b"sha256:x").expect("pin");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(dir.path()));
        let registry = Registry::new(storage.clone());
        assert!(registry.catalog().await.expect("catalog").is_empty());
        collect(storage.as_ref(), &quick(true, true)).await.expect("a dry run");
        assert!(crate::registry::pins::read_pins(storage.as_ref()).await.expect("pins").is_empty());
        let walked = storage.walk(&layout::repositories()).await.expect("walk");
        assert!(walked.iter().any(|(name, _)| name.contains('\\')), "the walk reports them: {walked:?}");
    }

    /// A second collection is refused while one is announced.
    #[tokio::test]
    async fn one_collection_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        announce(&storage, Duration::from_secs(1)).await.expect("first");
        assert!(matches!(announce(&storage, Duration::from_secs(1)).await, Err(GcError::Busy { .. })));
    }
}
