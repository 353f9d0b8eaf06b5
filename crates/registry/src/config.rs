//! Server configuration: a TOML file, then the `REGISTRY_*` environment variables that
//! `registry:2` users already have, so the settings of a distribution tutorial carry over.
//!
//! ```toml
//! [http]
//! addr = "127.0.0.1:5000"
//! headertimeout = "30s"    # to send a request's headers (and idle time between requests)
//! bodytimeout = "60s"      # longest pause while a request body is arriving
//! hsts = true              # Strict-Transport-Security on HTTPS (default: ACME on port 443)
//! draintime = "15s"        # on SIGTERM, /health says 503 this long before accepting stops (default 0)
//! shutdowntimeout = "60s"  # then how long in-flight requests may finish (default 60s)
//! proxies = ["10.0.0.0/8"] # peers whose X-Forwarded-For/-Proto/-Host are trusted (default none)
//!
//! [http.tls.letsencrypt]   # HTTPS by ACME, or certificate + key files: see config::tls
//! hosts = ["registry.example.com"]
//!
//! [storage]
//! maxblobsize = 10737418240   # bytes; an upload that grows past it gets 413 (default: none)
//!
//! [storage.filesystem]
//! rootdirectory = "./registry-data"
//!
//! # or, instead of the filesystem:
//! [storage.s3]
//! bucket = "my-registry"
//! region = "eu-west-1"
//! rootdirectory = "/image-registry"   # optional key prefix
//! encrypt = true
//! manifestcachettl = "1s"   # staleness bound of manifest reads across servers; 0 = no cache
//!
//! [auth]
//! anonymous = "pull"   # anyone may pull without credentials (default: nobody)
//!
//! [auth.htpasswd]         # users, tokens and their access rules: see auth::access
//! realm = "regctl"
//! path = "/etc/regctl/htpasswd"
//! # instorage = true      # instead of path: users in the storage, shared by every server
//!
//! [log]
//! format = "text"   # or "json"
//! level = "info"
//!
//! # notifications, ui, metrics, health, gc: see config::ops; immutable tags: config::tags
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod cidr;
pub mod ops;
pub mod retention;
pub mod tags;
pub mod tls;
pub use cidr::Cidr;
pub use ops::{
    EndpointConfig, GcConfig, HealthConfig, MetricsConfig, NotificationsConfig, OpsEndpointConfig, UiConfig,
};
pub use retention::RetentionRule;
pub use tags::TagsConfig;
pub use tls::{ChallengeKind, LetsEncryptConfig, TlsConfig};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        message: String,
    },
    /// An environment variable has a value that cannot be used.
    #[error("invalid value for {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole server configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening.
    pub http: HttpConfig,
    /// Where content is stored.
    pub storage: StorageConfig,
    /// Who may use the registry.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// Webhooks for push, pull and delete events.
    pub notifications: NotificationsConfig,
    /// The read-only web UI.
    pub ui: UiConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// The health endpoint.
    pub health: HealthConfig,
    /// Garbage collection.
    pub gc: GcConfig,
    /// Immutable tags.
    pub tags: TagsConfig,
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub addr: String,
    /// HTTPS (certificate files or ACME); plain HTTP when unset.
    pub tls: TlsConfig,
    /// How long a client may take to send a request's headers, and how long a connection may
    /// wait for its next request; `None` (`0` in the file) waits forever. A client that sends
    /// its headers a byte at a time (slowloris) is disconnected when it runs out.
    #[serde(deserialize_with = "ops::optional_duration")]
    pub headertimeout: Option<Duration>,
    /// The longest pause allowed while a request body is arriving; `None` (`0`) waits forever.
    /// A stalled upload fails and its connection closes.
    #[serde(deserialize_with = "ops::optional_duration")]
    pub bodytimeout: Option<Duration>,
    /// Send `Strict-Transport-Security` on HTTPS responses. Unset: only for ACME certificates
    /// on port 443 (a browser pins the host name on every port, so the operator decides).
    pub hsts: Option<bool>,
    /// After the first SIGTERM or SIGINT, how long the server keeps serving every request
    /// while `/health` answers 503, so that a load balancer takes it out of rotation before it
    /// stops accepting connections; a second signal ends the wait. Behind a balancer, make it
    /// at least the balancer's health-check interval times its unhealthy threshold, plus one
    /// interval (an ALB checking every 5 s, unhealthy after 2: `15s`). `0`, the default, stops
    /// accepting at once: a single server has nobody to hand its clients to, and its restart
    /// stays as quick as before.
    #[serde(deserialize_with = "ops::duration")]
    pub draintime: Duration,
    /// Once the server stops accepting, how long in-flight requests (a long blob upload or
    /// download) may take to finish before their connections are closed; the drain and this
    /// together should stay under systemd's stop timeout (90 s by default).
    #[serde(deserialize_with = "ops::duration")]
    pub shutdowntimeout: Duration,
    /// The peers (CIDR blocks or addresses) whose `X-Forwarded-For`, `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` are believed: the load balancer's subnet. Other peers' forwarded
    /// headers are ignored (see [`crate::forwarded`]). None by default.
    pub proxies: Vec<Cidr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:5000".into(),
            tls: TlsConfig::default(),
            headertimeout: Some(Duration::from_secs(30)),
            bodytimeout: Some(Duration::from_secs(60)),
            hsts: None,
            draintime: Duration::ZERO,
            shutdowntimeout: Duration::from_secs(60),
            proxies: Vec::new(),
        }
    }
}

