//! The command line of the server: `serve`'s options (shared by `regctl serve` and the
//! `regctl-registry` binary), how they combine with the config file and the environment, and
//! log output, and how a failure is reported.
//!
//! This is the one place both binaries share. Their own parts stay in them: the command enum,
//! the exit status, and `anyhow` (this module's failures are a typed [`CliError`]).

use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::config::{
    ChallengeKind, Config, ConfigError, HtpasswdConfig, LogFormat, TlsConfig, default_realm,
};
use crate::oci::Glob;
use crate::server;

/// Options of `serve`. Precedence: flags, then `REGISTRY_*` variables, then the config
/// file, then the defaults.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("users").args(["htpasswd", "users_in_storage"])))]
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
    /// Users in the storage instead of a file (`regctl add-user --bucket` edits them), re-read
    /// when they change: for several servers on one bucket [config auth.htpasswd.instorage].
    #[arg(long, conflicts_with = "htpasswd")]
    pub users_in_storage: bool,
    /// Realm of the Basic authentication challenge [default: regctl; env
    /// REGISTRY_AUTH_HTPASSWD_REALM].
    #[arg(long, value_name = "REALM", requires = "users")]
    pub realm: Option<String>,
    /// Let anyone pull without credentials; pushing and deleting still need a user with that
    /// access. Clients are challenged with Bearer so they can pull anonymously and push logged
    /// in [env REGISTRY_AUTH_ANONYMOUS=pull].
    #[arg(long)]
    pub anonymous_pull: bool,
    /// Challenge clients with Docker's Bearer token flow (`/token`) instead of Basic; Basic
    /// credentials are accepted either way [config auth.token.bearer].
    #[arg(long, requires = "users")]
    pub bearer: bool,
    /// How long a Bearer access token lasts, e.g. 5m [default: 5m; config auth.token.lifetime].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub token_lifetime: Option<std::time::Duration>,
    /// Log format [default: text; env REGISTRY_LOG_FORMATTER].
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Tags that cannot be overwritten or deleted once pushed, by pattern (`*`, `?`), e.g.
    /// 'v*'; repeatable [env REGISTRY_TAGS_IMMUTABLE, comma-separated].
    #[arg(long = "immutable-tag", value_name = "PATTERN", value_parser = parse_glob)]
    pub immutable_tags: Vec<Glob>,
    /// An exception to --immutable-tag; repeatable: `--immutable-tag '*' --mutable-tag latest`
    /// makes every tag but latest immutable [env REGISTRY_TAGS_MUTABLE].
    #[arg(long = "mutable-tag", value_name = "PATTERN", value_parser = parse_glob)]
    pub mutable_tags: Vec<Glob>,
    /// HTTPS.
    #[command(flatten)]
    pub tls: TlsArgs,
}

