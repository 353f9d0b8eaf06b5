//! HTTPS: rustls (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN) in front of the registry
//! application, with the certificate from files or from ACME.
//!
//! - [`cert`]: PEM parsing, key checks, certificate dates and the renewal time.
//! - [`resolver`]: the certificate for each handshake, swapped in place on reload or renewal,
//!   and TLS-ALPN-01 challenge certificates.
//! - [`files`]: certificate and key files, reloaded when they change.
//! - [`acme`]: the ACME client: account and certificate, HTTP-01 and TLS-ALPN-01,
//!   background renewal with backoff.
//! - [`cache`]: where ACME keeps them: a private directory, or the registry's object store.
//! - [`redirect`]: the port-80 listener: HTTP-01 tokens and a redirect to HTTPS.
//! - [`plain`]: a readable 400 for plain HTTP sent to the HTTPS port.
//!
//! [`TlsSettings::from_config`] validates the `[http.tls]` section once; [`serve`] runs the
//! listeners until shutdown, letting in-flight requests finish.

pub mod acme;
pub mod cache;
pub mod cert;
pub mod files;
pub mod plain;
pub mod redirect;
pub mod resolver;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper_util::server::graceful::Watcher;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ChallengeKind, TlsConfig};
use crate::connection::{self, ConnLimits};
use crate::storage::Storage;
use acme::{AcmeError, AcmeManager, AcmeSettings};
use files::CertFiles;
use redirect::Http01Tokens;
use resolver::{ACME_TLS_ALPN, CertResolver};

/// The `Strict-Transport-Security` value sent on HTTPS responses when HSTS is on ([`hsts_on`]):
/// one year. No `includeSubDomains`: other names under the registry's domain are not ours to
/// pin.
pub const HSTS: &str = "max-age=31536000";
/// The plain-HTTP listener used with ACME when none is configured.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:80";
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The `[http.tls]` settings are contradictory or incomplete; the message says what to set.
    #[error("{0}")]
    Config(String),
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file has unusable content.
    #[error("{path}: {source}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: cert::CertError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({purpose}): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the listener is for.
        purpose: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// ACME could not be set up (cache directory, root CA files).
    #[error(transparent)]
    Acme(#[from] AcmeError),
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Certificate and key files.
    Files(CertFiles),
    /// An ACME CA.
    Acme(AcmeSettings),
}

/// Validated HTTPS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Where the certificate comes from.
    pub source: CertSource,
    /// The plain-HTTP listener (HTTP-01 and redirects), if any.
    pub http_addr: Option<String>,
}

impl TlsSettings {
    /// Validates `[http.tls]`: `None` means plain HTTP. Errors name the setting to fix.
    pub fn from_config(tls: &TlsConfig) -> Result<Option<TlsSettings>, TlsError> {
        let files = match (&tls.certificate, &tls.key) {
            (Some(certificate), Some(key)) => Some(CertFiles { certificate: certificate.clone(), key: key.clone() }),
            (None, None) => None,
            (Some(_), None) => return Err(TlsError::Config(
                "a TLS certificate is set but no key: set http.tls.key (REGISTRY_HTTP_TLS_KEY, --tls-key) too".into(),
            )),
            (None, Some(_)) => return Err(TlsError::Config(
                "a TLS key is set but no certificate: set http.tls.certificate (REGISTRY_HTTP_TLS_CERTIFICATE, \
                 --tls-cert) too"
                    .into(),
            )),
        };
        let http_addr = |default: Option<&str>| match tls.httpaddr.as_deref() {
            Some("") => None,
            Some(addr) => Some(addr.to_string()),
            None => default.map(str::to_string),
        };
        match (files, &tls.letsencrypt) {
            (Some(_), Some(_)) => Err(TlsError::Config(
                "both certificate files and ACME (letsencrypt) are configured: choose one (remove http.tls.certificate \
                 and key, or the http.tls.letsencrypt section)"
                    .into(),
            )),
            (Some(files), None) => Ok(Some(TlsSettings { source: CertSource::Files(files), http_addr: http_addr(None) })),
            (None, None) => Ok(None),
            (None, Some(le)) => {
                let http_addr = http_addr(Some(DEFAULT_HTTP_ADDR));
                let hosts = le.hosts.iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect::<Vec<_>>();
                if hosts.is_empty() {
                    return Err(TlsError::Config(
                        "ACME needs the names to certify: set http.tls.letsencrypt.hosts, \
                         REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS or --acme-host"
                            .into(),
                    ));
                }
                if let Some(bad) = hosts.iter().find(|h| !valid_host(h)) {
                    return Err(TlsError::Config(format!(
                        "ACME host {bad:?} is not a DNS name or IP address (no scheme, port, path or wildcard; \
                         HTTP-01 and TLS-ALPN-01 cannot validate wildcards)"
                    )));
                }
                let mut challenges = Vec::new();
                for kind in &le.challenges {
                    if !challenges.contains(kind) {
                        challenges.push(*kind);
                    }
                }
                if http_addr.is_none() {
                    challenges.retain(|k| *k != ChallengeKind::Http01);
                }
                if challenges.is_empty() {
                    return Err(TlsError::Config(
                        "no ACME challenge type is left: http-01 needs the port-80 listener (http.tls.httpaddr, \
                         --http-addr); add tls-alpn-01 to http.tls.letsencrypt.challenges or turn that listener on"
                            .into(),
                    ));
                }
                let email = le.email.as_deref().map(|e| e.trim().trim_start_matches("mailto:").to_string());
                let email = email.filter(|e| !e.is_empty());
                if let Some(email) = email.as_ref().filter(|e| !e.contains('@')) {
                    return Err(TlsError::Config(format!(
                        "ACME contact {email:?} is not an e-mail address (http.tls.letsencrypt.email, --acme-email)"
                    )));
                }
                let directory_url = le.directory().to_string();
                if !directory_url.starts_with("https://") {
                    return Err(TlsError::Config(format!(
                        "ACME directory URL {directory_url:?} must start with https:// \
                         (http.tls.letsencrypt.directoryurl, --acme-directory)"
                    )));
                }
                let settings = AcmeSettings {
                    directory_url,
                    hosts,
                    email,
                    ca_roots: le.caroots.clone(),
                    cache_dir: le.cachefile.clone(),
                    challenges,
                };
                Ok(Some(TlsSettings { source: CertSource::Acme(settings), http_addr }))
            }
        }
    }
}

