//! Options of `regctl rotate-token-key`.

use std::path::PathBuf;

use clap::Args;

use super::SshArgs;

/// Options of `regctl rotate-token-key`. Storage comes from the server's configuration: the
/// file, then the `REGISTRY_*` variables (e.g. `REGISTRY_STORAGE_S3_BUCKET`), then `--root`;
/// with `--instance`, from the deployed instance's configuration, over SSH.
#[derive(Debug, Args)]
pub struct RotateTokenKeyArgs {
    /// The server's TOML configuration file (its storage and `[auth.token]` lifetime).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Filesystem storage directory [default: ./registry-data; env
    /// REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Rotate the key of the deployed instance: its configuration is read over SSH, and the
    /// key is replaced on its disk (filesystem storage, over SSH) or in its bucket (S3, with
    /// this machine's AWS credentials).
    #[arg(long, conflicts_with_all = ["config", "root"])]
    pub instance: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ssh: SshArgs,
}
