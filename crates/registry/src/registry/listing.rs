//! Content discovery: tags of a repository, the catalog of repositories, referrers.

use super::Registry;
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::manifest::{Descriptor, Manifest};
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::StoragePath;

impl Registry {
    /// The tags of a repository, sorted; `NameUnknown` when the repository does not exist.
    ///
    /// A repository exists while it holds a manifest, the rule [`Registry::catalog`] lists by:
    /// once its last manifest is deleted it leaves the catalog and its tags list is
    /// `NameUnknown`, though its layers stay readable until garbage collection.
    pub async fn tags(&self, name: &RepoName) -> Result<Vec<Tag>> {
        let names = self.storage.list(&layout::tags(name)).await?;
        if names.is_empty() && !self.holds_manifests(name).await? {
            return Err(Error::NameUnknown);
        }
        let mut tags: Vec<Tag> = names.iter().filter_map(|t| Tag::parse(t)).collect();
        tags.sort();
        Ok(tags)
    }

    /// Every repository holding manifests, sorted by name.
    ///
    /// Walks the repositories directory one level at a time: a directory with a `_manifests`
    /// child is a repository, and any other child (not starting with `_`) may hold more.
    /// Listings leave out directories that hold no object, so a repository whose manifests
    /// were all deleted is not listed.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut pending: Vec<(StoragePath, String)> = vec![(layout::repositories(), String::new())];
        while let Some((dir, prefix)) = pending.pop() {
            for child in self.storage.list(&dir).await? {
                if child == "_manifests" {
                    found.push(prefix.clone());
                } else if !child.starts_with('_') {
                    let name = if prefix.is_empty() { child.clone() } else { format!("{prefix}/{child}") };
                    if RepoName::parse(&name).is_some() {
                        pending.push((dir.join(&child), name));
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Descriptors of the manifests in `name` whose subject is `subject`, optionally only those
    /// of one artifact type, sorted by digest.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let dir = layout::referrers(name, subject);
        let mut digests = Vec::new();
        for algorithm in self.storage.list(&dir).await? {
            for hex in self.storage.list(&dir.join(&algorithm)).await? {
                if let Ok(digest) = format!("{algorithm}:{hex}").parse::<Digest>() {
                    digests.push(digest);
                }
            }
        }
        digests.sort();
        let mut descriptors = Vec::new();
        for digest in digests {
            let stored = match self.get_manifest(name, &crate::oci::Reference::Digest(digest)).await {
                Ok(stored) => stored,
                Err(Error::ManifestUnknown) => continue, // deleted since it was linked
                Err(e) => return Err(e),
            };
            let Ok(parsed) = Manifest::parse(&stored.body, None) else { continue };
            let descriptor = Descriptor {
                media_type: parsed.media_type.clone(),
                digest: stored.digest,
                size: stored.body.len() as u64,
                urls: Vec::new(),
                artifact_type: parsed.referrer_artifact_type(),
                annotations: parsed.annotations.clone(),
                platform: None,
            };
            if artifact_type.is_none_or(|wanted| descriptor.artifact_type.as_deref() == Some(wanted)) {
                descriptors.push(descriptor);
            }
        }
        Ok(descriptors)
    }
}