/// A DNS name or an IP address, as ACME identifiers take them.
fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether HTTPS responses carry HSTS: as `http.hsts` says, else only for an ACME deployment on
/// port 443. A browser applies HSTS to the host name on every port, so a registry on another
/// port (or with an operator's own certificate) must not pin the name for whatever else is
/// served under it unless the operator asks.
pub fn hsts_on(configured: Option<bool>, source: &CertSource, port: u16) -> bool {
    configured.unwrap_or(matches!(source, CertSource::Acme(_)) && port == 443)
}

/// Serves `app` over HTTPS on `listener` (and the port-80 listener, if configured) until
/// `shutdown` completes, then lets in-flight requests finish. `hsts` is `http.hsts`; `store` is
/// the registry's storage when it is an object store (S3), where ACME then keeps its cache so a
/// new server on the same bucket reuses the certificate.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: TlsSettings,
    store: Option<Arc<dyn Storage>>,
    hsts: Option<bool>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TlsError> {
    // instant-acme's default HTTPS client builds its rustls configuration with the process-wide
    // provider; make it ours (an error only means one is installed already).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let local = listener.local_addr().map_err(|source| TlsError::Bind {
        addr: "the HTTPS listener".into(),
        purpose: "HTTPS",
        source,
    })?;
    let hsts = hsts_on(hsts, &settings.source, local.port());
    let cancel = CancellationToken::new();
    let resolver = Arc::new(CertResolver::default());
    let mut config = rustls::ServerConfig::builder_with_provider(cert::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if matches!(settings.source, CertSource::Acme(_)) {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }

    // The port-80 listener first, so HTTP-01 can be answered as soon as ACME starts.
    let tokens = Arc::new(Http01Tokens::default());
    let mut redirect_task = None;
    if let Some(addr) = &settings.http_addr {
        let plain = TcpListener::bind(addr).await.map_err(|source| TlsError::Bind {
            addr: addr.clone(),
            purpose: "HTTP-01 challenges and redirects to HTTPS; set http.tls.httpaddr or --http-addr, \
                      or \"\" to turn it off",
            source,
        })?;
        let plain_addr = plain.local_addr().map_or_else(|_| addr.clone(), |a| a.to_string());
        tracing::info!(addr = plain_addr, "plain HTTP listener: ACME HTTP-01 challenges, redirects to https");
        let router = redirect::app(tokens.clone(), local.port());
        let cancelled = cancel.clone().cancelled_owned();
        redirect_task = Some(tokio::spawn(connection::accept_loop(
            plain,
            cancelled,
            limits,
            move |tcp, remote, watcher| connection::serve(tcp, remote, router.clone(), limits, watcher),
        )));
    }

    match settings.source {
        CertSource::Files(files) => files.start(resolver.clone(), cancel.clone()).await?,
        CertSource::Acme(acme) => {
            let http01 = settings.http_addr.is_some().then(|| tokens.clone());
            let manager = AcmeManager::new(acme, store, resolver.clone(), http01).await?;
            tokio::spawn(manager.run(cancel.clone()));
        }
    }

    tracing::info!(addr = %local, "registry listening on https://{local}");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let app = if hsts { app.layer(axum::middleware::map_response(strict_transport_security)) } else { app };
    connection::accept_loop(listener, shutdown, limits, move |tcp, remote, watcher| {
        connection(tcp, remote, acceptor.clone(), app.clone(), limits, watcher)
    })
    .await;
    cancel.cancel();
    if let Some(task) = redirect_task {
        let _ = task.await;
    }
    Ok(())
}

