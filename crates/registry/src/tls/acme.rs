//! ACME (RFC 8555) with instant-acme: an account and certificates cached on disk or in the
//! registry's object store ([`super::cache`]), HTTP-01 and TLS-ALPN-01 challenges answered by
//! this server, and renewal in the background.
//!
//! Cache layout, one directory per ACME directory URL so that staging and production (or a
//! test CA) never mix; on S3 storage the same names lie in the bucket under
//! `<rootdirectory>/regctl/acme/` instead of `<cachefile>/`:
//!
//! ```text
//! <cachefile>/<directory, e.g. acme-v02.api.letsencrypt.org-directory>/account.json
//! <cachefile>/<directory>/<first host>.pem     private key + certificate chain
//! ```
//!
//! A cached certificate that names every host and is not yet due for renewal is served as it is:
//! restarts and redeploys make no new order (Let's Encrypt allows 5 duplicate certificates a
//! week).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::RootCertStore;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::cache::AcmeCache;
use super::cert::{self, CertError, CertInfo};
use super::redirect::Http01Tokens;
use super::resolver::CertResolver;
use crate::config::ChallengeKind;
use crate::storage::{Storage, StoragePath};

/// The cached account's name.
const ACCOUNT: &str = "account.json";
/// How long one order may wait for validation or issuance before it counts as failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// First wait after a failed attempt; doubled after each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// Shortest wait after the CA said `rateLimited`.
const RATE_LIMITED_BACKOFF: Duration = Duration::from_secs(3600);
/// The longest single sleep before renewal is checked again (guards against clock jumps).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Validated ACME settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The ACME directory URL.
    pub directory_url: String,
    /// Names (lowercase) or IP addresses to certify; at least one.
    pub hosts: Vec<String>,
    /// Contact address, without `mailto:`.
    pub email: Option<String>,
    /// Extra PEM roots trusted for the directory's HTTPS.
    pub ca_roots: Vec<PathBuf>,
    /// The cache directory (account and certificates) when the registry's storage is not an
    /// object store.
    pub cache_dir: PathBuf,
    /// Challenge types to try, in order.
    pub challenges: Vec<ChallengeKind>,
}

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server refused a request or could not be reached; the message carries the
    /// problem document's detail and type.
    #[error("{step}: {source}")]
    Acme {
        /// What was being done.
        step: &'static str,
        /// instant-acme's error (with the CA's problem detail).
        #[source]
        source: instant_acme::Error,
    },
    /// The CA could not validate a challenge.
    #[error("{kind} validation failed: {detail}")]
    Validation {
        /// The challenge type.
        kind: ChallengeKind,
        /// The CA's problem detail per host.
        detail: String,
    },
    /// The CA offered no challenge of a type this server answers.
    #[error("the CA offers no {kind} challenge for {host}")]
    NotOffered {
        /// The challenge type asked for.
        kind: ChallengeKind,
        /// The host.
        host: String,
    },
    /// The cache could not be read or written.
    #[error("ACME cache {location}: {source} ({hint})")]
    Cache {
        /// The file, directory or storage object.
        location: String,
        /// What must hold for the cache to work.
        hint: &'static str,
        /// The I/O or storage error.
        #[source]
        source: std::io::Error,
    },
    /// An extra root CA file could not be used.
    #[error("ACME root CA file {path}: {message}")]
    CaRoot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A certificate (issued, or for a challenge) could not be used.
    #[error("{what}: {source}")]
    Cert {
        /// Which certificate.
        what: &'static str,
        /// Why.
        #[source]
        source: CertError,
    },
}

impl AcmeError {
    fn acme(step: &'static str) -> impl FnOnce(instant_acme::Error) -> AcmeError {
        move |source| AcmeError::Acme { step, source }
    }

    /// The ACME problem type (`urn:ietf:params:acme:error:…`), when the CA sent one.
    fn problem_type(&self) -> Option<&str> {
        match self {
            AcmeError::Acme { source: instant_acme::Error::Api(problem), .. } => problem.r#type.as_deref(),
            _ => None,
        }
    }

