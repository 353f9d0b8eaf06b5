//! Probes of a deployed registry from the outside: what its DNS name resolves to, and whether it
//! answers HTTPS on `/v2/` with a certificate the system trusts (and until when).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the DNS name resolves to.
#[derive(Debug, Clone, Serialize)]
pub struct DnsAnswer {
    /// The addresses, or empty.
    pub addresses: Vec<String>,
    /// Why there are none, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The registry's answer over HTTPS.
#[derive(Debug, Clone, Serialize)]
pub struct HttpsAnswer {
    /// HTTP status of `GET /v2/` (401 means it is up and asks for a password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// When the served certificate expires (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<i64>,
    /// Days until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_days_left: Option<i64>,
    /// What went wrong, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Resolves `domain` with the system resolver (5 s at most).
pub async fn resolve(domain: &str) -> DnsAnswer {
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((domain, 443))).await {
        Ok(Ok(addrs)) => {
            let mut addresses: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            addresses.sort();
            addresses.dedup();
            DnsAnswer { addresses, error: None }
        }
        Ok(Err(e)) => DnsAnswer { addresses: vec![], error: Some(e.to_string()) },
        Err(_) => DnsAnswer { addresses: vec![], error: Some("no answer within 5 s".into()) },
    }
}

/// Connects to `addr` as `host` over TLS (verified against `roots`), sends `GET path` and reads
/// the status line and the certificate's expiry (15 s at most).
pub async fn https(host: &str, addr: SocketAddr, path: &str, roots: rustls::RootCertStore) -> HttpsAnswer {
    match tokio::time::timeout(Duration::from_secs(15), https_inner(host, addr, path, roots)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => HttpsAnswer {
            status: None,
            certificate_expires: None,
            certificate_days_left: None,
            error: Some(format!("{e:#}")),
        },
        Err(_) => HttpsAnswer {
            status: None,
            certificate_expires: None,
            certificate_days_left: None,
            error: Some("no answer within 15 s".into()),
        },
    }
}

async fn https_inner(
    domain: &str,
    addr: SocketAddr,
    path: &str,
    roots: rustls::RootCertStore,
) -> anyhow::Result<HttpsAnswer> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(domain.to_string())?;
    let mut tls = connector.connect(name, tcp).await?;
    let expires = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp());
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut head = vec![0u8; 64];
    let n = tls.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Ok(HttpsAnswer {
        status,
        certificate_expires: expires,
        certificate_days_left: expires.map(|e| (e - now) / 86_400),
        error: None,
    })
}
