//! The mark: what is in use, from each repository's roots, as compact keys.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::repositories::RepoLinks;
use super::{GcError, Unreadable};
use crate::layout;
use crate::oci::Digest;
use crate::oci::manifest::References;
use crate::storage::{Storage, StorageError, StoragePath};

/// A digest as the mark set keeps it: its first 32 bytes (all of a SHA-256; a SHA-512's first
/// half, which no SHA-256 digest can be made to equal short of a preimage attack), a tenth of
/// the memory of its text.
pub(super) type Key = [u8; 32];

pub(super) fn key(digest: &Digest) -> Key {
    let mut key = [0u8; 32];
    // A parsed digest's hex is lowercase hex of at least 64 digits, so this cannot fail.
    let _ = hex::decode_to_slice(&digest.hex().as_bytes()[..64], &mut key);
    key
}

/// The mark: what is in use, as compact [`Key`]s, and what is known of the manifests read so
/// far (a manifest shared by many repositories is read once).
#[derive(Default)]
pub(super) struct Mark {
    /// Blobs and manifests in use.
    pub(super) marked: HashSet<Key>,
    /// Manifests whose blobs are marked.
    pub(super) expanded: HashSet<Key>,
    /// The child manifests of expanded indexes (an image has none and takes no entry).
    pub(super) children: HashMap<Key, Box<[Digest]>>,
    /// Manifests read and found readable but not marked (untagged, under `delete_untagged`).
    pub(super) checked: HashSet<Key>,
    /// Manifests that could not be read or whose bytes are gone (recorded once).
    pub(super) failed: HashSet<Key>,
    /// Manifests (and links) whose content cannot be read: what they keep alive is unknown.
    pub(super) unreadable: Vec<Unreadable>,
    /// Manifests whose bytes are gone.
    pub(super) missing: Vec<String>,
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
    pub(super) async fn repository(
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
    pub(super) fn refuse_on_doubt(&mut self) -> Result<(), GcError> {
        if self.unreadable.is_empty() {
            return Ok(());
        }
        Err(GcError::Unreadable(std::mem::take(&mut self.unreadable)))
    }
}

/// The roots of repository `name`: every revision, unless untagged ones linked at or before
/// `untagged_before` are to go; then its tags' manifests and the revisions linked after it.
/// Untagged revisions are read all the same ([`Mark::check`]).
///
/// Every revision being a root, the tags add nothing: a pull by tag needs the revision link
/// (pushes write it before the tag), so the tag links are only read when untagged manifests
/// are to be deleted (one request per tag saved, as distribution does).
pub(super) async fn roots_of(
    storage: &dyn Storage,
    name: &str,
    dir: &StoragePath,
    repo: &RepoLinks,
    untagged_before: Option<SystemTime>,
    mark: &mut Mark,
) -> Result<Vec<Digest>, StorageError> {
    let Some(untagged_before) = untagged_before else {
        return Ok(repo.revisions.keys().cloned().collect());
    };
    let tags = dir.join("_manifests").join("tags");
    // A handful of tag links read at once: on S3 each is a request of 10-30 ms.
    let mut links = Vec::new();
    for chunk in repo.tags.chunks(TAG_READS) {
        let paths: Vec<StoragePath> =
            chunk.iter().map(|(t, _)| tags.join(t).join("current").join("link")).collect();
        links.extend(
            chunk.iter().zip(futures_util::future::join_all(paths.iter().map(|p| storage.get(p))).await),
        );
    }
    let mut roots = Vec::new();
    for ((tag, _), link) in links {
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
    for (digest, linked) in &repo.revisions {
        if linked.is_none_or(|t| t > untagged_before) {
            roots.push(digest.clone());
        } else {
            mark.check(storage, name, digest).await?;
        }
    }
    Ok(roots)
}

/// Tag links read concurrently within a repository.
const TAG_READS: usize = 8;