    /// Whether another challenge type might succeed where this one failed.
    fn try_next_challenge(&self) -> bool {
        matches!(self, AcmeError::Validation { .. } | AcmeError::NotOffered { .. })
            || self.problem_type().is_some_and(|t| t.ends_with(":connection") || t.ends_with(":unauthorized"))
    }
}

/// A certificate in use: what rustls serves, and its dates.
struct Issued {
    key: Arc<CertifiedKey>,
    info: CertInfo,
}

/// Type of the HTTP client used when extra roots are trusted.
type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// Obtains, caches, serves and renews the certificate.
pub struct AcmeManager {
    settings: AcmeSettings,
    resolver: Arc<CertResolver>,
    http01: Option<Arc<Http01Tokens>>,
    cache: AcmeCache,
    http: Option<HttpsClient>,
    account: Option<Account>,
    current: Option<CertInfo>,
}

impl AcmeManager {
    /// Prepares the manager and serves a usable cached certificate at once. `http01` is the
    /// port-80 listener's token table, `None` when that listener is off; `store` is the
    /// registry's storage when it is an object store (S3), which then holds the cache.
    pub async fn new(
        settings: AcmeSettings,
        store: Option<Arc<dyn Storage>>,
        resolver: Arc<CertResolver>,
        http01: Option<Arc<Http01Tokens>>,
    ) -> Result<AcmeManager, AcmeError> {
        let cache = AcmeCache::new(&settings.cache_dir, store, &directory_key(&settings.directory_url));
        cache.prepare().await?;
        let http = if settings.ca_roots.is_empty() { None } else { Some(https_client(&settings.ca_roots)?) };
        let mut manager =
            AcmeManager { settings, resolver, http01, cache, http, account: None, current: None };
        manager.load_cached().await;
        Ok(manager)
    }

    fn cert_name(&self) -> String {
        let first = self.settings.hosts.first().map_or("certificate", String::as_str);
        format!("{}.pem", first.replace(':', "_"))
    }