fn parse_glob(s: &str) -> Result<Glob, String> {
    if s.is_empty() {
        return Err("an empty pattern matches nothing: use '*' for every tag".into());
    }
    Ok(Glob::new(s))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::ops::parse_duration(s)
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// HTTPS: certificate files (`--tls-cert`, `--tls-key`) or ACME (`--acme-host` …). Each flag
/// overrides the config file and the `REGISTRY_HTTP_TLS_*` variables.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "HTTPS")]
pub struct TlsArgs {
    /// Certificate chain (PEM, leaf first) to serve HTTPS with; reloaded when it changes [env
    /// REGISTRY_HTTP_TLS_CERTIFICATE].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert [env REGISTRY_HTTP_TLS_KEY].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// ACME.
    #[command(flatten)]
    pub acme: AcmeArgs,
    /// Plain-HTTP listener answering ACME HTTP-01 challenges and redirecting the rest to
    /// HTTPS; "" turns it off [default with ACME: 0.0.0.0:80; none with --tls-cert].
    #[arg(long, value_name = "HOST:PORT")]
    pub http_addr: Option<String>,
}

/// Getting the certificate by ACME (`--acme-*`); any of these flags creates the config's
/// `letsencrypt` section.
#[derive(Debug, Default, Args)]
pub struct AcmeArgs {
    /// Get the certificate by ACME (Let's Encrypt) for this name; repeat for more names [env
    /// REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS, comma-separated].
    #[arg(long = "acme-host", value_name = "HOST")]
    pub acme_hosts: Vec<String>,
    /// How the ACME client talks to the CA.
    #[command(flatten)]
    pub client: AcmeClientArgs,
    /// Directory caching the ACME account and certificates; keep it across restarts; unused
    /// with S3 storage, whose bucket holds them (regctl/acme/) [default: ./acme-cache; env
    /// REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE].
    #[arg(long, value_name = "DIR")]
    pub acme_cache: Option<PathBuf>,
}

/// The ACME flags `regctl deploy` shares with `serve`: the account, the CA and its trust, and
/// the challenges. (The names to certify and the cache are `serve`'s alone: a deployment
/// certifies its domain and caches in its bucket or state directory.)
#[derive(Debug, Default, Clone, Args)]
pub struct AcmeClientArgs {
    /// Contact e-mail for the ACME account (optional; expiry notices) [serve's env:
    /// REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL].
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// ACME directory URL [default: Let's Encrypt production; serve's env:
    /// REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL].
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Use Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
    #[arg(long, conflicts_with = "acme_directory")]
    pub acme_staging: bool,
    /// Extra root CA certificate (PEM) trusted for the ACME directory's own HTTPS, for a
    /// private ACME CA (step-ca, or Pebble in tests); repeatable.
    #[arg(long = "acme-ca-root", value_name = "FILE")]
    pub acme_ca_roots: Vec<PathBuf>,
    /// ACME challenge type to use, in the order given; repeatable [default: tls-alpn-01, then
    /// http-01].
    #[arg(long = "acme-challenge", value_name = "TYPE", value_parser = parse_challenge)]
    pub acme_challenges: Vec<ChallengeKind>,
}

fn parse_challenge(s: &str) -> Result<ChallengeKind, String> {
    s.parse()
}

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration file or a `REGISTRY_*` variable is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The log level (`log.level` or `RUST_LOG`) does not parse.
    #[error(transparent)]
    LogFilter(#[from] tracing_subscriber::filter::ParseError),
    /// The log subscriber could not be installed.
    #[error("cannot set up logging: {0}")]
    Logging(Box<dyn std::error::Error + Send + Sync>),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// Builds the configuration: file, then environment, then flags.
fn config(args: ServeArgs) -> Result<Config, CliError> {
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
        config.auth.htpasswd = Some(HtpasswdConfig::file(realm, path));
    }
    if args.users_in_storage {
        let realm = config.auth.htpasswd.take().map_or_else(default_realm, |h| h.realm);
        config.auth.htpasswd = Some(HtpasswdConfig { realm, path: None, instorage: true });
    }
    if let (Some(realm), Some(htpasswd)) = (args.realm, config.auth.htpasswd.as_mut()) {
        htpasswd.realm = realm;
    }
    if args.anonymous_pull {
        config.auth.anonymous = Some(crate::config::Anonymous::Pull);
    }
    config.auth.token.bearer |= args.bearer;
    if let Some(lifetime) = args.token_lifetime {
        config.auth.token.lifetime = lifetime;
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    if !args.immutable_tags.is_empty() {
        config.tags.immutable = args.immutable_tags;
    }
    if !args.mutable_tags.is_empty() {
        config.tags.mutable = args.mutable_tags;
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
    apply_acme(args.acme, tls);
}

/// Applies the ACME flags; each one given creates the `letsencrypt` section.
fn apply_acme(AcmeArgs { acme_hosts, client: args, acme_cache }: AcmeArgs, tls: &mut TlsConfig) {
    if !acme_hosts.is_empty() {
        tls.letsencrypt_mut().hosts = acme_hosts;
    }
    if let Some(dir) = acme_cache {
        tls.letsencrypt_mut().cachefile = dir;
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
    if !args.acme_challenges.is_empty() {
        tls.letsencrypt_mut().challenges = args.acme_challenges;
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> Result<(), CliError> {
    let config = config(args)?;
    init_logging(config.log.format, &config.log.level)?;
    let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
    runtime.block_on(async { server::serve(config, crate::shutdown::signals()).await })?;
    Ok(())
}

/// Installs the global log subscriber, on stderr. `RUST_LOG` overrides `level` when set.
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), CliError> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(level))?;
    // Without `log_internal_errors(false)`, a failed log write is reported with `eprintln!`,
    // which panics when stderr itself is what failed (a closed pipe): every logging request
    // would then die. A log line that cannot be written is dropped instead.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_wanted(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(CliError::Logging)
}

/// Whether log lines may carry colour codes: only on a terminal (journald and log files would
/// keep the escape codes as text), and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
fn colour_wanted(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `error` and its causes on one line, `error: cause: root cause`, each cause once: a cause
/// whose text the line already holds is left out (error types here put their source in their
/// own message, and `{:#}` would print it a second time).
pub fn error_report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    for cause in std::iter::successors(Some(error), |e| e.source()) {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some("".into())));
        assert!(!colour_wanted(true, Some("1".into())));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn each_cause_is_reported_once() {
        let in_use = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let bind =
            anyhow::Error::new(server::ServeError::Bind { addr: "127.0.0.1:5000".into(), source: in_use });
        assert_eq!(error_report(bind.as_ref()), "cannot listen on 127.0.0.1:5000: Address already in use");
        let full = Err::<(), _>(std::io::Error::other("disk full"))
            .context("cannot write the config")
            .expect_err("an error");
        assert_eq!(error_report(full.as_ref()), "cannot write the config: disk full");
    }
}
