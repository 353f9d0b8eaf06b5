//! Options of `regctl login`.

use std::path::PathBuf;

use clap::Args;

use super::StateArgs;

/// Options of `regctl login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, `HOST[:PORT]` as clients name it [default: the deployment's domain, as
    /// recorded in the state file].
    #[arg(long, value_name = "HOST")]
    pub registry: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub state: StateArgs,
    /// The user (or token name) to log in as.
    #[arg(long = "user", value_name = "NAME", default_value = "admin")]
    pub user_name: String,
    /// Read the password (or token secret) from stdin instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry's private CA certificate (PEM): trusted when checking the credentials, and
    /// installed in docker's and containers' certs.d for this registry [dirs: env
    /// REGCTL_DOCKER_CERTS_D, REGCTL_CONTAINERS_CERTS_D].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Instead of configuring docker, make a pull-only token named NAME (as `regctl add-token
    /// NAME --access pull` would) and print a kubernetes.io/dockerconfigjson Secret of this
    /// name for it: the Secret never holds the user's password. `regctl remove-user NAME`
    /// revokes it.
    #[arg(long, value_name = "NAME")]
    pub kubernetes_secret: Option<String>,
    /// With --kubernetes-secret: add the token to this local htpasswd file (of `regctl serve
    /// --htpasswd FILE`) [default: the instance's, over SSH with the defaults of `regctl
    /// add-token`].
    #[arg(long, value_name = "FILE", requires = "kubernetes_secret")]
    pub file: Option<PathBuf>,
}
