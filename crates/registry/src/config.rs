//! Server configuration: a TOML file, then the `REGISTRY_*` environment variables that
//! `registry:2` users already have, so the settings of a distribution tutorial carry over.
//!
//! ```toml
//! [http]
//! addr = "127.0.0.1:5000"
//!
//! [storage.filesystem]
//! rootdirectory = "./registry-data"
//!
//! [auth.htpasswd]
//! realm = "regctl"
//! path = "/etc/regctl/htpasswd"
//!
//! [log]
//! format = "text"   # or "json"
//! level = "info"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

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
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub addr: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { addr: "127.0.0.1:5000".into() }
    }
}

/// Storage settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Filesystem storage (the default backend).
    pub filesystem: FilesystemConfig,
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
}

/// htpasswd authentication.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdConfig {
    /// The realm of the Basic challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The htpasswd file.
    pub path: PathBuf,
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
        for (name, value) in vars {
            match name.as_str() {
                "REGISTRY_HTTP_ADDR" => self.http.addr = value,
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY" => {
                    self.storage.filesystem.rootdirectory = PathBuf::from(value);
                }
                "REGISTRY_AUTH_HTPASSWD_PATH" => {
                    let realm = self.auth.htpasswd.take().map_or_else(default_realm, |h| h.realm);
                    self.auth.htpasswd = Some(HtpasswdConfig { realm, path: PathBuf::from(value) });
                }
                "REGISTRY_AUTH_HTPASSWD_REALM" => realm = Some(value),
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
            ("UNRELATED", "x"),
        ];
        config.apply_env(vars.map(|(k, v)| (k.to_string(), v.to_string()))).expect("env");
        assert_eq!(config.http.addr, "127.0.0.1:5001");
        let htpasswd = config.auth.htpasswd.expect("htpasswd");
        assert_eq!(
            (htpasswd.realm.as_str(), htpasswd.path.as_path()),
            ("Registry Realm", Path::new("/auth/htpasswd"))
        );
        assert_eq!(config.storage.filesystem.rootdirectory, Path::new("/data"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[http]\nadress = \"x\"\n").is_err());
        let mut config = Config::default();
        let bad = [("REGISTRY_LOG_FORMATTER".to_string(), "xml".to_string())];
        assert!(config.apply_env(bad).is_err());
    }
}
