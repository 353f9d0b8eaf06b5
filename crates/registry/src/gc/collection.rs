//! One collection: the mark, repository by repository, then the sweep.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use super::mark::{Key, Mark, key, roots_of};
use super::pins::spare_pinned;
use super::repositories::{Repositories, read_repository};
use super::retention::{expired_tags, rule_for, untagged_before};
use super::{GcError, GcOptions, GcReport, SweptBlob, SweptManifest, SweptTag, SweptUpload, remove};
use crate::layout;
use crate::oci::Digest;
use crate::registry::pins::{MIN_SETTLE, pins_dir};
use crate::storage::{Storage, StorageError, StoragePath};

/// An untagged manifest to delete: the report's entry and the links that name it.
pub(super) struct Untagged {
    pub(super) repository: String,
    pub(super) digest: Digest,
    /// Its revision, tag history and referrer links.
    pub(super) links: Vec<StoragePath>,
}

/// Mark and sweep; the announcement is up unless this is a dry run.
pub(super) async fn run(storage: &dyn Storage, options: &GcOptions) -> Result<GcReport, GcError> {
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
    let mut expired: Vec<SweptTag> = Vec::new();
    let mut repositories = Repositories::new();
    while let Some((name, dir, parts)) = repositories.next(storage).await? {
        let rule = rule_for(&options.retention, &name);
        let untagged_before = untagged_before(rule, options.delete_untagged, now, cutoff);
        let read_tags = untagged_before.is_some() || rule.is_some();
        let mut repo = read_repository(storage, &name, &dir, &parts, cutoff, read_tags).await?;
        if let Some(rule) = rule {
            // An expired tag is no root: its manifest is kept only as an untagged one.
            let gone = expired_tags(rule, &options.immutable, &repo.tags, cutoff);
            repo.tags.retain(|(tag, _)| !gone.contains(tag));
            expired.extend(gone.into_iter().map(|tag| SweptTag { repository: name.clone(), tag }));
        }
        report.repositories += 1;
        recently_linked.extend(repo.recent_layers.iter().map(key));
        mark.unreadable.extend(repo.unreadable.iter().cloned());
        let roots = roots_of(storage, &name, &dir, &repo, untagged_before, &mut mark).await?;
        let kept = mark.repository(storage, &name, &repo, roots, untagged_before.is_some()).await?;
        report.manifests_kept += repo.revisions.keys().filter(|d| kept.contains(*d)).count();
        if untagged_before.is_some() {
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
        report.blobs_spared_pinned = spare_pinned(storage, &mut blobs, &mut untagged, cutoff).await?;
    }

    // Sweep.
    report.tags = untag(storage, expired, cutoff, options.dry_run).await?;
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

/// Deletes the tags retention expired, unless this is a dry run. A tag pushed again since the
/// mark (its link newer than the grace period's start) belongs to a push of this moment: it
/// stays, and its manifest was pinned by that push. Returns the tags deleted (or to delete).
async fn untag(
    storage: &dyn Storage,
    mut expired: Vec<SweptTag>,
    cutoff: SystemTime,
    dry_run: bool,
) -> Result<Vec<SweptTag>, StorageError> {
    expired.sort();
    if dry_run {
        return Ok(expired);
    }
    let mut deleted = Vec::with_capacity(expired.len());
    for swept in expired {
        let dir =
            layout::repositories().join(&swept.repository).join("_manifests").join("tags").join(&swept.tag);
        match storage.stat(&dir.join("current").join("link")).await {
            Ok(meta) if meta.modified.is_some_and(|m| m <= cutoff) => {
                remove(storage, &dir).await?;
                deleted.push(swept);
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
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
