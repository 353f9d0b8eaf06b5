//! The `[http.tls]` section: certificate files or ACME (Let's Encrypt), named after
//! distribution's keys where it has them (`certificate`, `key`, `letsencrypt.cachefile`,
//! `letsencrypt.email`, `letsencrypt.hosts`, `letsencrypt.directoryurl`).
//!
//! ```toml
//! [http]
//! addr = "0.0.0.0:443"
//!
//! [http.tls]
//! # Either a certificate (full chain) and key, reloaded when the files change:
//! certificate = "/etc/regctl/fullchain.pem"
//! key = "/etc/regctl/key.pem"
//! # The plain-HTTP listener: ACME HTTP-01 challenges, and a redirect to HTTPS for the rest.
//! # Default with ACME: "0.0.0.0:80"; default with certificate files: none; "" turns it off.
//! httpaddr = "0.0.0.0:80"
//!
//! # Or ACME:
//! [http.tls.letsencrypt]
//! cachefile = "/var/lib/regctl/acme"   # a directory: account key and certificates (S3: the bucket)
//! email = "ops@example.com"            # optional contact
//! hosts = ["registry.example.com"]     # required
//! staging = false                      # true: Let's Encrypt's staging directory
//! directoryurl = "https://acme-v02.api.letsencrypt.org/directory"   # any ACME directory
//! caroots = ["/etc/regctl/acme-ca.pem"]  # extra roots trusted for the directory's own TLS
//! challenges = ["tls-alpn-01", "http-01"]  # tried in this order
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Let's Encrypt's production directory, the default.
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`staging = true`, `--acme-staging`): untrusted
/// certificates, generous rate limits.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// HTTPS settings. With neither certificate files nor a `letsencrypt` section the server speaks
/// plain HTTP.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub certificate: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key: Option<PathBuf>,
    /// `host:port` of the plain-HTTP listener that answers ACME HTTP-01 challenges and
    /// redirects everything else to HTTPS. Unset: `0.0.0.0:80` with ACME, none with certificate
    /// files. An empty string turns it off.
    pub httpaddr: Option<String>,
    /// ACME certificates.
    pub letsencrypt: Option<LetsEncryptConfig>,
}

/// ACME (Let's Encrypt or any RFC 8555 directory) settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LetsEncryptConfig {
    /// Directory for the account key and the certificates; keep it across restarts and
    /// redeploys (Let's Encrypt allows 5 duplicate certificates a week). Unused with S3
    /// storage: the bucket holds them. distribution calls it
    /// `cachefile`; `cachedir` is accepted too.
    #[serde(alias = "cachedir")]
    pub cachefile: PathBuf,
    /// Contact address given to the CA (expiry notices), optional.
    pub email: Option<String>,
    /// The names (or IP addresses) the certificate is for; at least one.
    pub hosts: Vec<String>,
    /// The ACME directory URL; Let's Encrypt production when unset (or staging with
    /// `staging`).
    pub directoryurl: Option<String>,
    /// Use Let's Encrypt's staging directory (ignored when `directoryurl` is set).
    pub staging: bool,
    /// PEM files of extra root certificates trusted for the ACME directory's own HTTPS (e.g. a
    /// test CA in front of Pebble), on top of the system's roots.
    pub caroots: Vec<PathBuf>,
    /// Challenge types to try, in order: `tls-alpn-01` (answered on the HTTPS listener) and
    /// `http-01` (answered on `httpaddr`). The default tries TLS-ALPN-01 first, so a blocked
    /// port 80 does not stop issuance.
    pub challenges: Vec<ChallengeKind>,
}

impl Default for LetsEncryptConfig {
    fn default() -> Self {
        LetsEncryptConfig {
            cachefile: PathBuf::from("./acme-cache"),
            email: None,
            hosts: Vec::new(),
            directoryurl: None,
            staging: false,
            caroots: Vec::new(),
            challenges: vec![ChallengeKind::TlsAlpn01, ChallengeKind::Http01],
        }
    }
}

impl LetsEncryptConfig {
    /// The directory URL in effect: `directoryurl`, else staging or production.
    pub fn directory(&self) -> &str {
        match (&self.directoryurl, self.staging) {
            (Some(url), _) => url,
            (None, true) => LETSENCRYPT_STAGING,
            (None, false) => LETSENCRYPT_PRODUCTION,
        }
    }
}

/// An ACME challenge type the server can answer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// RFC 8737: a self-signed certificate offered for the `acme-tls/1` protocol on the HTTPS
    /// listener.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 section 8.3: a token under `/.well-known/acme-challenge/` on port 80.
    #[serde(rename = "http-01")]
    Http01,
}

impl ChallengeKind {
    /// The name used by ACME (`tls-alpn-01`, `http-01`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

impl std::fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<ChallengeKind, String> {
        match s.to_ascii_lowercase().as_str() {
            "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
            "http-01" => Ok(ChallengeKind::Http01),
            other => Err(format!("unknown ACME challenge {other:?} (use tls-alpn-01 or http-01)")),
        }
    }
}

