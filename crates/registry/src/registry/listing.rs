//! Content discovery: tags of a repository, the catalog of repositories (referrers: see
//! [`super::referrers`]).

use super::Registry;
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::{RepoName, Tag};

impl Registry {
    /// The tags of a repository, sorted; `NameUnknown` when the repository does not exist.
    ///
    /// A repository exists while it holds a manifest, the rule [`Registry::catalog`] lists by:
    /// once its last manifest is deleted it leaves the catalog and its tags list is
    /// `NameUnknown`, though its layers stay readable until garbage collection.
    pub async fn tags(&self, name: &RepoName) -> Result<Vec<Tag>> {
        self.tags_page(name, None, usize::MAX).await
    }

    /// At most `limit` tags of a repository that sort after `after`, in order: one page of
    /// [`Registry::tags`], costing one listing of the tags directory's names, as distribution's
    /// (on S3, from `after` on). A tag is listed while its directory is: it is written with its
    /// `current` link first and deleted whole, and storage keeps no directory without an object
    /// (see [`Storage`]).
    ///
    /// [`Storage`]: crate::storage::Storage
    pub async fn tags_page(&self, name: &RepoName, after: Option<&str>, limit: usize) -> Result<Vec<Tag>> {
        let names = self.storage.list_page(&layout::tags(name), after, limit).await?;
        if names.is_empty() && !self.holds_manifests(name).await? {
            return Err(Error::NameUnknown);
        }
        Ok(names.iter().filter_map(|t| Tag::parse(t)).collect())
    }

