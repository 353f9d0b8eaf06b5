//! The registry's storage as a command on the operator's machine opens it: the server's
//! configuration (file, then `REGISTRY_*` variables, then `--root`), on a filesystem or S3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regctl_registry::config::Config;
use regctl_registry::storage::{FsStorage, S3Storage, Storage};

/// The configuration: the file, then the environment, then `root` (which means filesystem
/// storage there).
pub fn config(file: Option<&Path>, root: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match file {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(root) = root {
        config.storage.filesystem.rootdirectory = root.clone();
        config.storage.s3 = None;
    }
    Ok(config)
}

/// The storage `config` names. On a filesystem, `marker` (a path below the root) must exist,
/// so a mistyped directory is not taken for an empty registry.
pub async fn open(config: &Config, marker: &str) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(match &config.storage.s3 {
        Some(s3) => Arc::new(S3Storage::new(s3).await),
        None => {
            let root = &config.storage.filesystem.rootdirectory;
            anyhow::ensure!(
                root.join(marker).exists(),
                "no registry storage in {} ({marker} is missing): give the server's --root DIR or \
                 --config FILE (or the REGISTRY_STORAGE_* variables for S3)",
                root.display()
            );
            Arc::new(FsStorage::new(root))
        }
    })
}
