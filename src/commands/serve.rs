//! `regctl serve`: run the registry server locally (or on the instance, under systemd). The
//! options and their handling live in the server crate, shared with `regctl-registry serve`.

use crate::cli::ServeArgs;

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    Ok(regctl_registry::cli::run(args)?)
}
