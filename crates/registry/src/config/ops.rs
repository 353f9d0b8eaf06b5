//! Settings of the operations side: notifications (distribution's `notifications` section),
//! the web UI, `/metrics`, the health endpoint and garbage collection.
//!
//! ```toml
//! [[notifications.endpoints]]
//! name = "ci"
//! url = "https://hooks.example.com/registry"
//! headers = { Authorization = ["Bearer s3cret"] }
//! timeout = "5s"
//! threshold = 5          # failures in a row before backing off
//! backoff = "1s"         # first back-off, doubled up to 5 minutes
//! ignoredmediatypes = ["application/octet-stream"]
//! ignore = { actions = ["pull"] }
//! queuesize = 10000      # events kept waiting (oldest dropped beyond)
//!
//! [ui]
//! enabled = true         # read-only browser UI at /ui/
//!
//! [metrics]
//! enabled = true
//! path = "/metrics"
//! auth = true            # scrapers send Basic credentials
//!
//! [health]
//! enabled = true
//! path = "/health"
//! auth = false
//!
//! [gc]
//! interval = "24h"       # scheduled collection in the server; absent = never
//! graceperiod = "1h"     # never delete blobs or manifests younger than this
//! deleteuntagged = false
//! uploadmaxage = "168h"  # abandoned uploads older than this are purged
//! settle = "10s"         # wait after announcing a collection before marking
//! leasettl = "60s"       # a collection's lease: one server at a time (crate::lease)
//!
//! [[gc.retention]]       # tags and untagged manifests to delete: see config::retention
//! repositories = "team/*"
//! keeplast = 5
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `[notifications]`: webhook endpoints that receive push, pull and delete events.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// The endpoints, each with its own queue.
    pub endpoints: Vec<EndpointConfig>,
}

/// One webhook endpoint, with distribution's setting names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// A name for logs, metrics and the queue's storage directory (letters, digits, `-_.`).
    #[serde(deserialize_with = "endpoint_name")]
    pub name: String,
    /// Keeps the endpoint in the file without sending to it.
    #[serde(default)]
    pub disabled: bool,
    /// Where events are POSTed (`http://` or `https://`).
    #[serde(deserialize_with = "endpoint_url")]
    pub url: String,
    /// Extra request headers, e.g. `Authorization`; a value may be a string or a list.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    /// How long one POST may take.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Failures in a row before the endpoint backs off.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// The first back-off; it doubles with each further failure, up to five minutes.
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub backoff: Duration,
    /// Events whose target has one of these media types are not sent (distribution's older
    /// spelling of `ignore.mediatypes`).
    #[serde(default)]
    pub ignoredmediatypes: Vec<String>,
    /// Events to leave out.
    #[serde(default)]
    pub ignore: IgnoreConfig,
    /// Most events waiting to be delivered; beyond it the oldest are dropped (and counted).
    #[serde(default = "default_queue_size")]
    pub queuesize: usize,
}

/// Events an endpoint does not want.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IgnoreConfig {
    /// Target media types to leave out.
    pub mediatypes: Vec<String>,
    /// Actions to leave out: `push`, `pull`, `mount`, `delete`.
    pub actions: Vec<String>,
}

/// Header values: `"v"` or `["v1", "v2"]`. Never printed, as they often hold credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderValues(pub Vec<String>);

impl std::fmt::Debug for HeaderValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeaderValues({} hidden)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(v) => HeaderValues(vec![v]),
            OneOrMany::Many(v) => HeaderValues(v),
        })
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_threshold() -> u32 {
    5
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_queue_size() -> usize {
    10_000
}

/// `[ui]`: the read-only web UI at `/ui/` (`/` redirects there), behind the same
/// authentication as the API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the UI.
    pub enabled: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true }
    }
}

/// An operational endpoint (`[metrics]`, `[health]`): on or off, where, and whether it needs
/// credentials when authentication is on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpsEndpointConfig {
    /// Serve it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Its path, outside `/v2` and `/ui`.
    #[serde(deserialize_with = "route_path")]
    pub path: String,
    /// Require the registry's credentials.
    pub auth: bool,
}

fn yes() -> bool {
    true
}

/// `[metrics]`: Prometheus text at `/metrics`, behind authentication by default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct MetricsConfig(#[serde(deserialize_with = "metrics_section")] pub OpsEndpointConfig);

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig(OpsEndpointConfig { enabled: true, path: "/metrics".into(), auth: true })
    }
}

/// `[health]`: storage reachability at `/health`, open by default (for load balancers).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct HealthConfig(#[serde(deserialize_with = "health_section")] pub OpsEndpointConfig);

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig(OpsEndpointConfig { enabled: true, path: "/health".into(), auth: false })
    }
}

/// A section where every key is optional, over the given defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialOps {
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "optional_route_path")]
    path: Option<String>,
    auth: Option<bool>,
}

fn merge(partial: PartialOps, default: OpsEndpointConfig) -> OpsEndpointConfig {
    OpsEndpointConfig {
        enabled: partial.enabled.unwrap_or(default.enabled),
        path: partial.path.unwrap_or(default.path),
        auth: partial.auth.unwrap_or(default.auth),
    }
}

