//! `regctl-registry`: the registry server alone, without `regctl`'s AWS and SSH parts. It is
//! what `regctl deploy` installs on the instance when it finds it beside `regctl`: a smaller
//! upload, less memory, less code on the internet-facing host. `regctl-registry serve` takes
//! the same options as `regctl serve`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use regctl_registry::cli::ServeArgs;

/// The regctl registry server (OCI distribution API, filesystem or S3 storage, HTTPS by
/// ACME, htpasswd users).
#[derive(Debug, Parser)]
#[command(name = "regctl-registry", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the registry server (filesystem storage in ./registry-data on 127.0.0.1:5000 by
    /// default).
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let Command::Serve(args) = Cli::parse().command;
    match regctl_registry::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", regctl_registry::cli::error_report(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