    /// Serves the cached certificate if it names every host and has not expired.
    async fn load_cached(&mut self) {
        let name = self.cert_name();
        let path = self.cache.location(&name);
        let pem = match self.cache.read(&name).await {
            Ok(Some(pem)) => pem,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cached certificate; ordering a new one");
                return;
            }
        };
        match self.parse_issued(&pem) {
            Ok(issued) if !self.settings.hosts.iter().all(|h| issued.info.covers(h)) => tracing::info!(
                cached = ?issued.info.names,
                hosts = ?self.settings.hosts,
                "the cached certificate does not name every host; ordering a new one"
            ),
            Ok(issued) if issued.info.not_after <= SystemTime::now() => {
                tracing::info!(
                    not_after = cert::rfc3339(issued.info.not_after),
                    "the cached certificate has expired"
                );
            }
            Ok(issued) => {
                tracing::info!(
                    path,
                    serial = issued.info.serial,
                    not_after = cert::rfc3339(issued.info.not_after),
                    renew_at = cert::rfc3339(issued.info.renew_at()),
                    "serving the cached ACME certificate"
                );
                self.install(issued);
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "the cached certificate is unusable; ordering a new one")
            }
        }
    }

    fn parse_issued(&self, pem: &[u8]) -> Result<Issued, AcmeError> {
        let what = "the certificate issued by the CA";
        let chain = cert::parse_certificates(pem).map_err(|source| AcmeError::Cert { what, source })?;
        let info = CertInfo::parse(&chain[0]).map_err(|source| AcmeError::Cert { what, source })?;
        let key = cert::parse_key(pem).map_err(|source| AcmeError::Cert { what, source })?;
        let key = cert::certified_key(chain, key).map_err(|source| AcmeError::Cert { what, source })?;
        Ok(Issued { key, info })
    }

    fn install(&mut self, issued: Issued) {
        self.resolver.set(issued.key);
        self.current = Some(issued.info);
    }

    /// Keeps a valid certificate served until `cancel`: orders one when there is none, renews
    /// it when due, and retries failures with exponential backoff.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            if let Some(due) = self.current.as_ref().map(CertInfo::renew_at) {
                if let Ok(wait) = due.duration_since(SystemTime::now()) {
                    tokio::select! {
                        () = tokio::time::sleep(wait.min(MAX_SLEEP)) => continue,
                        () = cancel.cancelled() => return,
                    }
                }
                tracing::info!(hosts = ?self.settings.hosts, "renewing the ACME certificate");
            } else {
                tracing::info!(
                    hosts = ?self.settings.hosts,
                    directory = self.settings.directory_url,
                    "ordering a certificate; HTTPS handshakes fail until it is issued"
                );
            }
            let result = tokio::select! {
                result = self.obtain() => result,
                () = cancel.cancelled() => return,
            };
            match result {
                Ok(issued) => {
                    failures = 0;
                    tracing::info!(
                        names = ?issued.info.names,
                        serial = issued.info.serial,
                        not_after = cert::rfc3339(issued.info.not_after),
                        renew_at = cert::rfc3339(issued.info.renew_at()),
                        "ACME certificate issued and served"
                    );
                    self.install(issued);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures, &e);
                    tracing::error!(
                        error = %e,
                        attempt = failures,
                        retry_in_secs = delay.as_secs(),
                        serving = if self.current.is_some() { "the previous certificate" } else { "nothing yet" },
                        "could not obtain an ACME certificate; check that the hosts resolve to this server and \
                         that port 443 (TLS-ALPN-01) or port 80 (HTTP-01) reaches it"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One attempt: the account, then an order per challenge type until one succeeds; the
    /// result is written to the cache before it is returned.
    async fn obtain(&mut self) -> Result<Issued, AcmeError> {
        let account = self.account().await?;
        let issued = match self.order_any(&account).await {
            Err(e) if e.problem_type().is_some_and(|t| t.ends_with(":accountDoesNotExist")) => {
                tracing::warn!("the CA does not know the cached ACME account; creating a new one");
                self.cache.remove(ACCOUNT).await?;
                self.account = None;
                let account = self.account().await?;
                self.order_any(&account).await?
            }
            other => other?,
        };
        Ok(issued)
    }

    async fn order_any(&self, account: &Account) -> Result<Issued, AcmeError> {
        let mut kinds = self.settings.challenges.iter().copied().peekable();
        while let Some(kind) = kinds.next() {
            match self.order(account, kind).await {
                Ok(issued) => return Ok(issued),
                Err(e) if e.try_next_challenge() && kinds.peek().is_some() => {
                    tracing::warn!(error = %e, "{kind} did not work; trying the next challenge type");
                }
                Err(e) => return Err(e),
            }
        }
        Err(AcmeError::NotOffered { kind: ChallengeKind::TlsAlpn01, host: self.settings.hosts.join(", ") })
    }

    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let path = self.cache.location(ACCOUNT);
        let cached = match self.cache.read(ACCOUNT).await? {
            Some(json) => match serde_json::from_slice::<AccountCredentials>(&json) {
                Ok(credentials) => Some(credentials),
                Err(e) => {
                    tracing::warn!(path, error = %e, "unreadable cached ACME account; creating a new one");
                    None
                }
            },
            None => None,
        };
        let account = match cached {
            Some(credentials) => self
                .builder()?
                .from_credentials(credentials)
                .await
                .map_err(AcmeError::acme("loading the cached ACME account"))?,
            None => {
                let contact: Vec<String> =
                    self.settings.email.iter().map(|e| format!("mailto:{e}")).collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = self
                    .builder()?
                    .create(&new, self.settings.directory_url.clone(), None)
                    .await
                    .map_err(AcmeError::acme("creating the ACME account"))?;
                let json = serde_json::to_vec_pretty(&credentials).map_err(|e| AcmeError::Acme {
                    step: "saving the ACME account",
                    source: instant_acme::Error::Json(e),
                })?;
                self.cache.write(ACCOUNT, &json).await?;
                tracing::info!(id = account.id(), path, "ACME account created");
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        match &self.http {
            Some(client) => Ok(Account::builder_with_http(Box::new(client.clone()))),
            None => Account::builder()
                .map_err(AcmeError::acme("setting up the HTTPS client for the ACME directory")),
        }
    }

    /// One order answered with challenges of type `kind`.
    async fn order(&self, account: &Account, kind: ChallengeKind) -> Result<Issued, AcmeError> {
        if kind == ChallengeKind::Http01 && self.http01.is_none() {
            return Err(AcmeError::NotOffered {
                kind,
                host: "this server (its port-80 listener is off)".into(),
            });
        }
        let identifiers: Vec<Identifier> = self.settings.hosts.iter().map(|h| identifier(h)).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(AcmeError::acme("creating the ACME order"))?;
        tracing::info!(order = order.url(), challenge = %kind, "ACME order created");
        let mut published = Published {
            resolver: &self.resolver,
            http01: self.http01.as_deref(),
            sni: vec![],
            tokens: vec![],
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(AcmeError::acme("fetching an ACME authorization"))?;
            let id = authz.identifier().identifier.clone();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(AcmeError::Validation {
                        kind,
                        detail: format!("the authorization for {} is {status:?}", host_of(&id)),
                    });
                }
            }
            let Some(mut challenge) = authz.challenge(challenge_type(kind)) else {
                return Err(AcmeError::NotOffered { kind, host: host_of(&id) });
            };
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeKind::Http01 => {
                    published.token(challenge.token.clone(), key_authorization.as_str().to_string())
                }
                ChallengeKind::TlsAlpn01 => {
                    let key = alpn_certificate(&id, key_authorization.digest().as_ref())?;
                    published.alpn(sni_name(&id), key);
                }
            }
            challenge.set_ready().await.map_err(AcmeError::acme("telling the CA the challenge is ready"))?;
        }
        let retry = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retry).await;
        if !matches!(status, Ok(OrderStatus::Ready)) {
            let mut details = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authz)) = authorizations.next().await {
                if let Ok(state) = authz.refresh().await {
                    let host = host_of(state.identifier().identifier);
                    details.extend(
                        state
                            .challenges
                            .iter()
                            .filter_map(|c| c.error.as_ref())
                            .map(|p| format!("{host}: {p}")),
                    );
                }
            }
            return Err(match (status, details.is_empty()) {
                (_, false) => AcmeError::Validation { kind, detail: details.join("; ") },
                // No challenge error: the CA was unreachable or slow, not a failed validation.
                (Err(source), true) => AcmeError::Acme { step: "waiting for the CA to validate", source },
                (Ok(s), true) => AcmeError::Validation { kind, detail: format!("the order is {s:?}") },
            });
        }
        drop(published);
        let key_pem = order.finalize().await.map_err(AcmeError::acme("finalizing the ACME order"))?;
        let chain_pem = order
            .poll_certificate(&retry)
            .await
            .map_err(AcmeError::acme("downloading the ACME certificate"))?;
        let pem = format!("{key_pem}{chain_pem}");
        let issued = self.parse_issued(pem.as_bytes())?;
        self.cache.write(&self.cert_name(), pem.as_bytes()).await?;
        Ok(issued)
    }
}

