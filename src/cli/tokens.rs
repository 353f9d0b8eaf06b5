//! Options of `regctl rotate-token-key`.

use std::path::PathBuf;

use clap::Args;

/// Options of `regctl rotate-token-key`. Storage comes from the server's configuration: the
/// file, then the `REGISTRY_*` variables (e.g. `REGISTRY_STORAGE_S3_BUCKET`), then `--root`.
#[derive(Debug, Args)]
pub struct RotateTokenKeyArgs {
    /// The server's TOML configuration file (its storage and `[auth.token]` lifetime).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Filesystem storage directory [default: ./registry-data; env
    /// REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}
