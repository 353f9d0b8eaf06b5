//! Certificate-file mode: a PEM chain and key, read at start and read again whenever either
//! file's content changes. A half-written rotation (new certificate, old key) is reported once
//! and the previous pair keeps being served until the two files match again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::TlsError;
use super::cert::{self, CertInfo};
use super::resolver::CertResolver;

/// How often the files are compared with what is served.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate chain file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The bytes of both files, to notice a change.
type Contents = (Vec<u8>, Vec<u8>);

impl CertFiles {
    async fn read(&self) -> Result<Contents, TlsError> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path).await.map_err(|source| TlsError::Read { path, source })
        };
        Ok((read(self.certificate.clone()).await?, read(self.key.clone()).await?))
    }

    fn parse(&self, (cert_pem, key_pem): &Contents) -> Result<(Arc<CertifiedKey>, CertInfo), TlsError> {
        let chain = cert::parse_certificates(cert_pem)
            .map_err(|source| TlsError::Cert { path: self.certificate.clone(), source })?;
        let info = CertInfo::parse(&chain[0])
            .map_err(|source| TlsError::Cert { path: self.certificate.clone(), source })?;
        let key =
            cert::parse_key(key_pem).map_err(|source| TlsError::Cert { path: self.key.clone(), source })?;
        let key = cert::certified_key(chain, key)
            .map_err(|source| TlsError::Cert { path: self.key.clone(), source })?;
        Ok((key, info))
    }

    /// Reads and checks both files and serves them through `resolver`; then, in the
    /// background until `cancel`, serves them again each time their content changes.
    pub async fn start(self, resolver: Arc<CertResolver>, cancel: CancellationToken) -> Result<(), TlsError> {
        let contents = self.read().await?;
        let (key, info) = self.parse(&contents)?;
        resolver.set(key);
        log_loaded(&info, "certificate loaded");
        tokio::spawn(self.watch(contents, resolver, cancel));
        Ok(())
    }

    async fn watch(self, mut served: Contents, resolver: Arc<CertResolver>, cancel: CancellationToken) {
        let mut rejected: Option<Contents> = None;
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => return,
            }
            // A file missing for a moment is normal during a rotation (rename over it).
            let Ok(contents) = self.read().await else { continue };
            if contents == served || rejected.as_ref() == Some(&contents) {
                continue;
            }
            match self.parse(&contents) {
                Ok((key, info)) => {
                    resolver.set(key);
                    log_loaded(&info, "certificate files changed: new certificate served");
                    served = contents;
                    rejected = None;
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "certificate files changed but cannot be used yet; still serving the previous certificate"
                    );
                    rejected = Some(contents);
                }
            }
        }
    }
}

fn log_loaded(info: &CertInfo, message: &str) {
    tracing::info!(
        names = ?info.names,
        serial = info.serial,
        not_after = cert::rfc3339(info.not_after),
        "{message}"
    );
    if info.not_after < std::time::SystemTime::now() {
        tracing::warn!(
            not_after = cert::rfc3339(info.not_after),
            "the certificate has expired: replace the files"
        );
    }
}