/// Challenge responses published for one order, withdrawn when dropped (whatever the outcome).
struct Published<'a> {
    resolver: &'a CertResolver,
    http01: Option<&'a Http01Tokens>,
    sni: Vec<String>,
    tokens: Vec<String>,
}

impl Published<'_> {
    fn token(&mut self, token: String, key_authorization: String) {
        if let Some(tokens) = self.http01 {
            tokens.insert(token.clone(), key_authorization);
            self.tokens.push(token);
        }
    }

    fn alpn(&mut self, sni: String, key: Arc<CertifiedKey>) {
        self.resolver.add_challenge(sni.clone(), key);
        self.sni.push(sni);
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for sni in &self.sni {
            self.resolver.remove_challenge(sni);
        }
        if let Some(tokens) = self.http01 {
            for token in &self.tokens {
                tokens.remove(token);
            }
        }
    }
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// The ACME identifier of a host: an IP address or a DNS name.
fn identifier(host: &str) -> Identifier {
    match host.parse::<IpAddr>() {
        Ok(ip) => Identifier::Ip(ip),
        Err(_) => Identifier::Dns(host.to_string()),
    }
}

fn host_of(id: &Identifier) -> String {
    id.authorized(false).to_string()
}

/// The SNI a TLS-ALPN-01 validation sends: the name, or for an IP address its reverse-DNS name
/// (RFC 8738).
fn sni_name(id: &Identifier) -> String {
    match id {
        Identifier::Ip(IpAddr::V4(ip)) => {
            let o = ip.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        Identifier::Ip(IpAddr::V6(ip)) => {
            let nibbles: Vec<String> =
                ip.octets().iter().rev().flat_map(|b| [b & 0xf, b >> 4]).map(|n| format!("{n:x}")).collect();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
        other => host_of(other).to_ascii_lowercase(),
    }
}

/// The self-signed certificate of RFC 8737: the identifier as its only name and the SHA-256
/// of the key authorization in the critical `acmeIdentifier` extension.
fn alpn_certificate(id: &Identifier, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let what = "the TLS-ALPN-01 challenge certificate";
    let fail = |e: rcgen::Error| AcmeError::Cert { what, source: CertError::Key(e.to_string()) };
    let mut params = rcgen::CertificateParams::new(vec![host_of(id)]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // rejects the critical acmeIdentifier extension. The key was made for this certificate.
    let signing = cert::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| AcmeError::Cert { what, source: CertError::Key(e.to_string()) })?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// A client for the ACME directory that trusts the system's roots and the extra ones.
fn https_client(ca_roots: &[PathBuf]) -> Result<HttpsClient, AcmeError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for path in ca_roots {
        let pem = std::fs::read(path)
            .map_err(|e| AcmeError::CaRoot { path: path.clone(), message: format!("cannot read it: {e}") })?;
        let certs = cert::parse_certificates(&pem)
            .map_err(|e| AcmeError::CaRoot { path: path.clone(), message: e.to_string() })?;
        for c in certs {
            roots.add(c).map_err(|e| AcmeError::CaRoot { path: path.clone(), message: e.to_string() })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(cert::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::CaRoot { path: PathBuf::new(), message: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector))
}

/// The cache subdirectory of a directory URL: its host and path, with anything unusual in a file
/// name replaced (`https://acme-v02.api.letsencrypt.org/directory` →
/// `acme-v02.api.letsencrypt.org-directory`); always one path component.
fn directory_key(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let key: String = rest
        .trim_end_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
        .collect();
    if StoragePath::is_component(&key) { key } else { "directory".into() }
}

/// Waits before the next attempt: 1 minute, doubling up to 6 hours; at least an hour after the
/// CA said `rateLimited`.
fn backoff(failures: u32, error: &AcmeError) -> Duration {
    let exp = FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    let delay = exp.min(MAX_BACKOFF);
    if error.problem_type().is_some_and(|t| t.ends_with(":rateLimited")) {
        delay.max(RATE_LIMITED_BACKOFF)
    } else {
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            directory_key("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org-directory"
        );
        assert_eq!(directory_key("https://127.0.0.1:14000/dir"), "127.0.0.1-14000-dir");
        assert_eq!(directory_key("https://.."), "directory");
        assert_eq!(sni_name(&identifier("127.0.0.1")), "1.0.0.127.in-addr.arpa");
        assert!(sni_name(&identifier("::1")).starts_with("1.0.0.0.0.0."));
        assert!(sni_name(&identifier("::1")).ends_with(".ip6.arpa"));
        assert_eq!(sni_name(&identifier("Registry.Example")), "registry.example");
    }

    #[test]
    fn backoff_grows_and_respects_rate_limits() {
        let validation = AcmeError::Validation { kind: ChallengeKind::Http01, detail: String::new() };
        assert_eq!(backoff(1, &validation), Duration::from_secs(60));
        assert_eq!(backoff(3, &validation), Duration::from_secs(240));
        assert_eq!(backoff(100, &validation), MAX_BACKOFF);
        let limited = AcmeError::Acme {
            step: "x",
            source: instant_acme::Error::Api(
                serde_json::from_str(
                    r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many"}"#,
                )
                .expect("problem"),
            ),
        };
        assert_eq!(backoff(1, &limited), RATE_LIMITED_BACKOFF);
        assert!(limited.to_string().contains("too many"));
    }

    #[test]
    fn alpn_challenge_certificate() {
        let key = alpn_certificate(&identifier("registry.example"), &[7u8; 32]).expect("certificate");
        let info = CertInfo::parse(key.end_entity_cert().expect("leaf")).expect("parse");
        assert!(info.covers("registry.example"));
    }
}
