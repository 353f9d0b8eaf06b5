//! `regctl`: a private, HTTPS, password-protected container registry on AWS in two commands,
//! and the registry server it runs.
//!
//! A map of the code:
//! - `cli`: the command line (clap derive): global options and one variant per subcommand.
//! - `commands/*`: one file per subcommand, turning its arguments into options for the work.
//! - `ops/*`: the work of `provision`, `status`, `teardown`, `deploy`, `release` and the user
//!   commands, free of clap: options in, serialisable summary out; `ops/progress` prints
//!   (spinners on a terminal only); `ops/remote` is the instance over SSH (paths, sudo, atomic
//!   writes).
//! - `ssh`: the russh client: host key verification against known_hosts, key file or agent
//!   authentication, commands, streaming uploads.
//! - `templates`: the systemd unit and server config of `templates/`, and the boot script of a
//!   scaled deployment's instances, rendered with explicit variables.
//! - `aws/*`: one file per AWS resource (bucket, policy, role, instance profile, security
//!   group, instance, association, Elastic IP, DNS record), each with observe / plan / apply /
//!   destroy, and `AwsError`, which keeps the AWS error code.
//! - `exit`: the exit status each kind of failure gets (the error decides).
//! - `policies`: the IAM documents of `policies/`, embedded and rendered with the bucket name.
//! - the registry server itself is the `regctl-registry` crate in `crates/registry`.

mod aws;
mod cli;
mod commands;
mod exit;
mod ops;
mod policies;
mod ssh;
mod templates;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", regctl_registry::cli::error_report(e.as_ref()));
            ExitCode::from(exit::code(&e))
        }
    }
}