/// Storage settings: S3 when an `s3` section is present, else the filesystem.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Filesystem storage (the default backend).
    pub filesystem: FilesystemConfig,
    /// S3 storage.
    pub s3: Option<S3Config>,
    /// The largest blob accepted, in bytes: an upload that would grow past it is answered
    /// with 413 and keeps only its earlier chunks. No limit when absent.
    pub maxblobsize: Option<u64>,
}

/// S3 storage settings, named after distribution's `storage.s3` keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The bucket's region; from the standard chain when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// Key prefix under which `docker/registry/v2` lives (e.g. `/image-registry`).
    #[serde(default)]
    pub rootdirectory: String,
    /// Server-side encryption with S3-managed keys.
    #[serde(default)]
    pub encrypt: bool,
    /// A KMS key id for server-side encryption (implies `encrypt`).
    #[serde(default)]
    pub keyid: Option<String>,
    /// An S3-compatible endpoint (emulators, other regions' endpoints).
    #[serde(default)]
    pub regionendpoint: Option<String>,
    /// Path-style addressing (needed by most emulators).
    #[serde(default)]
    pub forcepathstyle: bool,
    /// Multipart part size in bytes (at least 5 MiB).
    #[serde(default = "default_chunksize")]
    pub chunksize: u64,
    /// Access key id; the standard credential chain is used when absent.
    #[serde(default)]
    pub accesskey: Option<String>,
    /// Secret access key.
    #[serde(default)]
    pub secretkey: Option<Secret>,
    /// Use HTTPS for an endpoint given without a scheme.
    #[serde(default = "default_true")]
    pub secure: bool,
    /// Accepted for compatibility with distribution; requests are always signed with SigV4.
    #[serde(default = "default_true")]
    pub v4auth: bool,
    /// Answer blob `GET`s with a 307 redirect to a presigned S3 URL, so the bytes flow from S3
    /// to the client directly (off by default: clients then need to reach S3).
    #[serde(default)]
    pub redirect: bool,
    /// How long a presigned redirect URL stays valid (at most 7 days).
    #[serde(default = "default_redirect_expiry", deserialize_with = "ops::duration")]
    pub redirectexpiry: std::time::Duration,
    /// How long a server trusts a tag's digest, or a manifest's presence, that it read (manifest
    /// bodies are kept by digest meanwhile): the longest another server's push or delete takes
    /// to show on this one. `0` turns the manifest cache off: every manifest read is three S3
    /// requests. See [`crate::registry::cache`].
    #[serde(default = "default_manifest_cache_ttl", deserialize_with = "ops::duration")]
    pub manifestcachettl: std::time::Duration,
}

fn default_chunksize() -> u64 {
    10 << 20
}

