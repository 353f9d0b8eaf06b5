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
//! repository at a time, depth first ([`repositories::Repositories`]): what it keeps is the
//! mark set, 32 bytes a marked blob or manifest ([`mark::Key`], in a hash set: about 60 bytes
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
//!
//! **Retention** ([`crate::config::RetentionRule`], [`retention`]): per repository pattern, the
//! tags beyond the `keeplast` newest that no `keeptags` expression matches are no roots, and are
//! deleted in the sweep unless pushed again since; untagged manifests go once older than
//! `untaggedolderthan`.
//!
//! One file per job: [`repositories`] finds the repositories and reads their links, [`mark`]
//! keeps what is in use, [`collection`] runs the mark and the sweep, [`pins`] is the
//! collection's side of the pin protocol, [`schedule`] runs collections in the server.
//!
//! One collection at a time runs on a storage, however many servers share it: a real run holds
//! the `gc` lease of [`crate::lease`] (taken, renewed and released with conditional writes).

mod collection;
mod mark;
mod pins;
mod repositories;
mod retention;
mod schedule;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lease::{Lease, LeaseError};
use crate::registry::pins::{active_path, doomed_path};
use crate::storage::{Storage, StorageError, StoragePath};
use collection::run;
use pins::announce;
pub use schedule::spawn_scheduled;

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
    /// The TTL of the collection's lease (see [`crate::lease`]).
    pub lease_ttl: Duration,
    /// Tags and untagged manifests to delete, per repository pattern.
    pub retention: Vec<crate::config::RetentionRule>,
    /// The immutable-tag rules, which retention never overrides.
    pub immutable: crate::config::TagsConfig,
}

impl GcOptions {
    /// The options of `[gc]` and `[tags]` in the configuration (`dry_run` from `dryrun`).
    pub fn from_config(config: &crate::config::GcConfig, tags: &crate::config::TagsConfig) -> GcOptions {
        GcOptions {
            dry_run: config.dryrun,
            delete_untagged: config.deleteuntagged,
            grace: config.graceperiod,
            upload_max_age: config.uploadmaxage,
            settle: config.settle,
            // Shorter would expire between renewals (and zero would exclude nobody).
            lease_ttl: config.leasettl.max(crate::lease::MIN_TTL),
            retention: config.retention.clone(),
            immutable: tags.clone(),
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

/// A tag deleted by a retention rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct SweptTag {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
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
    /// Tags deleted by retention rules, sorted.
    pub tags: Vec<SweptTag>,
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
    /// Another collection holds the lease on the same storage.
    #[error(
        "another garbage collection ({holder}) holds the lease until {until}; wait for it to finish (the lease \
         of a process that died expires on its own)"
    )]
    Busy {
        /// Who holds the lease.
        holder: String,
        /// When it expires unless renewed (RFC 3339).
        until: String,
    },
    /// The collection stopped part-way, as it could not keep its lease (see [`crate::lease`]).
    #[error("the collection stopped part-way: {0}")]
    Lease(LeaseError),
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

impl From<LeaseError> for GcError {
    fn from(e: LeaseError) -> GcError {
        match e {
            LeaseError::Held { holder, until, .. } => GcError::Busy { holder, until },
            LeaseError::Storage(e) => GcError::Storage(e),
            lost => GcError::Lease(lost),
        }
    }
}

/// The job name of the collection's lease.
const GC_LEASE: &str = "gc";

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

/// Deletes `path`, treating "already gone" as done.
pub(super) async fn remove(storage: &dyn Storage, path: &StoragePath) -> Result<(), StorageError> {
    match storage.delete(path).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Runs a garbage collection over `storage`.
///
/// A real run holds the lease of garbage collection while it runs (see [`crate::lease`]):
/// [`GcError::Busy`] when another process holds it. A dry run takes no lease, writes nothing
/// and does not wait, so its report is exact only while no push runs.
pub async fn collect(storage: &dyn Storage, options: &GcOptions) -> Result<GcReport, GcError> {
    let started = Instant::now();
    if options.dry_run {
        let mut report = run(storage, options).await?;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let mut lease = Lease::acquire(storage, GC_LEASE, options.lease_ttl).await?;
    let collected = lease
        .hold(storage, async {
            announce(storage, options.grace).await?;
            let result = run(storage, options).await;
            // Always withdraw, so pushes stop pinning and waiting.
            let withdrawn = withdraw(storage).await;
            let report = result?;
            withdrawn?;
            Ok::<_, GcError>(report)
        })
        .await;
    let mut report = match collected {
        Ok(done) => {
            if let Err(e) = lease.release(storage).await {
                tracing::warn!(error = %e, "could not release the collection's lease; it expires on its own");
            }
            done?
        }
        // Stopped before the lease expired, still the holder: withdraw, if storage lets us.
        // A lease taken over belongs to another collection, and so does the announcement.
        Err(e @ LeaseError::Storage(_)) => {
            let _ = withdraw(storage).await;
            return Err(GcError::Lease(e));
        }
        Err(e) => return Err(GcError::Lease(e)),
    };
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Removes the announcement of a collection and its doomed list.
async fn withdraw(storage: &dyn Storage) -> Result<(), StorageError> {
    remove(storage, &doomed_path()).await?;
    remove(storage, &active_path()).await
}
