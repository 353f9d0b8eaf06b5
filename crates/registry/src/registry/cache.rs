//! A cache of manifest reads, for storage where every read is a network round trip (S3).
//!
//! - Manifest bodies by digest: content-addressed, so an entry is never stale; kept up to
//!   [`BODY_BUDGET`] bytes, the oldest dropped first.
//! - A tag's digest, and a manifest revision's presence in a repository, for at most the
//!   cache's `ttl` (1 s on S3): that is how long another server's push of a tag, or delete of a
//!   manifest, may take to show on this one. This server's own pushes and deletes update it at
//!   once.
//!
//! Checks that guard writes (immutable tags, a delete's tags) read storage, never this cache.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::oci::{Digest, RepoName, Tag};

/// Bytes of manifest bodies kept at most.
const BODY_BUDGET: usize = 64 << 20;
/// Tags and revisions remembered at most; the maps are cleared when full.
const ENTRIES_MAX: usize = 100_000;

/// Manifest bodies by digest, the oldest dropped first past [`BODY_BUDGET`].
#[derive(Debug, Default)]
struct Bodies {
    by_digest: HashMap<Digest, Bytes>,
    order: VecDeque<Digest>,
    bytes: usize,
}

/// What [`ManifestCache`] remembers with a time.
#[derive(Debug, Default)]
struct Timed {
    tags: HashMap<(RepoName, Tag), (Digest, Instant)>,
    revisions: HashMap<(RepoName, Digest), Instant>,
}

/// The cache of one server's manifest reads (see the module's documentation).
#[derive(Debug)]
pub(super) struct ManifestCache {
    ttl: Duration,
    bodies: Mutex<Bodies>,
    timed: Mutex<Timed>,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ManifestCache {
    /// A cache whose tags and revisions are trusted for `ttl`.
    pub(super) fn new(ttl: Duration) -> ManifestCache {
        ManifestCache {
            ttl,
            bodies: Mutex::default(),
            timed: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Lookups answered here, and those that went to storage, since start.
    pub(super) fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// The digest `tag` of `name` had less than the TTL ago.
    pub(super) fn tag(&self, name: &RepoName, tag: &Tag) -> Option<Digest> {
        let timed = lock(&self.timed);
        let found = timed
            .tags
            .get(&(name.clone(), tag.clone()))
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(digest, _)| digest.clone());
        self.count(found.is_some());
        found
    }

    /// Remembers that `tag` of `name` is `digest` now.
    pub(super) fn set_tag(&self, name: &RepoName, tag: &Tag, digest: &Digest) {
        let mut timed = lock(&self.timed);
        if timed.tags.len() >= ENTRIES_MAX {
            timed.tags.clear();
        }
        timed.tags.insert((name.clone(), tag.clone()), (digest.clone(), Instant::now()));
    }

    /// Whether `digest` was a manifest of `name` less than the TTL ago.
    pub(super) fn has_revision(&self, name: &RepoName, digest: &Digest) -> bool {
        let timed = lock(&self.timed);
        let found =
            timed.revisions.get(&(name.clone(), digest.clone())).is_some_and(|at| at.elapsed() < self.ttl);
        self.count(found);
        found
    }

    /// Remembers that `digest` is a manifest of `name` now.
    pub(super) fn set_revision(&self, name: &RepoName, digest: &Digest) {
        let mut timed = lock(&self.timed);
        if timed.revisions.len() >= ENTRIES_MAX {
            timed.revisions.clear();
        }
        timed.revisions.insert((name.clone(), digest.clone()), Instant::now());
    }

    /// Forgets what this server deleted: a tag of `name`, or its manifest `digest` (with the
    /// tags that pointed at it).
    pub(super) fn forget(&self, name: &RepoName, tag: Option<&Tag>, digest: Option<&Digest>) {
        let mut timed = lock(&self.timed);
        if let Some(tag) = tag {
            timed.tags.remove(&(name.clone(), tag.clone()));
        }
        if let Some(digest) = digest {
            timed.revisions.remove(&(name.clone(), digest.clone()));
            timed.tags.retain(|(repo, _), (d, _)| !(repo == name && d == digest));
        }
    }

    /// The body of manifest `digest`, if kept.
    pub(super) fn body(&self, digest: &Digest) -> Option<Bytes> {
        let found = lock(&self.bodies).by_digest.get(digest).cloned();
        self.count(found.is_some());
        found
    }

    /// Keeps the body of manifest `digest`, dropping the oldest past the budget.
    pub(super) fn set_body(&self, digest: &Digest, body: &Bytes) {
        let mut bodies = lock(&self.bodies);
        if body.len() > BODY_BUDGET || bodies.by_digest.contains_key(digest) {
            return;
        }
        while bodies.bytes + body.len() > BODY_BUDGET {
            let Some(oldest) = bodies.order.pop_front() else { break };
            if let Some(dropped) = bodies.by_digest.remove(&oldest) {
                bodies.bytes -= dropped.len();
            }
        }
        bodies.bytes += body.len();
        bodies.order.push_back(digest.clone());
        bodies.by_digest.insert(digest.clone(), body.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn tags_and_revisions_expire_bodies_stay_within_the_budget() {
        let cache = ManifestCache::new(Duration::from_millis(50));
        let name = RepoName::parse("a/b").expect("name");
        let tag = Tag::parse("v1").expect("tag");
        let digest = Digest::of(Algorithm::Sha256, b"m");
        assert_eq!(cache.tag(&name, &tag), None);
        cache.set_tag(&name, &tag, &digest);
        cache.set_revision(&name, &digest);
        assert_eq!(cache.tag(&name, &tag), Some(digest.clone()));
        assert!(cache.has_revision(&name, &digest));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.tag(&name, &tag), None, "older than the TTL");
        assert!(!cache.has_revision(&name, &digest));
        cache.set_tag(&name, &tag, &digest);
        cache.forget(&name, None, Some(&digest));
        assert_eq!(cache.tag(&name, &tag), None, "a deleted manifest's tags go with it");

        let big = Bytes::from(vec![0u8; BODY_BUDGET / 2 + 1]);
        let (d1, d2) = (Digest::of(Algorithm::Sha256, b"1"), Digest::of(Algorithm::Sha256, b"2"));
        cache.set_body(&d1, &big);
        cache.set_body(&d2, &big);
        assert!(cache.body(&d1).is_none(), "the oldest made room");
        assert_eq!(cache.body(&d2).map(|b| b.len()), Some(big.len()));
        assert_eq!(cache.stats(), (3, 5));
    }
}
