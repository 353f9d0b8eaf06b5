//! Certificates: PEM parsing (rustls-pki-types), the key pair rustls serves, and the facts the
//! server needs from a certificate (validity, names) to decide when to renew.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why PEM text did not give a usable certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// No `CERTIFICATE` block.
    #[error("no certificate (-----BEGIN CERTIFICATE-----) found")]
    NoCertificate,
    /// No private key block.
    #[error("no private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY) found")]
    NoKey,
    /// The PEM text is malformed.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// rustls refused the key, or the key is not the certificate's.
    #[error("{0}")]
    Key(String),
    /// The leaf certificate is not valid X.509.
    #[error("the certificate cannot be parsed: {0}")]
    X509(String),
}

/// The crypto provider every TLS configuration of the server uses (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses every certificate in `pem`, in order (leaf first for a chain).
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(certs)
}

/// Parses the first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey,
        other => CertError::Pem(other.to_string()),
    })
}

/// Builds what rustls serves from a chain and its key, checking that the key is the leaf's.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, CertError> {
    CertifiedKey::from_der(chain, key, &provider()).map(Arc::new).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertError::Key(
            "the private key does not belong to the certificate (the first one in the chain)".into(),
        ),
        other => CertError::Key(format!("the private key cannot be used: {other}")),
    })
}

/// What the server needs to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// DNS names (lowercase) and IP addresses of the subject alternative names.
    pub names: Vec<String>,
    /// The serial number, hex with colons, for logs.
    pub serial: String,
}

impl CertInfo {
    /// Reads validity, names and serial from a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, CertError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| CertError::X509(e.to_string()))?;
        let validity = cert.validity();
        let time = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        names.push(dns.to_ascii_lowercase())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            not_before: time(validity.not_before.timestamp()),
            not_after: time(validity.not_after.timestamp()),
            names,
            serial: cert.raw_serial_as_string(),
        })
    }

    /// Whether the certificate names `host` (a DNS name, compared case-insensitively, or an IP
    /// address). Wildcards are not matched: ACME certificates here name each host.
    pub fn covers(&self, host: &str) -> bool {
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        };
        self.names.contains(&host)
    }

    /// The lifetime, `not_after - not_before`.
    pub fn lifetime(&self) -> Duration {
        self.not_after.duration_since(self.not_before).unwrap_or_default()
    }

    /// When to renew: at two thirds of the lifetime or 30 days before expiry, whichever comes
    /// first, but never before one third of the lifetime has passed, so that a short-lived
    /// certificate (a few days, or minutes from a test CA) is not renewed in a loop.
    pub fn renew_at(&self) -> SystemTime {
        let life = self.lifetime();
        let two_thirds = self.not_before + life * 2 / 3;
        let month_before = self.not_after.checked_sub(RENEW_BEFORE_EXPIRY).unwrap_or(UNIX_EPOCH);
        let earliest = self.not_before + life / 3;
        two_thirds.min(month_before).max(earliest)
    }
}

/// Renew at the latest this long before a certificate expires.
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Formats a time as RFC 3339 UTC (seconds) for logs and messages.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(life: Duration) -> CertInfo {
        let not_before = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        CertInfo {
            not_before,
            not_after: not_before + life,
            names: vec!["a.example".into()],
            serial: String::new(),
        }
    }

    #[test]
    fn renewal_time() {
        let day = Duration::from_secs(86_400);
        // 90 days (Let's Encrypt): both rules say day 60.
        let c = info(90 * day);
        assert_eq!(c.renew_at(), c.not_before + 60 * day);
        // A year: two thirds comes first.
        let c = info(365 * day);
        assert_eq!(c.renew_at(), c.not_before + 365 * day * 2 / 3);
        // 45 days: 30 days before expiry comes first.
        let c = info(45 * day);
        assert_eq!(c.renew_at(), c.not_before + 15 * day);
        // 6 days, or 30 seconds: not before a third of the lifetime.
        let c = info(6 * day);
        assert_eq!(c.renew_at(), c.not_before + 2 * day);
        let c = info(Duration::from_secs(30));
        assert_eq!(c.renew_at(), c.not_before + Duration::from_secs(10));
    }

    #[test]
    fn generated_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["Registry.Example".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let chain = parse_certificates(cert.pem().as_bytes()).expect("chain");
        let info = CertInfo::parse(&chain[0]).expect("info");
        assert!(info.covers("registry.example") && info.covers("127.0.0.1") && !info.covers("other.example"));
        assert!(
            certified_key(chain.clone(), parse_key(key.serialize_pem().as_bytes()).expect("key")).is_ok()
        );
        let other = rcgen::KeyPair::generate().expect("key");
        let err = certified_key(chain, parse_key(other.serialize_pem().as_bytes()).expect("key"));
        assert!(matches!(err, Err(CertError::Key(_))));
        assert!(matches!(parse_certificates(b"nothing"), Err(CertError::NoCertificate)));
        assert!(matches!(parse_key(cert.pem().as_bytes()), Err(CertError::NoKey)));
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
    }
}
