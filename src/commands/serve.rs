//! `regctl serve`: run the registry server locally (or on the instance, under systemd).

use anyhow::Context;
use regctl_registry::config::{Config, HtpasswdConfig, default_realm};
use regctl_registry::server;

use crate::cli::ServeArgs;
use crate::logging;

/// Builds the configuration: file, then environment, then flags.
fn config(args: ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(addr) = args.addr {
        config.http.addr = addr;
    }
    if let Some(root) = args.root {
        config.storage.filesystem.rootdirectory = root;
    }
    if let Some(path) = args.htpasswd {
        let realm = config.auth.htpasswd.take().map_or_else(default_realm, |h| h.realm);
        config.auth.htpasswd = Some(HtpasswdConfig { realm, path });
    }
    if let (Some(realm), Some(htpasswd)) = (args.realm, config.auth.htpasswd.as_mut()) {
        htpasswd.realm = realm;
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    Ok(config)
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    logging::init(config.log.format, &config.log.level)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(server::serve(config, server::shutdown_signal()))?;
    Ok(())
}