    /// Every repository holding manifests, sorted by name.
    ///
    /// Listings leave out directories that hold no object, so a repository whose manifests
    /// were all deleted is not listed.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        self.catalog_page(None, usize::MAX).await
    }

    /// At most `limit` repositories whose names sort after `after`, in name order: one page of
    /// the catalog, costing the directories up to the page's end rather than the registry.
    ///
    /// A directory with a `_manifests` child is a repository, and any other child (not
    /// starting with `_`) may hold more. Directories wait in a queue ordered by their name
    /// prefix, and so do the repositories found, until nothing queued can sort before them; a
    /// prefix sorts before every name beneath it, so taking the smallest each time meets
    /// repositories in name order (`a`, `a-b`, `a/c`: a name's subtree and its siblings'
    /// interleave, which a depth-first walk would get wrong). Subtrees that hold only names up to
    /// `after` are never listed, and the walk stops when the page is full.
    ///
    /// The directories at the head of the queue are listed together ([`Storage::list_many`]:
    /// one blocking task on the filesystem, requests in flight together on S3), in batches that
    /// double from one up to what the page still lacks: at most twice the listings the page
    /// needs, in a handful of round trips.
    ///
    /// [`Storage::list_many`]: crate::storage::Storage::list_many
    pub async fn catalog_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        use std::cmp::Reverse;
        // Whether the subtree of the name prefix `prefix` may hold a name after `after`: the
        // prefix itself, or one of the names beneath it (`prefix/...`).
        let worth_listing = |prefix: &str| {
            let Some(after) = after else { return true };
            let below = format!("{prefix}/");
            prefix > after || below.as_str() > after || after.starts_with(&below)
        };
        let mut found = Vec::new();
        // (name prefix, its directory to list, or `None` for a repository found by that name).
        let mut pending = std::collections::BinaryHeap::new();
        pending.push(Reverse((String::new(), Some(layout::repositories()))));
        let (mut queued, mut batch_size) = (0, 1);
        while found.len() < limit {
            // Each repository still to find takes at least one listing; those already queued none.
            let lacking = (limit - found.len()).saturating_sub(queued);
            let wanted = batch_size.min(lacking).max(1);
            let mut batch = Vec::new();
            while batch.len() < wanted && matches!(pending.peek(), Some(Reverse((_, Some(_))))) {
                if let Some(Reverse((prefix, Some(dir)))) = pending.pop() {
                    batch.push((prefix, dir));
                }
            }
            if batch.is_empty() {
                // A repository at the head: nothing still to list can sort before it.
                match pending.pop() {
                    Some(Reverse((name, _))) => {
                        found.push(name);
                        queued -= 1;
                        continue;
                    }
                    None => break,
                }
            }
            batch_size = batch_size.saturating_mul(2);
            let dirs: Vec<_> = batch.iter().map(|(_, dir)| dir.clone()).collect();
            for ((prefix, dir), children) in batch.into_iter().zip(self.storage.list_many(&dirs).await?) {
                for child in children {
                    if child == "_manifests" {
                        if !prefix.is_empty() && after.is_none_or(|a| prefix.as_str() > a) {
                            pending.push(Reverse((prefix.clone(), None)));
                            queued += 1;
                        }
                    } else if !child.starts_with('_') {
                        let name =
                            if prefix.is_empty() { child.clone() } else { format!("{prefix}/{child}") };
                        if RepoName::parse(&name).is_some() && worth_listing(&name) {
                            pending.push(Reverse((name, Some(dir.join(&child)))));
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// At most `limit` repositories whose names sort before `before`, in name order: the page
    /// before a page of the catalog (the UI's "Previous page"), read backwards at the same cost.
    ///
    /// The walk of [`Registry::catalog_page`] in reverse: the queue holds repositories by their
    /// name and directories by the largest name below them (`prefix/~`: `~` sorts after every
    /// character of a name), and the largest comes out first. Subtrees whose names all sort
    /// from `before` on are never listed, and the walk stops when the page is full.
    pub async fn catalog_page_before(&self, before: &str, limit: usize) -> Result<Vec<String>> {
        let mut found = Vec::new();
        // (largest name it can hold, the directory to list or `None` for a repository's name).
        let mut pending = std::collections::BinaryHeap::new();
        pending.push((String::from("~"), String::new(), Some(layout::repositories())));
        while let Some((bound, prefix, dir)) = pending.pop() {
            if found.len() >= limit {
                break;
            }
            let Some(dir) = dir else {
                found.push(bound);
                continue;
            };
            for child in self.storage.list(&dir).await? {
                if child == "_manifests" {
                    if !prefix.is_empty() && prefix.as_str() < before {
                        pending.push((prefix.clone(), String::new(), None));
                    }
                } else if !child.starts_with('_') {
                    let name = if prefix.is_empty() { child.clone() } else { format!("{prefix}/{child}") };
                    // Every name below sorts from `name` on.
                    if RepoName::parse(&name).is_some() && name.as_str() < before {
                        pending.push((format!("{name}/~"), name, Some(dir.join(&child))));
                    }
                }
            }
        }
        found.reverse();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::metrics::{InstrumentedStorage, Metrics};
    use crate::oci::Tag;
    use crate::storage::{FsStorage, Storage as _};

    /// How many `list` calls `metrics` counted.
    fn lists(metrics: &Metrics) -> u64 {
        let text = metrics.render(None);
        let line = text
            .lines()
            .find(|l| l.starts_with(r#"regctl_storage_operations_total{operation="list",outcome="ok"}"#));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Issue 22: a page of tags is one listing of the tags directory's names, and a deleted
    /// tag (its directory deleted whole, with its history) is not among them.
    #[tokio::test]
    async fn tags_pages_are_in_order_and_leave_out_deleted_tags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::new(Arc::new(FsStorage::new(dir.path())));
        let name = RepoName::parse("big/tags").expect("a name");
        let mut tags: Vec<String> = (0..150).map(|t| format!("t{t:03}")).collect();
        tags.extend(["a", "a-b", "a.c", "b"].map(String::from));
        let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let digest: crate::oci::Digest = digest.parse().expect("a digest");
        for tag in &tags {
            let tag = Tag::parse(tag).expect("a tag");
            let link = Bytes::from(digest.to_string());
            registry.storage.put(&layout::tag_current_link(&name, &tag), link.clone()).await.expect("put");
            registry.storage.put(&layout::tag_index_link(&name, &tag, &digest), link).await.expect("put");
        }
        for deleted in ["t005", "t149"] {
            let tag = Tag::parse(deleted).expect("a tag");
            registry.storage.delete(&layout::tag(&name, &tag)).await.expect("delete a tag");
            tags.retain(|t| t != deleted);
        }
        tags.sort();
        assert_eq!(
            registry.tags(&name).await.expect("tags").iter().map(Tag::to_string).collect::<Vec<_>>(),
            tags
        );
        for n in [1, 7, 100] {
            let mut walked: Vec<String> = Vec::new();
            loop {
                let page =
                    registry.tags_page(&name, walked.last().map(String::as_str), n).await.expect("a page");
                walked.extend(page.iter().map(Tag::to_string));
                if page.len() < n {
                    break;
                }
            }
            assert_eq!(walked, tags, "pages of {n}");
        }
    }

    #[tokio::test]
    async fn catalog_pages_are_in_name_order_and_cost_the_page_not_the_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let storage =
            Arc::new(InstrumentedStorage::new(Arc::new(FsStorage::new(dir.path())), metrics.clone()));
        let registry = Registry::new(storage.clone());
        // Names whose subtrees interleave with their siblings' in name order ('-' and '.' sort
        // before '/'), a repository nested in another, and many teams.
        let mut names: Vec<String> =
            ["a", "a-b", "a.x", "a/c", "a/c/d", "a0", "b/c/d"].map(String::from).to_vec();
        for team in 0..40 {
            for app in 0..5 {
                names.push(format!("team{team:02}/app{app}"));
            }
        }
        let tag = Tag::parse("latest").expect("a tag");
        for name in &names {
            let name = RepoName::parse(name).expect("a name");
            storage
                .put(&layout::tag_current_link(&name, &tag), Bytes::from_static(b"sha256:00"))
                .await
                .expect("put");
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(registry.catalog().await.expect("catalog"), sorted);

        // Walking in pages of every size gives the same list.
        for n in [1, 2, 3, 7, 100] {
            let mut walked = Vec::new();
            loop {
                let page = registry.catalog_page(walked.last().map(String::as_str), n).await.expect("a page");
                walked.extend(page.iter().cloned());
                if page.len() < n {
                    break;
                }
            }
            assert_eq!(walked, sorted, "pages of {n}");
            // And backwards, from past the end.
            let mut walked: Vec<String> = Vec::new();
            loop {
                let before = walked.first().map_or("~", String::as_str);
                let page = registry.catalog_page_before(before, n).await.expect("a page");
                walked.splice(0..0, page.iter().cloned());
                if page.len() < n {
                    break;
                }
            }
            assert_eq!(walked, sorted, "pages of {n} backwards");
        }

        // A page of 5 near the end lists a handful of directories, not all 200-odd.
        let before = lists(&metrics);
        let page = registry.catalog_page(Some("team37/app4"), 5).await.expect("a page");
        assert_eq!(page, ["team38/app0", "team38/app1", "team38/app2", "team38/app3", "team38/app4"]);
        let listed = lists(&metrics) - before;
        assert!(
            listed <= 12,
            "{listed} directories listed for one page of 5 among {} repositories",
            names.len()
        );
    }
}
