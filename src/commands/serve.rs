//! `regctl serve`: run the registry server locally (or on the instance, under systemd).

use anyhow::Context;
use regctl_registry::config::{Config, HtpasswdConfig, TlsConfig, default_realm};
use regctl_registry::server;

use crate::cli::{ServeArgs, TlsArgs};
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
    apply_tls(args.tls, &mut config.http.tls);
    Ok(config)
}

/// Applies the HTTPS flags over the file and the environment; an ACME flag creates the
/// `letsencrypt` section.
fn apply_tls(args: TlsArgs, tls: &mut TlsConfig) {
    tls.certificate = args.tls_cert.or(tls.certificate.take());
    tls.key = args.tls_key.or(tls.key.take());
    tls.httpaddr = args.http_addr.or(tls.httpaddr.take());
    if !args.acme_hosts.is_empty() {
        tls.letsencrypt_mut().hosts = args.acme_hosts;
    }
    if let Some(email) = args.acme_email {
        tls.letsencrypt_mut().email = Some(email);
    }
    if let Some(url) = args.acme_directory {
        tls.letsencrypt_mut().directoryurl = Some(url);
    }
    if args.acme_staging {
        let le = tls.letsencrypt_mut();
        le.staging = true;
        le.directoryurl = None;
    }
    if !args.acme_ca_roots.is_empty() {
        tls.letsencrypt_mut().caroots = args.acme_ca_roots;
    }
    if let Some(dir) = args.acme_cache {
        tls.letsencrypt_mut().cachefile = dir;
    }
    if !args.acme_challenges.is_empty() {
        tls.letsencrypt_mut().challenges = args.acme_challenges;
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    logging::init(config.log.format, &config.log.level)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(server::serve(config, server::shutdown_signal()))?;
    Ok(())
}
