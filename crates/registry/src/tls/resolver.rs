//! The certificate rustls offers in each handshake: the current one (swapped in place when the
//! files change or ACME renews, so no listener restarts and no connection drops), or, for an
//! ACME TLS-ALPN-01 validation (`acme-tls/1`), the challenge certificate for the name asked.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of RFC 8737 (TLS-ALPN-01 validation).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Chooses the certificate for each TLS handshake.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// Serves `key` from the next handshake on; connections already open keep theirs.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(key);
    }

    /// The certificate served now, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Offers `key` to `acme-tls/1` handshakes for the server name `sni` (lowercase).
    pub fn add_challenge(&self, sni: String, key: Arc<CertifiedKey>) {
        self.challenges.write().unwrap_or_else(PoisonError::into_inner).insert(sni, key);
    }

    /// Stops offering a challenge certificate for `sni`.
    pub fn remove_challenge(&self, sni: &str) {
        self.challenges.write().unwrap_or_else(PoisonError::into_inner).remove(sni);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737: a validation offers `acme-tls/1` and nothing else; only then is the
        // challenge certificate the answer.
        let acme = hello.alpn().is_some_and(|protocols| protocols.eq([ACME_TLS_ALPN]));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            let key = self.challenges.read().unwrap_or_else(PoisonError::into_inner).get(&name).cloned();
            if key.is_none() {
                tracing::warn!(name, "TLS-ALPN-01 validation for a name with no pending challenge");
            }
            return key;
        }
        self.current()
    }
}
