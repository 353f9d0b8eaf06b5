//! The files deploy writes besides the binary: the server config and the systemd unit, rendered
//! from `templates/`, and the certificate files of `--tls-cert`/`--acme-ca-root`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use regctl_registry::config::Config;

use super::{DeployOptions, Storage, Tls};
use crate::aws::{load_balancer, target_group};
use crate::ops::remote::{Layout, Remote};
use crate::templates::{self, render, toml_string};

/// A TLS file uploaded next to the config.
pub(super) struct TlsFile {
    /// Where it goes on the instance.
    pub path: String,
    /// Its content.
    pub bytes: Vec<u8>,
    /// Its mode, e.g. `0644`.
    pub mode: &'static str,
    /// Its owner, when not root.
    pub owner: Option<String>,
    /// Whether the server reads it only at start.
    pub restart: bool,
}

/// The certificate files of `opts.tls` to upload: the certificate and key (re-read by the
/// server when they change), or the private ACME CA's root (read at start).
pub(super) fn tls_files(opts: &DeployOptions, remote: &Remote) -> anyhow::Result<Vec<TlsFile>> {
    let layout = &remote.layout;
    let file = |path, bytes, mode, owner, restart| TlsFile { path, bytes, mode, owner, restart };
    Ok(match &opts.tls {
        Tls::Files { cert, key } => vec![
            file(layout.tls_cert(), read_local(cert)?, "0644", None, false),
            file(layout.tls_key(), read_local(key)?, "0600", Some(remote.service_user.clone()), false),
        ],
        Tls::Acme { ca_roots, .. } => ca_roots
            .iter()
            .enumerate()
            .map(|(i, root)| Ok(file(layout.acme_ca_root(i), read_local(root)?, "0644", None, true)))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// The items as the inside of a TOML array, or `None` (the line left out) when there are none.
fn listed(items: impl Iterator<Item = String>) -> Option<String> {
    let items: Vec<String> = items.collect();
    (!items.is_empty()).then(|| items.join(", "))
}

/// The bytes of a local file, or an error naming it.
pub(super) fn read_local(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The server configuration for `opts`, validated by parsing it as the server will.
pub fn render_config(opts: &DeployOptions, remote: &Remote) -> anyhow::Result<String> {
    let layout = &remote.layout;
    let q = |s: &str| Some(toml_string(s));
    let mut config =
        base_section(&opts.listen, false, opts.anonymous_pull, &opts.realm, Users::File(&layout.htpasswd()))?;
    config.push_str(&match &opts.storage {
        Storage::S3 { bucket, region, endpoint } => s3_section(bucket, region, endpoint.as_deref())?,
        Storage::Filesystem => render(
            templates::STORAGE_FILESYSTEM,
            &[("data_dir", q(&format!("{}/data", layout.state_dir())))],
        )?,
    });
    config.push_str(&tls_section(&opts.tls, &opts.domain, layout)?);
    config.push_str(&tags_section(&opts.immutable_tags, &opts.mutable_tags)?);
    validated(config)
}

/// Where the server finds its users.
pub(crate) enum Users<'a> {
    /// In this htpasswd file on the instance.
    File(&'a str),
    /// In the storage (the bucket), shared by every server.
    InStorage,
}

/// The config's listener (`behind_balancer`: with the drain, idle and proxy settings of a server
/// behind the load balancer), anonymous access and users.
pub(crate) fn base_section(
    listen: &str,
    behind_balancer: bool,
    anonymous_pull: bool,
    realm: &str,
    users: Users,
) -> anyhow::Result<String> {
    let q = |s: &str| Some(toml_string(s));
    let seconds = |d: Duration| behind_balancer.then(|| toml_string(&format!("{}s", d.as_secs())));
    let proxies = behind_balancer.then(|| {
        let list: Vec<String> = BALANCED_PROXIES.iter().map(|p| toml_string(p)).collect();
        format!("[{}]", list.join(", "))
    });
    let (path, instorage) = match users {
        Users::File(path) => (q(path), None),
        Users::InStorage => (None, Some("true".to_string())),
    };
    render(
        templates::CONFIG,
        &[
            ("listen", q(listen)),
            ("draintime", seconds(BALANCED_DRAIN_TIME)),
            ("headertimeout", seconds(BALANCED_HEADER_TIMEOUT)),
            ("proxies", proxies),
            ("anonymous", anonymous_pull.then(|| toml_string("pull"))),
            ("realm", q(realm)),
            ("htpasswd", path),
            ("instorage", instorage),
        ],
    )
}

/// The config's S3 storage section: `bucket` in `region`, at `endpoint` (path-style) when given.
pub(crate) fn s3_section(bucket: &str, region: &str, endpoint: Option<&str>) -> anyhow::Result<String> {
    let q = |s: &str| Some(toml_string(s));
    render(
        templates::STORAGE_S3,
        &[
            ("bucket", q(bucket)),
            ("region", q(region)),
            ("s3_endpoint", endpoint.and_then(q)),
            ("s3_path_style", endpoint.map(|_| "true".to_string())),
        ],
    )
}

/// The config's immutable tags section (empty when `immutable` is).
pub(crate) fn tags_section(immutable: &[String], mutable: &[String]) -> anyhow::Result<String> {
    if immutable.is_empty() {
        return Ok(String::new());
    }
    let list =
        |patterns: &[String]| listed(patterns.iter().map(|p| toml_string(p))).map(|l| format!("[{l}]"));
    render(templates::TAGS, &[("immutable", list(immutable)), ("mutable", list(mutable))])
}

/// `config`, once the server's own parser accepts it: a template or a value that breaks it is
/// caught here, not on the instance.
pub(crate) fn validated(config: String) -> anyhow::Result<String> {
    toml::from_str::<Config>(&config)
        .map_err(|e| anyhow!("internal error: the rendered server config is invalid: {e}\n{config}"))?;
    Ok(config)
}

/// The config's HTTPS section: ACME for `domain`, or the deployed certificate files.
fn tls_section(tls: &Tls, domain: &str, layout: &Layout) -> anyhow::Result<String> {
    let q = |s: &str| Some(toml_string(s));
    match tls {
        Tls::Acme { email, directory, staging, http_addr, ca_roots, challenges } => render(
            templates::TLS_ACME,
            &[
                ("http_addr", http_addr.as_deref().and_then(q)),
                ("acme_cache", q(&format!("{}/acme", layout.state_dir()))),
                ("domain", q(domain)),
                ("acme_email", email.as_deref().and_then(q)),
                ("acme_directory", directory.as_deref().and_then(q)),
                ("acme_staging", staging.then(|| "true".to_string())),
                ("acme_ca_roots", listed((0..ca_roots.len()).map(|i| toml_string(&layout.acme_ca_root(i))))),
                ("acme_challenges", listed(challenges.iter().map(|c| toml_string(c.as_str())))),
            ],
        ),
        Tls::Files { .. } => render(
            templates::TLS_FILES,
            &[("tls_cert", q(&layout.tls_cert())), ("tls_key", q(&layout.tls_key()))],
        ),
    }
}

/// The systemd unit of the service running as `service_user` with files in `layout`; `scaled`
/// for the instances of a scaled deployment: systemd then makes the state directory (no deploy
/// prepares it) and gives the server 90 s to drain and finish before it is killed.
pub fn render_unit(layout: &Layout, service_user: &str, scaled: bool) -> anyhow::Result<String> {
    let state_dir = layout.state_dir();
    let state_directory = match state_dir.strip_prefix("/var/lib/") {
        Some(name) if scaled => Some(name.to_string()),
        _ if scaled => bail!("internal error: the state directory {state_dir} is not below /var/lib"),
        _ => None,
    };
    render(
        templates::SERVICE_UNIT,
        &[
            ("service_user", Some(service_user.to_string())),
            ("binary", Some(layout.binary())),
            ("config", Some(layout.config())),
            ("state_dir", Some(state_dir.clone())),
            ("state_directory", state_directory),
            ("stop_timeout", scaled.then(|| format!("{}s", STOP_TIMEOUT.as_secs()))),
        ],
    )
}

/// How long a stopping server behind the load balancer answers `/health` with 503 while still
/// serving (`[http] draintime`): until the balancer, checking every 10 s and giving up after 3
/// failures, has marked it unhealthy and sends it nothing more, with a margin.
pub(crate) const BALANCED_DRAIN_TIME: Duration = Duration::from_secs(
    (target_group::HEALTH_CHECK_INTERVAL_SECONDS * target_group::UNHEALTHY_THRESHOLD + 5).unsigned_abs()
        as u64,
);

/// How long a server behind the load balancer waits for a request's headers, which is also how
/// long it keeps an idle connection (`[http] headertimeout`): longer than the balancer's idle
/// timeout, so the balancer closes idle connections, never the server while the balancer sends
/// on one (a 502).
const BALANCED_HEADER_TIMEOUT: Duration =
    Duration::from_secs(load_balancer::IDLE_TIMEOUT_SECONDS as u64 + 10);

/// The peers whose `X-Forwarded-*` headers a server behind the load balancer believes: the private
/// ranges a VPC's addresses come from. Port 80 of the instances admits only the balancer's
/// security group, so no other peer reaches the server.
const BALANCED_PROXIES: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// How long systemd lets a stopping server of a scaled deployment drain and finish its requests
/// before it kills it: more than the drain ([`BALANCED_DRAIN_TIME`]) plus the server's default
/// time for in-flight requests once it stops accepting (`[http] shutdowntimeout`, 60 s), with a
/// margin.
const STOP_TIMEOUT: Duration = Duration::from_secs(BALANCED_DRAIN_TIME.as_secs() + 60 + 15);

#[cfg(test)]
mod tests {
    use regctl_registry::config::ChallengeKind;

    use super::*;
    use crate::ops::remote::SERVICE;

    /// The rendered unit's sandbox, as systemd itself scores it (`systemd-analyze security
    /// --offline`, from Debian's `systemd`): an exposure of 2.0 at most out of 10. It is 1.7;
    /// the same service with no sandbox scores 9.3 ("UNSAFE"), and the unit before the
    /// system-call filter and the other protections were added 4.9. Without the tool, CI
    /// fails and a local run skips.
    #[test]
    fn acme_settings_reach_the_server_config_as_serve_would_take_them() {
        let layout = Layout::new("/").expect("layout");
        let acme = |ca_roots: Vec<std::path::PathBuf>, challenges| Tls::Acme {
            email: None,
            directory: Some("https://ca.test/dir".to_string()),
            staging: false,
            http_addr: None,
            ca_roots,
            challenges,
        };
        let parse = |section: String| -> regctl_registry::config::Config {
            toml::from_str(&format!("[http]\naddr = \"0.0.0.0:443\"\n{section}")).expect("valid config")
        };
        let tls = acme(vec!["a.pem".into(), "b.pem".into()], vec![ChallengeKind::Http01]);
        let config = parse(tls_section(&tls, "r.example.com", &layout).expect("render"));
        let le = config.http.tls.letsencrypt.expect("letsencrypt section");
        assert_eq!(
            le.caroots,
            ["/etc/regctl/acme-ca.pem", "/etc/regctl/acme-ca-1.pem"].map(std::path::PathBuf::from)
        );
        assert_eq!(le.challenges, [ChallengeKind::Http01]);
        assert_eq!(le.hosts, ["r.example.com"]);
        // Without them, the server's defaults.
        let config =
            parse(tls_section(&acme(Vec::new(), Vec::new()), "r.example.com", &layout).expect("render"));
        let le = config.http.tls.letsencrypt.expect("letsencrypt section");
        assert!(le.caroots.is_empty());
        assert_eq!(le.challenges, [ChallengeKind::TlsAlpn01, ChallengeKind::Http01]);
    }

    #[test]
    fn the_service_unit_is_sandboxed() {
        let tool = Path::new("/usr/bin/systemd-analyze");
        if !tool.exists() {
            assert!(
                std::env::var("CI").is_err(),
                "systemd-analyze is required in CI (apt-get install systemd)"
            );
            eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
            return;
        }
        let layout = Layout::new("/").expect("a layout");
        // The unit deploy installs over SSH, and the one of a scaled deployment's instances.
        for scaled in [false, true] {
            let unit = render_unit(&layout, "regctl", scaled).expect("the unit renders");
            let dir = tempfile::tempdir().expect("a temporary directory");
            let file = dir.path().join(format!("{SERVICE}.service"));
            std::fs::write(&file, &unit).expect("write the unit");
            let out = std::process::Command::new(tool)
                .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
                .arg(&file)
                .output()
                .expect("run systemd-analyze");
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "exposure above 2.0 (scaled: {scaled}):\n{report}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(report.contains("Overall exposure level"), "{report}");
        }
    }
}