impl TlsConfig {
    /// The `letsencrypt` section, created with its defaults when absent (for variables and
    /// flags that set one of its keys).
    pub fn letsencrypt_mut(&mut self) -> &mut LetsEncryptConfig {
        self.letsencrypt.get_or_insert_with(LetsEncryptConfig::default)
    }

    /// Applies one `REGISTRY_HTTP_TLS_*` variable; returns whether `name` is one of them.
    pub(super) fn apply_env(&mut self, name: &str, value: &str) -> Result<bool, ConfigError> {
        match name {
            "REGISTRY_HTTP_TLS_CERTIFICATE" => self.certificate = Some(PathBuf::from(value)),
            "REGISTRY_HTTP_TLS_KEY" => self.key = Some(PathBuf::from(value)),
            "REGISTRY_HTTP_TLS_HTTPADDR" => self.httpaddr = Some(value.to_string()),
            // distribution names a directory cache `cachefile`; it is our cache directory.
            "REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE" | "REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEDIR" => {
                self.letsencrypt_mut().cachefile = PathBuf::from(value);
            }
            "REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL" => {
                self.letsencrypt_mut().email = Some(value.to_string()).filter(|v| !v.trim().is_empty());
            }
            "REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS" => self.letsencrypt_mut().hosts = parse_list(value),
            "REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL" => {
                self.letsencrypt_mut().directoryurl = Some(value.to_string());
            }
            "REGISTRY_HTTP_TLS_LETSENCRYPT_STAGING" => {
                self.letsencrypt_mut().staging = parse_bool(value).ok_or_else(|| ConfigError::Env {
                    name: name.into(),
                    message: "use true or false".into(),
                })?;
            }
            "REGISTRY_HTTP_TLS_LETSENCRYPT_CAROOTS" => {
                self.letsencrypt_mut().caroots = parse_list(value).into_iter().map(PathBuf::from).collect();
            }
            "REGISTRY_HTTP_TLS_LETSENCRYPT_CHALLENGES" => {
                self.letsencrypt_mut().challenges = parse_list(value)
                    .iter()
                    .map(|c| c.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|message| ConfigError::Env { name: name.into(), message })?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A list from an environment variable: comma-separated (`a,b`), or distribution's YAML flow
/// form (`[a, "b"]`).
fn parse_list(value: &str) -> Vec<String> {
    let inner = value.trim();
    let inner = inner.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(inner);
    inner
        .split(',')
        .map(|item| item.trim().trim_matches(|c| c == '"' || c == '\'').trim())
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn toml_section() {
        let config: Config = toml::from_str(
            "[http.tls]\nhttpaddr = \"\"\n[http.tls.letsencrypt]\ncachedir = \"/acme\"\nhosts = [\"r.example\"]\n\
             staging = true\nchallenges = [\"http-01\"]\n",
        )
        .expect("toml");
        let le = config.http.tls.letsencrypt.expect("letsencrypt");
        assert_eq!(le.cachefile, PathBuf::from("/acme"));
        assert_eq!(le.hosts, ["r.example"]);
        assert_eq!(le.directory(), LETSENCRYPT_STAGING);
        assert_eq!(le.challenges, [ChallengeKind::Http01]);
        assert_eq!(config.http.tls.httpaddr.as_deref(), Some(""));
        assert!(toml::from_str::<Config>("[http.tls.letsencrypt]\nchallenges = [\"dns-01\"]\n").is_err());
    }

    #[test]
    fn distribution_variables() {
        let mut config = Config::default();
        let vars = [
            ("REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE", "/var/lib/acme"),
            ("REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL", "ops@example.com"),
            ("REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS", "[registry.example.com, \"r2.example.com\"]"),
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/fullchain.pem"),
            ("REGISTRY_HTTP_TLS_KEY", "/certs/key.pem"),
        ];
        config.apply_env(vars.map(|(k, v)| (k.to_string(), v.to_string()))).expect("env");
        let tls = &config.http.tls;
        assert_eq!(tls.certificate.as_deref(), Some(std::path::Path::new("/certs/fullchain.pem")));
        assert_eq!(tls.key.as_deref(), Some(std::path::Path::new("/certs/key.pem")));
        let le = tls.letsencrypt.as_ref().expect("letsencrypt");
        assert_eq!(le.cachefile, PathBuf::from("/var/lib/acme"));
        assert_eq!(le.email.as_deref(), Some("ops@example.com"));
        assert_eq!(le.hosts, ["registry.example.com", "r2.example.com"]);
        assert_eq!(le.directory(), LETSENCRYPT_PRODUCTION);
        assert_eq!(parse_list("a.example,b.example"), ["a.example", "b.example"]);
        let bad = [("REGISTRY_HTTP_TLS_LETSENCRYPT_CHALLENGES".to_string(), "dns-01".to_string())];
        assert!(config.apply_env(bad).is_err());
    }
}