fn metrics_section<'de, D: Deserializer<'de>>(d: D) -> Result<OpsEndpointConfig, D::Error> {
    Ok(merge(PartialOps::deserialize(d)?, MetricsConfig::default().0))
}

fn health_section<'de, D: Deserializer<'de>>(d: D) -> Result<OpsEndpointConfig, D::Error> {
    Ok(merge(PartialOps::deserialize(d)?, HealthConfig::default().0))
}

/// `[gc]`: garbage collection, also run by `regctl gc`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// How often the server collects; `None` (the default) never.
    #[serde(deserialize_with = "optional_duration")]
    pub interval: Option<Duration>,
    /// Blobs, manifests and links written more recently than this are never deleted, so that
    /// content of a push in progress survives.
    #[serde(deserialize_with = "duration")]
    pub graceperiod: Duration,
    /// Also delete manifests that no tag reaches (directly, as an index child, or as a
    /// referrer of one).
    pub deleteuntagged: bool,
    /// Upload sessions idle for longer than this are deleted.
    #[serde(deserialize_with = "duration")]
    pub uploadmaxage: Duration,
    /// How long a collection waits after announcing itself before it marks: longer than any
    /// push takes to notice the announcement and finish writing a manifest.
    #[serde(deserialize_with = "duration")]
    pub settle: Duration,
    /// How long the lease of a collection or a storage tidy-up lasts unless renewed (every
    /// third of it, while the job runs): how long a server that died while holding it keeps
    /// the others from the job; at least 1 s. See [`crate::lease`].
    #[serde(deserialize_with = "duration")]
    pub leasettl: Duration,
    /// Scheduled runs only report what they would delete.
    pub dryrun: bool,
    /// Tags and untagged manifests to delete, per repository pattern.
    pub retention: Vec<super::retention::RetentionRule>,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: None,
            graceperiod: Duration::from_secs(3600),
            deleteuntagged: false,
            uploadmaxage: Duration::from_secs(168 * 3600),
            settle: Duration::from_secs(10),
            leasettl: Duration::from_secs(60),
            dryrun: false,
            retention: Vec::new(),
        }
    }
}

/// Parses a duration the way distribution's (Go) configuration writes them: `90s`, `1h30m`,
/// `500ms`, `1.5h`, `7d` (ours); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration (write e.g. 30s, 10m, 1h30m or 7d)");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Deserializes a duration from a string (`"1h30m"`) or a number of seconds.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = duration(d)?;
    Ok(Some(value).filter(|v| !v.is_zero()))
}

fn endpoint_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "endpoint name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(name)
}

fn endpoint_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    let parsed: Result<axum::http::Uri, _> = url.parse();
    match parsed {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => Ok(url),
        _ => Err(serde::de::Error::custom(format!("endpoint url {url:?}: give an http:// or https:// URL"))),
    }
}

fn check_route_path(path: &str) -> Result<(), String> {
    let reserved = ["/v2", "/ui"].iter().any(|r| path == *r || path.starts_with(&format!("{r}/")));
    if !path.starts_with('/') || path == "/" || reserved || path.contains(['{', '}', '*', '?', '#']) {
        return Err(format!("path {path:?}: give an absolute path such as /metrics, outside /v2 and /ui"));
    }
    Ok(())
}

fn route_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let path = String::deserialize(d)?;
    check_route_path(&path).map_err(serde::de::Error::custom)?;
    Ok(path)
}

fn optional_route_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    route_path(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_style() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[derive(Debug, Deserialize)]
    struct Sections {
        #[serde(default)]
        notifications: NotificationsConfig,
        #[serde(default)]
        metrics: MetricsConfig,
        #[serde(default)]
        health: HealthConfig,
        #[serde(default)]
        gc: GcConfig,
    }

    #[test]
    fn sections_parse_with_defaults() {
        let text = r#"
            [[notifications.endpoints]]
            name = "ci"
            url = "http://127.0.0.1:9/hook"
            headers = { Authorization = "Bearer x", X-Multi = ["a", "b"] }
            ignore = { actions = ["pull"] }
            [metrics]
            auth = false
            [gc]
            interval = "12h"
            graceperiod = 0
        "#;
        let s: Sections = toml::from_str(text).expect("parse");
        let e = &s.notifications.endpoints[0];
        assert_eq!((e.timeout, e.threshold, e.queuesize), (Duration::from_secs(5), 5, 10_000));
        assert_eq!(e.headers["X-Multi"].0, ["a", "b"]);
        assert!(!format!("{e:?}").contains("Bearer"), "header values never print");
        assert_eq!(s.metrics.0, OpsEndpointConfig { enabled: true, path: "/metrics".into(), auth: false });
        assert_eq!(s.health.0.path, "/health");
        assert_eq!(s.gc.interval, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(s.gc.graceperiod, Duration::ZERO);
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = [
            "[[notifications.endpoints]]\nname = \"a b\"\nurl = \"http://x/\"\n",
            "[[notifications.endpoints]]\nname = \"a\"\nurl = \"ftp://x/\"\n",
            "[metrics]\npath = \"/v2/metrics\"\n",
            "[health]\npath = \"health\"\n",
            "[gc]\ninterval = \"often\"\n",
        ];
        for text in bad {
            assert!(toml::from_str::<Sections>(text).is_err(), "accepted: {text}");
        }
    }
}
