//! Probes of a deployed registry from the outside: what its DNS name resolves to, and whether it
//! answers HTTPS on `/v2/` with a certificate the system trusts (and until when).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::https::{self, Target};

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

/// `GET`s `target` at `addr` over TLS verified against `roots`: the status and the
/// certificate's expiry, or what went wrong (15 s at most).
pub async fn https(target: &Target, addr: SocketAddr, roots: rustls::RootCertStore) -> HttpsAnswer {
    match https::get(target, Some(addr), Arc::new(roots)).await {
        Ok(answer) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
            HttpsAnswer {
                status: Some(answer.status),
                certificate_expires: answer.certificate_expires,
                certificate_days_left: answer.certificate_expires.map(|e| (e - now) / 86_400),
                error: None,
            }
        }
        Err(e) => HttpsAnswer {
            status: None,
            certificate_expires: None,
            certificate_days_left: None,
            error: Some(format!("{e:#}")),
        },
    }
}
