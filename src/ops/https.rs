//! One `GET` to a registry from the outside, the check behind `deploy`'s wait and `status`'s
//! probe: HTTPS verified against the system's roots (plus an optional PEM file), or plain HTTP
//! when the URL says so; HTTP/1.1 by hyper; the answer's status, its `WWW-Authenticate`
//! challenge and the served certificate's expiry.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long one check may take, connection and TLS handshake included.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Where a check goes: an `http://` or `https://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// HTTPS (else plain HTTP).
    pub tls: bool,
    /// The host, without the brackets of an IPv6 address: the TLS name and `Host` header.
    pub host: String,
    /// The port (443 or 80 when the URL has none).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `url`, which must be `http://` or `https://` with a host.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().map_err(|e| anyhow!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("URL {url:?} must start with https:// or http://"),
        };
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        if host.is_empty() {
            bail!("URL {url:?} has no host");
        }
        Ok(Target {
            tls,
            host: host.to_string(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `WWW-Authenticate` header, when there is one.
    pub challenge: Option<String>,
    /// When the served certificate expires (Unix seconds); `None` over plain HTTP.
    pub certificate_expires: Option<i64>,
}

/// The system's roots plus the certificates in `extra`.
pub fn trust_roots(extra: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the system ships but rustls cannot parse is simply not trusted.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| anyhow!("{} is not a PEM certificate file: {e}", path.display()))?;
            roots.add(cert).map_err(|e| anyhow!("cannot trust a certificate of {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display());
        }
    }
    Ok(roots)
}

/// `GET`s `target`, connecting to `addr` when given (else to the target's host and port), with
/// TLS verified against `roots` when the target is HTTPS; 15 s at most.
pub async fn get(
    target: &Target,
    addr: Option<SocketAddr>,
    roots: Arc<rustls::RootCertStore>,
) -> anyhow::Result<Answer> {
    get_as(target, addr, roots, None).await
}

/// [`get`] with `authorization` as the request's `Authorization` header (credentials: never
/// logged, never in an error).
pub async fn get_as(
    target: &Target,
    addr: Option<SocketAddr>,
    roots: Arc<rustls::RootCertStore>,
    authorization: Option<&str>,
) -> anyhow::Result<Answer> {
    tokio::time::timeout(TIMEOUT, get_inner(target, addr, roots, authorization))
        .await
        .map_err(|_| anyhow!("no answer within {} s", TIMEOUT.as_secs()))?
}

async fn get_inner(
    target: &Target,
    addr: Option<SocketAddr>,
    roots: Arc<rustls::RootCertStore>,
    authorization: Option<&str>,
) -> anyhow::Result<Answer> {
    let Target { tls, host, port, .. } = target;
    let tcp = match addr {
        Some(addr) => tokio::net::TcpStream::connect(addr).await,
        None => tokio::net::TcpStream::connect((host.as_str(), *port)).await,
    }
    .with_context(|| {
        format!("cannot connect to {}", addr.map_or(format!("{host}:{port}"), |a| a.to_string()))
    })?;
    if !tls {
        return exchange(tcp, target, None, authorization).await;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| anyhow!("{host} is not a valid TLS server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake failed")?;
    let expires = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp());
    exchange(stream, target, expires, authorization).await
}

/// Sends the request over `stream` and reads the answer's head (the body is not read).
async fn exchange<S>(
    stream: S,
    target: &Target,
    certificate_expires: Option<i64>,
    authorization: Option<&str>,
) -> anyhow::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(stream))
        .await
        .context("HTTP handshake failed")?;
    // Drives the connection until the answer's head is in; dropped with the answer.
    let driver = tokio::spawn(connection);
    let mut request =
        hyper::Request::get(&target.path).header(hyper::header::HOST, host_header(&target.host));
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request.body(String::new()).context("cannot build the request")?;
    let answer = sender.send_request(request).await.context("no HTTP answer");
    driver.abort();
    let answer = answer?;
    let challenge = answer
        .headers()
        .get(hyper::header::WWW_AUTHENTICATE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok(Answer { status: answer.status().as_u16(), challenge, certificate_expires })
}

/// `host` as a `Host` header: an IPv6 address in brackets.
fn host_header(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        let target = |tls, host: &str, port, path: &str| Target {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        };
        assert_eq!(
            Target::parse("https://r.example.com/v2/").expect("url"),
            target(true, "r.example.com", 443, "/v2/")
        );
        assert_eq!(
            Target::parse("http://127.0.0.1:5000/v2/").expect("url"),
            target(false, "127.0.0.1", 5000, "/v2/")
        );
        assert_eq!(Target::parse("https://[::1]:8443").expect("url"), target(true, "::1", 8443, "/"));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("https:///v2/").is_err());
    }
}
