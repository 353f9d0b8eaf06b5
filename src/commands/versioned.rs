//! The versioned bucket `history` and `restore` read, found from the flags: `--bucket` (with
//! the global AWS options), the server's configuration (`--config`, `REGISTRY_STORAGE_*`, as
//! `regctl gc` reads it), or else the deployment's bucket (recorded by provision, or tagged).
//! Filesystem storage is refused: it keeps no earlier versions.

use std::path::Path;

use regctl_registry::config::S3Config;
use regctl_registry::storage::connect_s3;

use super::deployment::{connect, load};
use crate::aws::bucket;
use crate::cli::{BucketArgs, GlobalArgs};
use crate::ops::state::Settings;
use crate::ops::versions::VersionedBucket;

/// Opens the bucket the flags name.
pub async fn open(global: &GlobalArgs, args: &BucketArgs) -> anyhow::Result<VersionedBucket> {
    let from_server_config = args.config.is_some()
        || args.root.is_some()
        || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("REGISTRY_STORAGE"));
    if args.bucket.is_none() && args.s3_root_directory.is_none() && from_server_config {
        let config = super::storage::config(args.config.as_deref(), args.root.as_ref())?;
        let Some(s3) = config.storage.s3 else {
            return Err(no_versions(&config.storage.filesystem.rootdirectory));
        };
        return Ok(VersionedBucket {
            client: connect_s3(&s3).await,
            prefix: s3.key_prefix(),
            name: s3.bucket,
        });
    }
    let (names, recorded) = load(global, &args.state)?;
    let flags =
        Settings { region: global.region.clone(), bucket: args.bucket.clone(), ..Settings::default() };
    let settings = recorded.overlay(&flags);
    let aws = connect(global, &settings).await?;
    let name = match settings.bucket {
        Some(name) => name,
        None => {
            let mut tagged = bucket::find_tagged(&aws, names.deployment()).await?;
            match (tagged.pop(), tagged.is_empty()) {
                (Some(name), true) => name,
                (None, _) => {
                    return Err(crate::usage!(
                        "no bucket for deployment {}: none recorded in {} and none tagged {}={} in {}; pass \
                         --bucket NAME (with --region, --endpoint-url), or --config FILE of the server",
                        names.deployment(),
                        args.state.state_file.display(),
                        crate::aws::TAG_DEPLOYMENT,
                        names.deployment(),
                        aws.region
                    ));
                }
                (Some(name), false) => {
                    return Err(crate::usage!(
                        "several buckets are tagged for deployment {}, e.g. {name}: pass --bucket NAME",
                        names.deployment()
                    ));
                }
            }
        }
    };
    let root = args.s3_root_directory.clone().unwrap_or_default();
    let prefix = S3Config { rootdirectory: root, ..S3Config::for_bucket(name.clone()) }.key_prefix();
    Ok(VersionedBucket { client: aws.s3, name, prefix })
}

/// The refusal for filesystem storage.
fn no_versions(root: &Path) -> anyhow::Error {
    crate::usage!(
        "{} is filesystem storage, which keeps no earlier versions of tags or blobs: history and restore \
         read the object versions of the registry's S3 bucket (pass --bucket NAME, or --config FILE of a \
         server on S3)",
        root.display()
    )
}