/// Adds `Strict-Transport-Security` to an HTTPS response.
async fn strict_transport_security(mut response: Response) -> Response {
    response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    response
}

/// One TLS connection: the handshake (which is all a TLS-ALPN-01 validation needs), then HTTP/1.1
/// or HTTP/2. A client that speaks plain HTTP is answered with a 400 instead ([`plain`]).
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    limits: ConnLimits,
    watcher: Watcher,
) {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if plain::looks_like_http(first[0]) => {
            tracing::debug!(%remote, "plain HTTP on the HTTPS port: answered 400");
            plain::refuse(tcp).await;
            return;
        }
        Ok(Ok(1)) => {}
        _ => {
            tracing::debug!(%remote, "closed, failed or silent before the TLS handshake");
            return;
        }
    }
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
        tracing::info!(%remote, "answered an ACME TLS-ALPN-01 validation");
        let mut tls = tls;
        let _ = tls.shutdown().await;
        return;
    }
    connection::serve(tls, remote, app, limits, watcher).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LetsEncryptConfig;

    fn acme(hosts: &[&str]) -> TlsConfig {
        TlsConfig {
            letsencrypt: Some(LetsEncryptConfig {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                ..LetsEncryptConfig::default()
            }),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn settings() {
        assert_eq!(TlsSettings::from_config(&TlsConfig::default()).expect("plain"), None);
        let err = TlsSettings::from_config(&acme(&[])).expect_err("no hosts");
        assert!(err.to_string().contains("--acme-host"), "{err}");
        assert!(TlsSettings::from_config(&acme(&["https://r.example"])).is_err());
        assert!(TlsSettings::from_config(&acme(&["*.r.example"])).is_err());

        let s = TlsSettings::from_config(&acme(&["R.example."])).expect("acme").expect("tls");
        assert_eq!(s.http_addr.as_deref(), Some(DEFAULT_HTTP_ADDR));
        let CertSource::Acme(a) = &s.source else { panic!("acme") };
        assert_eq!(a.hosts, ["r.example"]);
        assert_eq!(a.challenges, [ChallengeKind::TlsAlpn01, ChallengeKind::Http01]);

        // No port-80 listener: only TLS-ALPN-01 is left; asking for HTTP-01 alone is an error.
        let mut c = acme(&["r.example"]);
        c.httpaddr = Some(String::new());
        let s = TlsSettings::from_config(&c).expect("acme").expect("tls");
        let CertSource::Acme(a) = &s.source else { panic!("acme") };
        assert_eq!(a.challenges, [ChallengeKind::TlsAlpn01]);
        c.letsencrypt.as_mut().expect("le").challenges = vec![ChallengeKind::Http01];
        assert!(TlsSettings::from_config(&c).is_err());

        let mut c = TlsConfig { certificate: Some("c.pem".into()), ..TlsConfig::default() };
        assert!(TlsSettings::from_config(&c).expect_err("no key").to_string().contains("--tls-key"));
        c.key = Some("k.pem".into());
        let s = TlsSettings::from_config(&c).expect("files").expect("tls");
        assert_eq!(s.http_addr, None);
        c.letsencrypt = acme(&["r.example"]).letsencrypt;
        assert!(TlsSettings::from_config(&c).is_err());
    }

    #[test]
    fn hsts_only_for_acme_on_443_unless_configured() {
        let files = CertSource::Files(CertFiles { certificate: "c.pem".into(), key: "k.pem".into() });
        let acme = TlsSettings::from_config(&acme(&["r.example"])).expect("acme").expect("tls").source;
        assert!(hsts_on(None, &acme, 443));
        assert!(!hsts_on(None, &acme, 8443));
        assert!(!hsts_on(None, &files, 443));
        assert!(hsts_on(Some(true), &files, 5000));
        assert!(!hsts_on(Some(false), &acme, 443));
    }
}
