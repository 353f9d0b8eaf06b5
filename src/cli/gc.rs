//! Options of `regctl gc`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Options of `regctl gc`. Storage and defaults come from the server's configuration: the file,
/// then the `REGISTRY_*` variables (e.g. `REGISTRY_STORAGE_S3_BUCKET`), then these flags.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The server's TOML configuration file (its storage and `[gc]` settings).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Filesystem storage directory [default: ./registry-data; env
    /// REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// List what would be deleted and the space it would free; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete manifests that no tag reaches (directly, as an index child, or as a
    /// referrer of one).
    #[arg(long)]
    pub delete_untagged: bool,
    /// Spare blobs, manifests and links written more recently than this, e.g. 30m [default:
    /// [gc] graceperiod, else 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
    /// Purge upload sessions idle for longer than this [default: [gc] uploadmaxage, else 168h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub upload_max_age: Option<Duration>,
    /// Wait this long after announcing the collection to running servers, before marking
    /// [default: [gc] settle, else 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub settle: Option<Duration>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    regctl_registry::config::ops::parse_duration(s)
}
