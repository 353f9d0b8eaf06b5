//! Options of `regctl release`: the release of a scaled deployment, kept in its bucket.

use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};

use super::StateArgs;

/// Options of `regctl release`.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// What to do with the release.
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

/// The subcommands of `regctl release`.
#[derive(Debug, Clone, Subcommand)]
pub enum ReleaseCommand {
    /// Publish the registry server, its config and systemd unit to the bucket as the current
    /// release, which the instances of a scaled deployment install at boot (uploads only what
    /// the bucket does not have; running instances keep their version until replaced).
    Publish(PublishArgs),
    /// Print the boot script (EC2 user data) that installs the current release on an instance
    /// at every boot, e.g. for a launch template of your own.
    UserData(UserDataArgs),
}

/// The bucket of the release: `--bucket`, else the deployment's, recorded by provision.
#[derive(Debug, Clone, Args)]
pub struct ReleaseBucketArgs {
    /// The deployment's S3 bucket [default: the one recorded by provision]; the region is the
    /// global --region (or the recorded one).
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: StateArgs,
}

/// Options of `regctl release publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub bucket: ReleaseBucketArgs,
    /// Server executable to publish [default: regctl-registry beside this regctl, else this
    /// regctl].
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// Tags that cannot be overwritten or deleted once pushed, by pattern (`*`, `?`), e.g.
    /// 'v*'; repeatable.
    #[arg(long = "immutable-tag", value_name = "PATTERN", value_parser = NonEmptyStringValueParser::new())]
    pub immutable_tags: Vec<String>,
    /// An exception to --immutable-tag; repeatable.
    #[arg(long = "mutable-tag", value_name = "PATTERN", requires = "immutable_tags", value_parser = NonEmptyStringValueParser::new())]
    pub mutable_tags: Vec<String>,
    /// Let anyone pull without credentials; pushing and deleting still need a user.
    #[arg(long)]
    pub anonymous_pull: bool,
}

/// Options of `regctl release user-data`.
#[derive(Debug, Clone, Args)]
pub struct UserDataArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub bucket: ReleaseBucketArgs,
}
