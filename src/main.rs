//! `regctl`: a private, HTTPS, password-protected container registry on AWS in two commands,
//! and the registry server it runs.
//!
//! A map of the code:
//! - `cli`: the command line (clap derive): global options and one variant per subcommand.
//! - `commands/*`: one file per subcommand, turning its arguments into options for the work.
//! - `logging`: tracing output (text or JSON) for every command.
//! - the registry server itself is the `regctl-registry` crate in `crates/registry`.

mod cli;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
