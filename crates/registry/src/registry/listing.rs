//! Content discovery: tags of a repository, the catalog of repositories (referrers: see
//! [`super::referrers`]).

use super::Registry;
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::{RepoName, Tag};
use crate::storage::StoragePath;

impl Registry {
    /// The tags of a repository, sorted; `NameUnknown` when the repository does not exist.
    pub async fn tags(&self, name: &RepoName) -> Result<Vec<Tag>> {
        let names = self.storage.list(&layout::tags(name)).await?;
        if names.is_empty() && !self.repository_exists(name).await? {
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
}
