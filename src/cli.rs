//! The command line: global options and the subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use regctl_registry::config::LogFormat;

/// Stand up a private, HTTPS, password-protected container registry, and run it.
#[derive(Debug, Parser)]
#[command(name = "regctl", version, about, propagate_version = true)]
pub struct Cli {
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
}

/// Options of `regctl serve`. Precedence: flags, then `REGISTRY_*` variables, then the config
/// file, then the defaults.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000; env REGISTRY_HTTP_ADDR].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Storage directory [default: ./registry-data; env
    /// REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// htpasswd file of bcrypt users; without one, no authentication [env
    /// REGISTRY_AUTH_HTPASSWD_PATH].
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Realm of the Basic authentication challenge [default: regctl; env
    /// REGISTRY_AUTH_HTPASSWD_REALM].
    #[arg(long, value_name = "REALM", requires = "htpasswd")]
    pub realm: Option<String>,
    /// Log format [default: text; env REGISTRY_LOG_FORMATTER].
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
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
