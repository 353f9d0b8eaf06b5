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

    /// The names in `dir`, for [`Storage::list`].
    pub(super) async fn list_names(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError> {
        let prefix =
            if dir.as_str().is_empty() { self.prefix.clone() } else { format!("{}/", self.key(dir)) };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(Self::sdk_err(dir))?;
            let dirs =
                page.common_prefixes().iter().filter_map(|p| p.prefix()).map(|p| p.trim_end_matches('/'));
            let objects = page.contents().iter().filter_map(|o| o.key());
            for key in dirs.chain(objects) {
                let Some(name) = key.strip_prefix(&prefix) else { continue };
                let name = name.strip_suffix(LINK_SUFFIX).unwrap_or(name);
                if !name.is_empty()
                    && name != INTERNAL_DIR
                    && !name.ends_with(STATE_SUFFIX)
                    && !name.contains(TAIL_INFIX)
                {
                    names.push(name.to_string());
                }
            }
        }
        // An object being copied into place shows as itself and as its forward.
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Every object under `dir` with its metadata, for [`Storage::visit`].
    pub(super) async fn visit_objects(
        &self,
        dir: &StoragePath,
        visitor: &mut (dyn FnMut(String, ObjectMeta) + Send),
    ) -> Result<(), StorageError> {
        // One paginated listing of the whole tree (1000 keys a call) instead of list + stat.
        let prefix =
            if dir.as_str().is_empty() { self.prefix.clone() } else { format!("{}/", self.key(dir)) };
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