/// Parses a boolean the way distribution's variables spell them.
fn parse_flag(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

fn default_redirect_expiry() -> std::time::Duration {
    std::time::Duration::from_secs(20 * 60)
}

fn default_manifest_cache_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

fn default_true() -> bool {
    true
}

impl S3Config {
    /// An S3 configuration for `bucket` with every other setting at its default.
    pub fn for_bucket(bucket: String) -> S3Config {
        S3Config {
            bucket,
            region: None,
            rootdirectory: String::new(),
            encrypt: false,
            keyid: None,
            regionendpoint: None,
            forcepathstyle: false,
            chunksize: default_chunksize(),
            accesskey: None,
            secretkey: None,
            secure: true,
            v4auth: true,
            redirect: false,
            redirectexpiry: default_redirect_expiry(),
            manifestcachettl: default_manifest_cache_ttl(),
        }
    }

    /// The prefix of every key the registry stores: `rootdirectory` without its outer slashes,
    /// followed by `/` (empty without a root directory).
    pub fn key_prefix(&self) -> String {
        let root = self.rootdirectory.trim_matches('/');
        if root.is_empty() { String::new() } else { format!("{root}/") }
    }
}

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Filesystem storage settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// The directory holding `docker/registry/v2`.
    pub rootdirectory: PathBuf,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig { rootdirectory: PathBuf::from("./registry-data") }
    }
}

/// Authentication settings; no `htpasswd` section means no authentication.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// htpasswd (bcrypt) users.
    pub htpasswd: Option<HtpasswdConfig>,
    /// What a request without credentials may do (with `htpasswd`; without it everyone may
    /// do everything): nothing, or pull every repository.
    pub anonymous: Option<Anonymous>,
    /// Docker's token flow (on whenever `htpasswd` is).
    pub token: TokenConfig,
}

/// What anyone may do without credentials.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Pull every repository (manifests, blobs, tags, referrers, the catalog, the UI).
    Pull,
}

impl std::str::FromStr for Anonymous {
    type Err = String;

    fn from_str(s: &str) -> Result<Anonymous, String> {
        match s {
            "pull" => Ok(Anonymous::Pull),
            other => Err(format!("unknown anonymous access {other:?} (the one level is pull)")),
        }
    }
}

/// Docker's token flow: `/token` and `Authorization: Bearer`, beside Basic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Challenge `/v2` requests with `Bearer` (docker then keeps a refresh token, not the
    /// password); `false` keeps the `Basic` challenge. Always `Bearer` with anonymous pull.
    pub bearer: bool,
    /// How long an access token lasts.
    #[serde(deserialize_with = "ops::duration")]
    pub lifetime: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig { bearer: false, lifetime: Duration::from_secs(300) }
    }
}

/// htpasswd authentication: the users in a file (`path`), or in the storage (`instorage`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdConfig {
    /// The realm of the Basic challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The htpasswd file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Read the users from the storage (the object `regctl/auth/htpasswd` below its root)
    /// rather than `path`, and re-read them when they change: every server sharing a bucket
    /// sees a user `regctl add-user --bucket` adds within a second or two.
    #[serde(default)]
    pub instorage: bool,
}

impl HtpasswdConfig {
    /// Users in the file at `path`.
    pub fn file(realm: String, path: PathBuf) -> HtpasswdConfig {
        HtpasswdConfig { realm, path: Some(path), instorage: false }
    }
}

/// The realm used when none is configured.
pub fn default_realm() -> String {
    "regctl".to_string()
}

