//! The command line: global options and the subcommands.

use clap::{Parser, Subcommand};

mod deployment;
mod gc;
mod login;
mod release;
mod remote;
mod tokens;
mod undo;

pub use deployment::{
    GlobalArgs, OutputFormat, ProvisionArgs, StateArgs, StatusArgs, TargetArgs, TeardownArgs,
};
pub use gc::GcArgs;
pub use login::LoginArgs;
pub use regctl_registry::cli::ServeArgs;
pub use release::{PublishArgs, ReleaseArgs, ReleaseBucketArgs, ReleaseCommand, UserDataArgs};
pub use remote::{
    AddTokenArgs, AddUserArgs, DeployArgs, ListUsersArgs, LogsArgs, RemoveUserArgs, SshArgs, StorageKind,
    UsersFileArgs,
};
pub use tokens::RotateTokenKeyArgs;
pub use undo::{BucketArgs, HistoryArgs, RestoreArgs};

/// Stand up a private, HTTPS, password-protected container registry, and run it.
#[derive(Debug, Parser)]
#[command(name = "regctl", version, about, propagate_version = true, after_help = crate::exit::HELP)]
pub struct Cli {
    /// Options shared by every command (AWS access, deployment name, output).
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry server (filesystem storage in ./registry-data on 127.0.0.1:5000 by
    /// default).
    Serve(ServeArgs),
    /// Create or converge the AWS side: bucket, IAM policy, role and instance profile, security
    /// group, instance, Elastic IP, DNS record. Safe to run again; --dry-run shows the plan.
    Provision(ProvisionArgs),
    /// Show each AWS resource of the deployment (present, missing, drifted), the instance, DNS
    /// and the registry's HTTPS health.
    Status(StatusArgs),
    /// Remove everything provision made, in reverse order (the bucket only with
    /// --delete-bucket). Resumable; reports every failure.
    Teardown(TeardownArgs),
    /// Install or update the registry server on the instance over SSH (binary, config, systemd
    /// unit, first user) and wait until it answers over HTTPS. Changes only what differs.
    Deploy(Box<DeployArgs>),
    /// Add a registry user, or set a new password (prompted twice, or --password-stdin), with
    /// its access (--access, --repo); the running server picks it up without a restart.
    AddUser(AddUserArgs),
    /// Add an access token for machines (CI, servers): prints its random secret once, on
    /// stdout alone; use it as the password with the token's name as user name. Only its
    /// SHA-256 is stored.
    AddToken(AddTokenArgs),
    /// Remove a registry user or token; the running server refuses it within a second or two.
    RemoveUser(RemoveUserArgs),
    /// List the registry's users and tokens: kind, access, repositories, expiry.
    ListUsers(ListUsersArgs),
    /// Show the registry server's log on the instance (journalctl over SSH); -f follows it.
    Logs(LogsArgs),
    /// Delete blobs no manifest uses (and, with --delete-untagged, untagged manifests) and
    /// abandoned uploads; safe while servers keep serving pushes. --dry-run lists what would go.
    Gc(GcArgs),
    /// Sign the registry's Bearer tokens with a new key (in its storage: a filesystem root or
    /// the S3 bucket); tokens of the old key keep working for their lifetime.
    RotateTokenKey(RotateTokenKeyArgs),
    /// Set up this machine's container clients for the registry: its CA in certs.d, the
    /// credentials through docker's credential helper; or print a Kubernetes pull Secret.
    Login(LoginArgs),
    /// What each tag of a repository pointed at over time (pushes and deletions, deleted tags
    /// and repositories too), from the object versions of the registry's S3 bucket.
    History(HistoryArgs),
    /// Put a tag back as it was (--to DIGEST, --at TIME, or its last push), or a deleted
    /// repository's tags: restores every blob and link it needs from the bucket's earlier
    /// versions, then the tag; shows the plan and asks first. Safe while servers keep serving.
    Restore(RestoreArgs),
    /// The release of a scaled deployment in its bucket: `publish` the server, its config and
    /// unit as the current release; `user-data` prints the instances' boot script, which
    /// installs the current release at every boot.
    Release(ReleaseArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// A user name is not the deployment name (`--name`): both were once the argument `name`,
    /// and clap filled the global one from the positional.
    #[test]
    fn user_names_leave_the_deployment_name_alone() {
        for args in [["regctl", "add-user", "alice"], ["regctl", "remove-user", "alice"]] {
            let cli = Cli::try_parse_from(args).expect("parses");
            assert_eq!(cli.global.name, "registry", "{args:?}");
            match cli.command {
                Command::AddUser(a) => assert_eq!(a.user_name, "alice"),
                Command::RemoveUser(r) => assert_eq!(r.user_name, "alice"),
                other => panic!("{other:?}"),
            }
        }
    }
}
