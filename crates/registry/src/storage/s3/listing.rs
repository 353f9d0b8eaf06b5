//! Listings: a directory's names, a whole tree's objects, and the keys that stand for one
//! object; each hides this backend's own objects (upload states, tails, forwards).

use super::commit::Forward;
use super::{INTERNAL_DIR, LINK_SUFFIX, S3Storage, STATE_SUFFIX, TAIL_INFIX};
use crate::storage::{ObjectMeta, StorageError, StoragePath};

impl S3Storage {
    /// The keys that stand for the object at `key`: the object itself, its upload state, tail
    /// and forward, as one listing sees them.
    pub(super) async fn siblings(&self, path: &StoragePath, key: &str) -> Result<Vec<String>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(key)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(path))?;
            for k in page.contents().iter().filter_map(|o| o.key()) {
                let Some(rest) = k.strip_prefix(key) else { continue };
                if rest.is_empty()
                    || rest == STATE_SUFFIX
                    || rest == LINK_SUFFIX
                    || rest.starts_with(TAIL_INFIX)
                {
                    found.push(k.to_string());
                }
            }
        }
        Ok(found)
    }

    /// Every key under `prefix` (recursively).
    pub(super) async fn list_all(
        &self,
        path: &StoragePath,
        prefix: &str,
    ) -> Result<Vec<String>, StorageError> {
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(path))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        Ok(keys)
    }

    /// Up to `limit` names in `dir` after `after`, in order, for [`Storage::list_page`] (and,
    /// with no `after` and no limit, [`Storage::list`]): lists from the key of `after` on, in
    /// pages of the page's size, and stops once the page is known (see [`unreached_prefixes`]
    /// for where key order and name order differ). An object being copied into place shows as
    /// itself and as its forward: one name.
    pub(super) async fn list_names_page(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let prefix = self.dir_prefix(dir);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            // One more: the listing starts with `after`'s own key when it is a child.
            .max_keys(i32::try_from(limit.saturating_add(1).min(1000)).unwrap_or(1000))
            .set_start_after(after.map(|a| format!("{prefix}{a}")))
            .into_paginator()
            .send();
        let mut found = std::collections::BTreeSet::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(dir))?;
            let dirs = page.common_prefixes().iter().filter_map(|p| p.prefix());
            let objects = page.contents().iter().filter_map(|o| o.key());
            for key in dirs.chain(objects) {
                if let Some(name) = child_name(&prefix, key.trim_end_matches('/'))
                    && after.is_none_or(|a| name > a)
                {
                    found.insert(name.to_string());
                }
            }
            if found.len() >= limit && page.is_truncated() == Some(true) {
                // Stopped early: only the page's last name's prefixes can still be missing.
                // Pages come in key order, so this page's greatest key is the furthest reached.
                let last_dir = page.common_prefixes().last().and_then(|p| p.prefix());
                let last_object = page.contents().last().and_then(|o| o.key());
                let reached = last_dir.max(last_object).unwrap_or_default();
                let last = found.iter().nth(limit - 1).cloned().unwrap_or_default();
                for name in unreached_prefixes(&last, &prefix, reached) {
                    if after.is_none_or(|a| name > a)
                        && !found.contains(name)
                        && self.holds_child(dir, &prefix, name).await?
                    {
                        found.insert(name.to_string());
                    }
                }
                break;
            }
        }
        Ok(found.into_iter().take(limit).collect())
    }

    /// Whether `name` is a child of directory `prefix` (of `dir`): a directory holding a key,
    /// or a forward (an object's own key sorts before its name's continuations, so a listing
    /// that reached them has seen it).
    async fn holds_child(&self, dir: &StoragePath, prefix: &str, name: &str) -> Result<bool, StorageError> {
        for (under, exact) in
            [(format!("{prefix}{name}/"), false), (format!("{prefix}{name}{LINK_SUFFIX}"), true)]
        {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&under)
                .max_keys(1)
                .send()
                .await
                .map_err(Self::sdk_err(dir))?;
            if page.contents().iter().filter_map(|o| o.key()).any(|k| !exact || k == under) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every object under `dir` with its metadata, for [`Storage::visit`].
    pub(super) async fn visit_objects(
        &self,
        dir: &StoragePath,
        visitor: &mut (dyn FnMut(String, ObjectMeta) + Send),
    ) -> Result<(), StorageError> {
        // One paginated listing of the whole tree (1000 keys a call) instead of list + stat.
        let prefix = self.dir_prefix(dir);
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        let mut forwards = Vec::new();
        let internal = format!("{INTERNAL_DIR}/");
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(dir))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some(name) = key.strip_prefix(&prefix) else { continue };
                if name.is_empty()
                    || name.starts_with(&internal)
                    || name.ends_with(STATE_SUFFIX)
                    || name.contains(TAIL_INFIX)
                {
                    continue;
                }
                let modified = object.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok());
                if let Some(name) = name.strip_suffix(LINK_SUFFIX) {
                    forwards.push((name.to_string(), key.to_string(), modified));
                    continue;
                }
                let size = object.size().map_or(0, |s| u64::try_from(s).unwrap_or(0));
                visitor(name.to_string(), ObjectMeta { size, modified });
            }
        }
        // Forwards are few (copies under way): each one whose object is not in place yet
        // (and so was not listed) stands for it.
        for (name, link, modified) in forwards {
            let object = link.strip_suffix(LINK_SUFFIX).unwrap_or(&link);
            match self.head_meta(dir, object).await {
                Ok(_) => continue,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            if let Some(forward) = self.get_json::<Forward>(dir, &link).await? {
                visitor(name, ObjectMeta { size: forward.size, modified });
            }
        }
        Ok(())
    }
}

/// The name of the child of directory `prefix` that `key` (a key, or a common prefix without
/// its `/`) stands for; `None` for this backend's own objects.
fn child_name<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let name = key.strip_prefix(prefix)?;
    let name = name.strip_suffix(LINK_SUFFIX).unwrap_or(name);
    let own =
        name.is_empty() || name == INTERNAL_DIR || name.ends_with(STATE_SUFFIX) || name.contains(TAIL_INFIX);
    (!own).then_some(name)
}

/// The names that sort before `name` but whose keys a listing of directory `prefix` has not
/// reached at key `reached`.
///
/// S3 orders keys by their bytes, and a child's key is its name followed by `/` (a directory)
/// or `.s3link` (a forward). Names compare as keys do except where one name continues another
/// with a byte below `/` (`-` or `.`): `a` < `a-b` but `a-b/` < `a/`. So a name whose key was not
/// reached sorts before `name` only if it is `name` cut before such a byte; each is looked up.
fn unreached_prefixes<'n>(name: &'n str, prefix: &str, reached: &str) -> Vec<&'n str> {
    name.char_indices()
        .filter(|&(i, c)| i > 0 && c < '/')
        .map(|(i, _)| &name[..i])
        .filter(|cut| format!("{prefix}{cut}/").as_str() > reached)
        .collect()
}
