//! Finding the repositories, one at a time, and reading one repository's links.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use super::Unreadable;
use crate::layout;
use crate::oci::Digest;
use crate::storage::{Storage, StorageError, StoragePath};

/// The repositories below [`layout::repositories`], one at a time, depth first: what is held
/// between two repositories is the directories still to be listed, nothing of the ones done.
pub(super) struct Repositories {
    /// Directories to list: (repository name they would have, path).
    pending: Vec<(String, StoragePath)>,
}

impl Repositories {
    pub(super) fn new() -> Repositories {
        Repositories { pending: vec![(String::new(), layout::repositories())] }
    }

    /// The next repository: its name, its directory and the names of its `_` parts. A
    /// directory with a `_` child is a repository; its other children may hold more.
    pub(super) async fn next(
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
pub(super) struct RepoLinks {
    /// Manifest revisions, and when each was last linked (pushed).
    pub(super) revisions: BTreeMap<Digest, Option<SystemTime>>,
    /// Tags that have a `current` link, and when it was last written (pushed).
    pub(super) tags: Vec<(String, Option<SystemTime>)>,
    /// Tag history entries: digest -> their directories.
    pub(super) tag_index: HashMap<Digest, Vec<StoragePath>>,
    /// Blobs linked within the grace period.
    pub(super) recent_layers: Vec<Digest>,
    /// Referrers: subject -> (referrer, directory of the link).
    pub(super) referrers: HashMap<Digest, Vec<(Digest, StoragePath)>>,
    /// Upload sessions: id -> latest modification time of anything in them.
    pub(super) uploads: BTreeMap<String, Option<SystemTime>>,
    /// Revision links whose path names no digest: what their manifest keeps is unknown.
    pub(super) unreadable: Vec<Unreadable>,
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
pub(super) async fn read_repository(
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
                        repo.revisions.insert(d, meta.modified);
                    }
                    None => repo.unreadable.push(Unreadable {
                        repository: name.to_string(),
                        item: format!("revision {}", rest[2..4].join("/")),
                        reason: "its path names no digest this registry reads".into(),
                    }),
                },
                ["_manifests", "tags", tag, "current", "link"] => {
                    repo.tags.push(((*tag).to_string(), meta.modified))
                }
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
pub(super) async fn read_named(
    storage: &dyn Storage,
    name: &str,
    cutoff: SystemTime,
) -> Result<RepoLinks, StorageError> {
    let dir = layout::repositories().join(name);
    let parts = storage.list(&dir).await?;
    read_repository(storage, name, &dir, &parts, cutoff, true).await
}
