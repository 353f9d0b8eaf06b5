//! Options of `regctl login`.

use std::path::PathBuf;

use clap::Args;

/// Options of `regctl login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, `HOST[:PORT]` as clients name it (the deployment's domain).
    #[arg(long, value_name = "HOST")]
    pub registry: String,
    /// The user (or token name) to log in as.
    #[arg(long = "user", value_name = "NAME", default_value = "admin")]
    pub user_name: String,
    /// Read the password (or token secret) from stdin instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry's private CA certificate (PEM), installed in docker's and containers'
    /// certs.d for this registry [dirs: env REGCTL_DOCKER_CERTS_D, REGCTL_CONTAINERS_CERTS_D].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print a kubernetes.io/dockerconfigjson Secret of this name for the credentials (use a
    /// pull-only token: `regctl add-token NAME --access pull`) instead of configuring docker.
    #[arg(long, value_name = "NAME")]
    pub kubernetes_secret: Option<String>,
}
