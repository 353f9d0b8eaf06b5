//! The HTTPS options of `regctl serve`: certificate files or ACME.

use std::path::PathBuf;

use clap::Args;
use regctl_registry::config::ChallengeKind;

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
    /// Get the certificate by ACME (Let's Encrypt) for this name; repeat for more names [env
    /// REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS, comma-separated].
    #[arg(long = "acme-host", value_name = "HOST")]
    pub acme_hosts: Vec<String>,
    /// Contact e-mail for the ACME account (optional; expiry notices) [env
    /// REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL].
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// ACME directory URL [default: Let's Encrypt production; env
    /// REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL].
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Use Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
    #[arg(long, conflicts_with = "acme_directory")]
    pub acme_staging: bool,
    /// Extra root CA certificate (PEM) trusted for the ACME directory's own HTTPS, e.g. a
    /// test CA; repeatable.
    #[arg(long = "acme-ca-root", value_name = "FILE")]
    pub acme_ca_roots: Vec<PathBuf>,
    /// Directory caching the ACME account and certificates; keep it across restarts [default:
    /// ./acme-cache; env REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE].
    #[arg(long, value_name = "DIR")]
    pub acme_cache: Option<PathBuf>,
    /// ACME challenge type to use, in the order given; repeatable [default: tls-alpn-01, then
    /// http-01].
    #[arg(long = "acme-challenge", value_name = "TYPE", value_parser = parse_challenge)]
    pub acme_challenges: Vec<ChallengeKind>,
    /// Plain-HTTP listener answering ACME HTTP-01 challenges and redirecting the rest to
    /// HTTPS; "" turns it off [default with ACME: 0.0.0.0:80; none with --tls-cert].
    #[arg(long, value_name = "HOST:PORT")]
    pub http_addr: Option<String>,
}

fn parse_challenge(s: &str) -> Result<ChallengeKind, String> {
    s.parse()
}