/// Log output.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `regctl_registry=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use text or json)")),
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Applies distribution's `REGISTRY_*` variables from `vars` (normally `std::env::vars()`).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        let mut realm = None;
        let mut s3: Vec<(String, String)> = Vec::new();
        let mut kind = None;
        let mut redirect_disable = None;
        for (name, value) in vars {
            if let Some(key) = name.strip_prefix("REGISTRY_STORAGE_S3_") {
                s3.push((key.to_ascii_lowercase(), value));
                continue;
            }
            if name.starts_with("REGISTRY_HTTP_TLS_") && self.http.tls.apply_env(&name, &value)? {
                continue;
            }
            if self.tags.apply_env(&name, &value) {
                continue;
            }
            match name.as_str() {
                "REGISTRY_STORAGE" => kind = Some(value),
                "REGISTRY_STORAGE_REDIRECT_DISABLE" => redirect_disable = Some(value),
                "REGISTRY_HTTP_ADDR" => self.http.addr = value,
                "REGISTRY_HTTP_HSTS" => {
                    self.http.hsts = Some(
                        parse_flag(&value)
                            .map_err(|message| ConfigError::Env { name: name.clone(), message })?,
                    );
                }
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY" => {
                    self.storage.filesystem.rootdirectory = PathBuf::from(value);
                }
                "REGISTRY_AUTH_HTPASSWD_PATH" => {
                    let realm = self.auth.htpasswd.take().map_or_else(default_realm, |h| h.realm);
                    self.auth.htpasswd = Some(HtpasswdConfig::file(realm, PathBuf::from(value)));
                }
                "REGISTRY_AUTH_HTPASSWD_REALM" => realm = Some(value),
                // Empty or `none` turns it off, so a variable can undo a file's setting.
                "REGISTRY_AUTH_ANONYMOUS" => {
                    self.auth.anonymous = match value.as_str() {
                        "" | "none" => None,
                        level => Some(
                            level
                                .parse()
                                .map_err(|message| ConfigError::Env { name: name.clone(), message })?,
                        ),
                    };
                }
                "REGISTRY_LOG_FORMATTER" => {
                    self.log.format =
                        value.parse().map_err(|message| ConfigError::Env { name: name.clone(), message })?;
                }
                "REGISTRY_LOG_LEVEL" => self.log.level = value,
                _ => {}
            }
        }
        if let (Some(realm), Some(htpasswd)) = (realm, self.auth.htpasswd.as_mut()) {
            htpasswd.realm = realm;
        }
        match kind.as_deref() {
            None => {}
            Some("s3") => {}
            Some("filesystem") => self.storage.s3 = None,
            Some(other) => {
                let message = format!("unknown storage {other:?} (use filesystem or s3)");
                return Err(ConfigError::Env { name: "REGISTRY_STORAGE".into(), message });
            }
        }
        let wants_s3 = kind.as_deref() == Some("s3") || (kind.is_none() && !s3.is_empty());
        if let Some(disable) = redirect_disable {
            // distribution's switch, inverted: its redirects are on unless disabled, ours off.
            s3.push((
                "redirect".into(),
                if parse_flag(&disable).is_ok_and(|d| d) { "false" } else { "true" }.into(),
            ));
        }
        if wants_s3 {
            self.apply_s3_env(s3)?;
        }
        Ok(())
    }

    fn apply_s3_env(&mut self, vars: Vec<(String, String)>) -> Result<(), ConfigError> {
        let bucket = vars.iter().find(|(k, _)| k == "bucket").map(|(_, v)| v.clone());
        let mut s3 = match (self.storage.s3.take(), bucket) {
            (Some(s3), _) => s3,
            (None, Some(bucket)) => S3Config::for_bucket(bucket),
            (None, None) => {
                let message = "S3 storage needs a bucket (set REGISTRY_STORAGE_S3_BUCKET)".to_string();
                return Err(ConfigError::Env { name: "REGISTRY_STORAGE_S3_BUCKET".into(), message });
            }
        };
        for (key, value) in vars {
            let name = format!("REGISTRY_STORAGE_S3_{}", key.to_ascii_uppercase());
            let flag =
                |v: &str| parse_flag(v).map_err(|message| ConfigError::Env { name: name.clone(), message });
            match key.as_str() {
                "bucket" => s3.bucket = value,
                "region" => s3.region = Some(value),
                "rootdirectory" => s3.rootdirectory = value,
                "encrypt" => s3.encrypt = flag(&value)?,
                "keyid" => s3.keyid = Some(value).filter(|v| !v.is_empty()),
                "regionendpoint" => s3.regionendpoint = Some(value).filter(|v| !v.is_empty()),
                "forcepathstyle" => s3.forcepathstyle = flag(&value)?,
                "secure" => s3.secure = flag(&value)?,
                "v4auth" => s3.v4auth = flag(&value)?,
                "accesskey" => s3.accesskey = Some(value).filter(|v| !v.is_empty()),
                "secretkey" => s3.secretkey = Some(Secret::new(value)).filter(|v| !v.expose().is_empty()),
                "redirect" => s3.redirect = flag(&value)?,
                "redirectexpiry" => {
                    s3.redirectexpiry = ops::parse_duration(&value)
                        .map_err(|message| ConfigError::Env { name: name.clone(), message })?;
                }
                "manifestcachettl" => {
                    s3.manifestcachettl = ops::parse_duration(&value)
                        .map_err(|message| ConfigError::Env { name: name.clone(), message })?;
                }
                "chunksize" => {
                    s3.chunksize = value.parse().map_err(|_| ConfigError::Env {
                        name: name.clone(),
                        message: format!("{value:?} is not a number of bytes"),
                    })?;
                }
                _ => {} // distribution's other S3 settings do not apply here
            }
        }
        self.storage.s3 = Some(s3);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_then_env() {
        let mut config: Config = toml::from_str(
            "[http]\naddr = \"0.0.0.0:443\"\n[storage.filesystem]\nrootdirectory = \"/data\"\n[log]\nformat = \"json\"\n",
        )
        .expect("toml");
        assert_eq!(config.http.addr, "0.0.0.0:443");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.auth.htpasswd, None);
        let vars = [
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:5001"),
            ("REGISTRY_HTTP_HSTS", "true"),
            ("UNRELATED", "x"),
        ];
        config.apply_env(vars.map(|(k, v)| (k.to_string(), v.to_string()))).expect("env");
        assert_eq!(config.http.addr, "127.0.0.1:5001");
        assert_eq!(config.http.hsts, Some(true));
        let htpasswd = config.auth.htpasswd.expect("htpasswd");
        assert_eq!(
            (htpasswd.realm.as_str(), htpasswd.path.as_deref(), htpasswd.instorage),
            ("Registry Realm", Some(Path::new("/auth/htpasswd")), false)
        );
        assert_eq!(config.storage.filesystem.rootdirectory, Path::new("/data"));
    }

    #[test]
    fn anonymous_pull_from_the_file_or_the_environment() {
        let mut config: Config = toml::from_str("[auth]\nanonymous = \"pull\"\n").expect("toml");
        assert_eq!(config.auth.anonymous, Some(Anonymous::Pull));
        assert!(toml::from_str::<Config>("[auth]\nanonymous = \"push\"\n").is_err(), "only pull");
        let var = |v: &str| [("REGISTRY_AUTH_ANONYMOUS".to_string(), v.to_string())];
        config.apply_env(var("none")).expect("env");
        assert_eq!(config.auth.anonymous, None);
        config.apply_env(var("pull")).expect("env");
        assert_eq!(config.auth.anonymous, Some(Anonymous::Pull));
        assert!(config.apply_env(var("delete")).is_err());
    }

    #[test]
    fn s3_from_distribution_variables() {
        let vars = [
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "images"),
            ("REGISTRY_STORAGE_S3_REGION", "eu-west-1"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/image-registry"),
            ("REGISTRY_STORAGE_S3_ENCRYPT", "true"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "hunter2"),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "5242880"),
            ("REGISTRY_STORAGE_S3_MANIFESTCACHETTL", "0"),
        ];
        let mut config = Config::default();
        config.apply_env(vars.map(|(k, v)| (k.to_string(), v.to_string()))).expect("env");
        let s3 = config.storage.s3.expect("s3");
        assert_eq!((s3.bucket.as_str(), s3.region.as_deref()), ("images", Some("eu-west-1")));
        assert_eq!(s3.rootdirectory, "/image-registry");
        assert!(s3.encrypt && s3.secure);
        assert_eq!(s3.chunksize, 5 << 20);
        assert_eq!(s3.manifestcachettl, Duration::ZERO, "the manifest cache off");
        assert_eq!(S3Config::for_bucket("b".into()).manifestcachettl, Duration::from_secs(1));
        assert!(!format!("{:?}", s3.secretkey).contains("hunter2"), "secrets never print");
        let mut config = Config::default();
        let missing = [("REGISTRY_STORAGE".to_string(), "s3".to_string())];
        assert!(config.apply_env(missing).is_err(), "a bucket is required");
    }

    #[test]
    fn timeouts_and_blob_limit() {
        let config = Config::default();
        assert_eq!(config.http.headertimeout, Some(Duration::from_secs(30)));
        assert_eq!(config.http.bodytimeout, Some(Duration::from_secs(60)));
        assert_eq!(config.storage.maxblobsize, None);
        assert_eq!(
            (config.http.draintime, config.http.shutdowntimeout),
            (Duration::ZERO, Duration::from_secs(60))
        );
        let config: Config = toml::from_str(
            "[http]\nheadertimeout = \"5s\"\nbodytimeout = 0\ndraintime = \"15s\"\n[storage]\nmaxblobsize = 1048576\n",
        )
        .expect("toml");
        assert_eq!(config.http.draintime, Duration::from_secs(15));
        assert_eq!(config.http.headertimeout, Some(Duration::from_secs(5)));
        assert_eq!(config.http.bodytimeout, None, "0 turns the timeout off");
        assert_eq!(config.storage.maxblobsize, Some(1 << 20));
        assert!(toml::from_str::<Config>("[http]\nheadertimeout = \"soon\"\n").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[http]\nadress = \"x\"\n").is_err());
        let mut config = Config::default();
        let bad = [("REGISTRY_LOG_FORMATTER".to_string(), "xml".to_string())];
        assert!(config.apply_env(bad).is_err());
    }
}
