//! `regctl deploy`: puts the registry server on the instance over SSH and waits until it answers.
//!
//! In order: check that the binary can run there (architecture, C library); create the service
//! account and directories; upload the binary only when its SHA-256 differs; render the config
//! and the systemd unit from `templates/` and write each only when it differs; create the first
//! user when there is none; enable the unit and restart it only when something it reads
//! changed (or start it when it is not running); then wait until the health URL answers 401
//! with a Basic challenge over verified TLS. Deploying the same build and settings again
//! changes nothing and restarts nothing.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use regctl_registry::config::Config;
use serde::Serialize;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ops::progress::Reporter;
use crate::ops::remote::{Layout, Remote, RemoteOptions, SERVICE, check};
use crate::ops::users::{self, PasswordSource};
use crate::ssh::shell_quote;
use crate::templates::{self, render, toml_string};

/// Where images are stored.
#[derive(Debug, Clone)]
pub enum Storage {
    /// An S3 bucket (credentials from the instance profile).
    S3 {
        /// The bucket.
        bucket: String,
        /// Its region.
        region: String,
        /// An S3-compatible endpoint instead of AWS's (path-style addressing).
        endpoint: Option<String>,
    },
    /// The instance's disk, in the state directory.
    Filesystem,
}

/// How the server gets its certificate.
#[derive(Debug, Clone)]
pub enum Tls {
    /// From an ACME directory (Let's Encrypt by default).
    Acme {
        /// Contact e-mail.
        email: Option<String>,
        /// Directory URL; Let's Encrypt production when `None` (staging with `staging`).
        directory: Option<String>,
        /// Let's Encrypt's staging directory.
        staging: bool,
        /// The plain-HTTP listener for HTTP-01 and redirects; the server's default when `None`.
        http_addr: Option<String>,
        /// A root CA (PEM file) trusted for the directory's own HTTPS (a private ACME CA).
        ca_root: Option<PathBuf>,
    },
    /// From local certificate and key files, uploaded with the rest.
    Files {
        /// PEM certificate chain.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
}

/// The first registry user, created when the instance has none.
#[derive(Debug, Clone)]
pub struct FirstUser {
    /// Its name.
    pub name: String,
    /// Where its password comes from.
    pub password: PasswordSource,
    /// bcrypt cost.
    pub cost: u32,
}

/// Everything `deploy` needs.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The instance.
    pub remote: RemoteOptions,
    /// The server executable to install.
    pub binary: PathBuf,
    /// The registry's DNS name.
    pub domain: String,
    /// Address the HTTPS listener binds on the instance.
    pub listen: String,
    /// Storage.
    pub storage: Storage,
    /// Certificates.
    pub tls: Tls,
    /// Realm of the Basic challenge.
    pub realm: String,
    /// The first user.
    pub first_user: FirstUser,
    /// The URL that must answer 401 with a Basic challenge.
    pub health_url: String,
    /// An extra PEM file of CA certificates trusted for the health check.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the health URL.
    pub wait: Duration,
}

/// What `deploy` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeploySummary {
    /// `host` or `[host]:port`.
    pub host: String,
    /// The host key's fingerprint.
    pub host_key: String,
    /// Files written on the instance (unchanged ones are not listed).
    pub changed: Vec<String>,
    /// Whether the binary was uploaded.
    pub uploaded: bool,
    /// Bytes of the binary.
    pub binary_bytes: u64,
    /// Upload time in seconds (0 when not uploaded).
    pub upload_seconds: f64,
    /// The service was restarted or started.
    pub restarted: bool,
    /// The user created because there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_user: Option<String>,
    /// The URL that answered.
    pub health_url: String,
}

impl DeploySummary {
    /// Upload throughput in MB/s (10^6 bytes), when the binary was uploaded.
    pub fn upload_mb_per_s(&self) -> Option<f64> {
        (self.uploaded && self.upload_seconds > 0.0)
            .then(|| self.binary_bytes as f64 / 1e6 / self.upload_seconds)
    }
}

/// Runs the deployment.
pub async fn deploy(opts: &DeployOptions, reporter: &Reporter) -> anyhow::Result<DeploySummary> {
    let local = reporter
        .task("binary", &opts.binary.display().to_string(), async {
            let binary = opts.binary.clone();
            let info = tokio::task::spawn_blocking(move || LocalBinary::inspect(&binary))
                .await
                .context("the binary inspection task failed")??;
            Ok((format!("{} MiB, {}", info.size >> 20, info.target), info))
        })
        .await
        .1?;
    let target = crate::ssh::display_target(&opts.remote.ssh.host, opts.remote.ssh.port);
    let remote = reporter
        .task("SSH", &format!("{}@{target}", opts.remote.ssh.user), async {
            let remote = Remote::connect(&opts.remote).await?;
            let key = remote.session().host_key();
            Ok((format!("connected, host key {} {}", key.algorithm, key.fingerprint), remote))
        })
        .await
        .1?;
    let result = converge(opts, reporter, &remote, &local).await;
    let result = match result {
        Ok(summary) => wait_healthy(opts, reporter, &remote).await.map(|()| summary),
        Err(e) => Err(e),
    };
    remote.close().await;
    result
}

async fn converge(
    opts: &DeployOptions,
    reporter: &Reporter,
    remote: &Remote,
    local: &LocalBinary,
) -> anyhow::Result<DeploySummary> {
    let layout = &remote.layout;
    let key = remote.session().host_key();
    let mut summary = DeploySummary {
        host: remote.session().target().to_string(),
        host_key: key.fingerprint.clone(),
        binary_bytes: local.size,
        health_url: opts.health_url.clone(),
        ..DeploySummary::default()
    };

    // What is there now, in one round trip.
    let tls_files = tls_files(opts, remote)?;
    let config = render_config(opts, remote)?;
    let unit = render_unit(&remote.layout, &remote.service_user)?;
    let mut files = vec![layout.binary(), layout.config(), layout.unit()];
    files.extend(tls_files.iter().map(|f| f.path.clone()));
    let facts = reporter
        .task("instance", remote.session().target(), async {
            let facts = probe(remote, &files).await?;
            local.check_runs_on(&facts)?;
            Ok((format!("{}, {}", facts.arch, facts.libc), facts))
        })
        .await
        .1?;

    // Users: when there are none, the first one's password is asked now, before anything
    // changes, so a deploy that cannot get one stops early.
    let htpasswd = layout.htpasswd();
    let empty = reporter
        .task("users", &htpasswd, async {
            let text = String::from_utf8(remote.read_file(&htpasswd).await?.unwrap_or_default())
                .map_err(|_| anyhow!("{htpasswd} on the instance is not UTF-8 text: fix or remove it"))?;
            let existing = users::user_names(&text, Path::new(&htpasswd))
                .with_context(|| format!("fix {htpasswd} on the instance (or remove it) and deploy again"))?;
            if existing.is_empty() {
                Ok((format!("none yet: {} will be created", opts.first_user.name), Some(text)))
            } else {
                Ok((format!("{} user(s)", existing.len()), None))
            }
        })
        .await
        .1?;
    // Asked outside any spinner, which would draw over the prompt.
    let first_user = match empty {
        None => None,
        Some(text) => {
            let first = &opts.first_user;
            users::validate_user_name(&first.name)?;
            let password = users::read_password(first.password, &first.name)
                .context("the registry has no users yet and deploy creates the first one")?;
            let cost = first.cost;
            let hash = tokio::task::spawn_blocking(move || users::hash_password(&password, cost))
                .await
                .context("the password hashing task failed")??;
            Some((first.name.clone(), users::set_entry(&text, &first.name, &hash)))
        }
    };

    // The service account and directories.
    let made = reporter
        .task("service account", &remote.service_user, async {
            let made = prepare(remote, &facts).await?;
            Ok((if made { "created".to_string() } else { "up to date".to_string() }, made))
        })
        .await
        .1?;
    if made {
        summary.changed.push(format!("user {}", remote.service_user));
    }

    // The binary.
    let binary_path = layout.binary();
    let uploaded = reporter
        .task("binary", &binary_path, async {
            if facts.sha256(&binary_path) == Some(local.sha256.as_str()) {
                return Ok(("up to date (same SHA-256)".to_string(), None));
            }
            let file = tokio::fs::File::open(&opts.binary)
                .await
                .with_context(|| format!("cannot open {}", opts.binary.display()))?;
            let started = Instant::now();
            let size = local.size.max(1);
            let mut last_note = Instant::now();
            // A spinner can change often; plain lines (no terminal) should not flood the output.
            let every = if std::io::stderr().is_terminal() {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            remote
                .write_file(&binary_path, "0755", None, Some(local.size), file, |sent| {
                    if last_note.elapsed() >= every {
                        last_note = Instant::now();
                        let rate = sent as f64 / 1e6 / started.elapsed().as_secs_f64().max(1e-3);
                        reporter.note(format!("uploading: {}% at {rate:.0} MB/s", sent * 100 / size));
                    }
                })
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            let rate = local.size as f64 / 1e6 / seconds.max(1e-3);
            Ok((
                format!("uploaded {} MiB in {seconds:.1}s ({rate:.0} MB/s)", local.size >> 20),
                Some(seconds),
            ))
        })
        .await
        .1?;
    if let Some(seconds) = uploaded {
        summary.uploaded = true;
        summary.upload_seconds = seconds;
        summary.changed.push(binary_path.clone());
    }

    // Certificate files, config, unit.
    let mut restart = summary.uploaded;
    for file in tls_files {
        if write_if_changed(
            reporter,
            remote,
            &facts,
            &file.path,
            &file.bytes,
            file.mode,
            file.owner.as_deref(),
        )
        .await?
        {
            restart |= file.restart;
            summary.changed.push(file.path);
        }
    }
    let config_path = layout.config();
    if write_if_changed(reporter, remote, &facts, &config_path, config.as_bytes(), "0644", None).await? {
        summary.changed.push(config_path);
        restart = true;
    }
    let unit_path = layout.unit();
    if write_if_changed(reporter, remote, &facts, &unit_path, unit.as_bytes(), "0644", None).await? {
        summary.changed.push(unit_path);
        remote.run_ok("reload systemd", "systemctl daemon-reload").await?;
        restart = true;
    }

    // The first user, when there is none: written now that the files are in place.
    if let Some((name, entries)) = first_user {
        let htpasswd = layout.htpasswd();
        reporter
            .task("users", &htpasswd, async {
                users::write_remote(remote, &entries).await?;
                Ok((format!("created the first user, {name}"), ()))
            })
            .await
            .1?;
        summary.first_user = Some(name);
        summary.changed.push(htpasswd);
    }

    // The service.
    summary.restarted = reporter
        .task("service", SERVICE, async {
            let mut done = Vec::new();
            if facts.enabled != "enabled" {
                remote.run_ok("enable the service", &format!("systemctl enable {SERVICE}")).await?;
                done.push("enabled");
            }
            let restarted = if restart {
                remote.run_ok("restart the service", &format!("systemctl restart {SERVICE}")).await?;
                done.push("restarted");
                true
            } else if facts.active != "active" {
                remote.run_ok("start the service", &format!("systemctl start {SERVICE}")).await?;
                done.push("started");
                true
            } else {
                false
            };
            let outcome = if done.is_empty() { "running, unchanged".to_string() } else { done.join(", ") };
            Ok((outcome, restarted))
        })
        .await
        .1?;
    Ok(summary)
}

/// Writes `bytes` to `path` unless the instance already has exactly them; true when written.
async fn write_if_changed(
    reporter: &Reporter,
    remote: &Remote,
    facts: &Facts,
    path: &str,
    bytes: &[u8],
    mode: &str,
    owner: Option<&str>,
) -> anyhow::Result<bool> {
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    reporter
        .task("file", path, async {
            if facts.sha256(path) == Some(sha.as_str()) {
                return Ok(("up to date".to_string(), false));
            }
            let outcome = if facts.sha256(path).is_some() { "updated" } else { "created" };
            remote.write_file(path, mode, owner, Some(bytes.len() as u64), bytes, |_| {}).await?;
            Ok((outcome.to_string(), true))
        })
        .await
        .1
}

/// A TLS file uploaded next to the config.
struct TlsFile {
    path: String,
    bytes: Vec<u8>,
    mode: &'static str,
    owner: Option<String>,
    /// Whether the server reads it only at start.
    restart: bool,
}

/// The certificate files of `opts.tls` to upload: the certificate and key (re-read by the
/// server when they change), or the private ACME CA's root (read at start).
fn tls_files(opts: &DeployOptions, remote: &Remote) -> anyhow::Result<Vec<TlsFile>> {
    let layout = &remote.layout;
    let file = |path, bytes, mode, owner, restart| TlsFile { path, bytes, mode, owner, restart };
    Ok(match &opts.tls {
        Tls::Files { cert, key } => vec![
            file(layout.tls_cert(), read_local(cert)?, "0644", None, false),
            file(layout.tls_key(), read_local(key)?, "0600", Some(remote.service_user.clone()), false),
        ],
        Tls::Acme { ca_root: Some(root), .. } => {
            vec![file(layout.acme_ca_root(), read_local(root)?, "0644", None, true)]
        }
        Tls::Acme { ca_root: None, .. } => Vec::new(),
    })
}

fn read_local(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The server configuration for `opts`, validated by parsing it as the server will.
pub fn render_config(opts: &DeployOptions, remote: &Remote) -> anyhow::Result<String> {
    let layout = &remote.layout;
    let q = |s: &str| Some(toml_string(s));
    let mut config = render(
        templates::CONFIG,
        &[("listen", q(&opts.listen)), ("realm", q(&opts.realm)), ("htpasswd", q(&layout.htpasswd()))],
    )?;
    config.push_str(&match &opts.storage {
        Storage::S3 { bucket, region, endpoint } => render(
            templates::STORAGE_S3,
            &[
                ("bucket", q(bucket)),
                ("region", q(region)),
                ("s3_endpoint", endpoint.as_deref().and_then(q)),
                ("s3_path_style", endpoint.as_ref().map(|_| "true".to_string())),
            ],
        )?,
        Storage::Filesystem => render(
            templates::STORAGE_FILESYSTEM,
            &[("data_dir", q(&format!("{}/data", layout.state_dir())))],
        )?,
    });
    config.push_str(&match &opts.tls {
        Tls::Acme { email, directory, staging, http_addr, ca_root } => render(
            templates::TLS_ACME,
            &[
                ("http_addr", http_addr.as_deref().and_then(q)),
                ("acme_cache", q(&format!("{}/acme", layout.state_dir()))),
                ("domain", q(&opts.domain)),
                ("acme_email", email.as_deref().and_then(q)),
                ("acme_directory", directory.as_deref().and_then(q)),
                ("acme_staging", staging.then(|| "true".to_string())),
                ("acme_ca_root", ca_root.as_ref().map(|_| toml_string(&layout.acme_ca_root()))),
            ],
        )?,
        Tls::Files { .. } => render(
            templates::TLS_FILES,
            &[("tls_cert", q(&layout.tls_cert())), ("tls_key", q(&layout.tls_key()))],
        )?,
    });
    toml::from_str::<Config>(&config)
        .map_err(|e| anyhow!("internal error: the rendered server config is invalid: {e}\n{config}"))?;
    Ok(config)
}

/// The systemd unit of the service running as `service_user` with files in `layout`.
pub fn render_unit(layout: &Layout, service_user: &str) -> anyhow::Result<String> {
    render(
        templates::SERVICE_UNIT,
        &[
            ("service_user", Some(service_user.to_string())),
            ("binary", Some(layout.binary())),
            ("config", Some(layout.config())),
            ("state_dir", Some(layout.state_dir())),
        ],
    )
}

/// What the instance has, found in one command.
#[derive(Debug, Default)]
struct Facts {
    /// `uname -m`.
    arch: String,
    /// The first line of `getconf GNU_LIBC_VERSION` or `ldd --version`.
    libc: String,
    /// Whether the service account exists.
    user_exists: bool,
    /// `systemctl is-enabled`.
    enabled: String,
    /// `systemctl is-active`.
    active: String,
    /// SHA-256 of each managed file that exists.
    sha256: Vec<(String, String)>,
}

impl Facts {
    fn sha256(&self, path: &str) -> Option<&str> {
        self.sha256.iter().find(|(p, _)| p == path).map(|(_, sha)| sha.as_str())
    }

    fn parse(text: &str) -> Facts {
        let mut facts = Facts::default();
        for line in text.lines() {
            // A path may hold `=`; a hash never does.
            let split =
                if line.starts_with("sha256:") { line.rsplit_once('=') } else { line.split_once('=') };
            let Some((key, value)) = split else { continue };
            match key {
                "arch" => facts.arch = value.trim().to_string(),
                "libc" => facts.libc = value.trim().to_string(),
                "user" => facts.user_exists = value.trim() == "yes",
                "enabled" => facts.enabled = value.trim().to_string(),
                "active" => facts.active = value.trim().to_string(),
                _ => {
                    if let Some(path) = key.strip_prefix("sha256:") {
                        let sha = value.trim();
                        if sha.len() == 64 {
                            facts.sha256.push((path.to_string(), sha.to_string()));
                        }
                    }
                }
            }
        }
        facts
    }

    /// The glibc version, e.g. (2, 34); `None` for musl or when unknown.
    fn glibc(&self) -> Option<(u32, u32)> {
        if self.libc.to_ascii_lowercase().contains("musl") {
            return None;
        }
        self.libc.split_whitespace().rev().find_map(parse_version)
    }

    fn is_musl(&self) -> bool {
        self.libc.to_ascii_lowercase().contains("musl")
    }
}

async fn probe(remote: &Remote, files: &[String]) -> anyhow::Result<Facts> {
    let mut script = String::from(
        "printf 'arch=%s\\n' \"$(uname -m)\"; \
         printf 'libc=%s\\n' \"$( { getconf GNU_LIBC_VERSION || ldd --version; } 2>&1 | head -n 1)\"; ",
    );
    script.push_str(&format!(
        "if id -u {} >/dev/null 2>&1; then echo user=yes; else echo user=no; fi; ",
        shell_quote(&remote.service_user)
    ));
    script.push_str(&format!(
        "printf 'enabled=%s\\n' \"$(systemctl is-enabled {SERVICE} 2>/dev/null)\"; \
         printf 'active=%s\\n' \"$(systemctl is-active {SERVICE} 2>/dev/null)\"; "
    ));
    for file in files {
        let q = shell_quote(file);
        script.push_str(&format!(
            "if [ -f {q} ]; then printf 'sha256:%s=%s\\n' {q} \"$(sha256sum < {q} | cut -c1-64)\"; fi; "
        ));
    }
    script.push_str("true");
    let out = remote.run(&script).await?;
    check(&out, remote.session().target(), "inspect the instance")?;
    Ok(Facts::parse(&out.stdout_text()))
}

/// Creates the service account (when privileged) and the directories; true when the account
/// was created.
async fn prepare(remote: &Remote, facts: &Facts) -> anyhow::Result<bool> {
    let layout = &remote.layout;
    let user = shell_quote(&remote.service_user);
    let state = shell_quote(&layout.state_dir());
    let mut script = String::from("set -e; ");
    let create = remote.privileged() && !facts.user_exists;
    if create {
        let nologin = "$(command -v nologin || echo /bin/false)";
        script.push_str(&format!(
            "useradd --system --no-create-home --home-dir {state} --shell \"{nologin}\" {user}; "
        ));
    } else if !facts.user_exists {
        bail!(
            "the service account {} does not exist and regctl cannot create it without root: create it, \
             or pass --service-user with an existing account",
            remote.service_user
        );
    }
    let owner = if remote.privileged() { format!("-o {user} ") } else { String::new() };
    let bin_dir = layout.binary().rsplit_once('/').map(|(dir, _)| dir.to_string()).unwrap_or_default();
    let unit_dir = layout.unit().rsplit_once('/').map(|(dir, _)| dir.to_string()).unwrap_or_default();
    script.push_str(&format!(
        "install -d -m 0755 {bin} {unit} {config} {tls}; install -d -m 0700 {owner}{state}",
        bin = shell_quote(&bin_dir),
        unit = shell_quote(&unit_dir),
        config = shell_quote(&layout.config_dir()),
        tls =
            shell_quote(&layout.tls_cert().rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default()),
    ));
    remote.run_ok("create the service account and directories", &script).await?;
    Ok(create)
}

/// Polls the health URL until it answers 401 with a Basic challenge; on timeout, fails with the
/// last problem and the service's recent log.
async fn wait_healthy(opts: &DeployOptions, reporter: &Reporter, remote: &Remote) -> anyhow::Result<()> {
    let roots = Arc::new(trust_roots(opts.ca_file.as_deref())?);
    let (seconds, result) = reporter
        .task("health", &opts.health_url, async {
            let deadline = Instant::now() + opts.wait;
            let started = Instant::now();
            loop {
                let problem = match health_check(&opts.health_url, roots.clone()).await {
                    Ok(()) => return Ok(("401 with a Basic challenge: the registry is up".to_string(), ())),
                    Err(e) => format!("{e:#}"),
                };
                if Instant::now() >= deadline {
                    return Err(anyhow!(problem));
                }
                reporter.note(format!("waiting, {:.0}s: {problem}", started.elapsed().as_secs_f64()));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
        .await;
    let Err(problem) = result else { return Ok(()) };
    let journal = remote.run(&format!("journalctl -u {SERVICE} -n 50 --no-pager")).await;
    let log = match journal {
        Ok(out) if out.success() => out.stdout_text(),
        Ok(out) => format!("(journalctl failed: {})", out.stderr_text()),
        Err(e) => format!("(cannot run journalctl: {e:#})"),
    };
    bail!(
        "{url} did not answer 401 with a Basic challenge within {seconds:.0}s; last problem: {problem:#}.\n\
         Check that {domain} resolves to the instance (regctl status), that ports 80 and 443 are open, \
         and the service's log. The last 50 lines of `journalctl -u {SERVICE}`:\n{log}",
        url = opts.health_url,
        domain = opts.domain,
    )
}

/// The system's roots plus the certificates in `extra`.
pub fn trust_roots(extra: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the system ships but rustls cannot parse is simply not trusted.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra {
        let pem = read_local(path)?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| anyhow!("{} is not a PEM certificate file: {e}", path.display()))?;
            roots.add(cert).map_err(|e| anyhow!("cannot trust a certificate of {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display());
        }
    }
    Ok(roots)
}

/// One health check: `GET` the URL (HTTPS verified against `roots`, or plain HTTP) and expect
/// 401 with a `WWW-Authenticate: Basic` challenge.
pub async fn health_check(url: &str, roots: Arc<rustls::RootCertStore>) -> anyhow::Result<()> {
    let (tls, host, port, path) = parse_url(url)?;
    let check = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(|c| c == '[' || c == ']'), port))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let head = if tls {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(
                host.trim_matches(|c| c == '[' || c == ']').to_string(),
            )
            .map_err(|e| anyhow!("{host} is not a valid TLS server name: {e}"))?;
            let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .context("TLS handshake failed")?;
            stream.write_all(request.as_bytes()).await?;
            read_head(&mut stream).await?
        } else {
            let mut stream = tcp;
            stream.write_all(request.as_bytes()).await?;
            read_head(&mut stream).await?
        };
        judge(&head)
    };
    tokio::time::timeout(Duration::from_secs(15), check)
        .await
        .map_err(|_| anyhow!("no answer within 15 s"))?
}

/// Reads the status line and headers (at most 16 KiB).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await.context("cannot read the answer")?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Accepts a 401 answer with a Basic challenge.
fn judge(head: &str) -> anyhow::Result<()> {
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("");
    let challenge = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, value)| value.trim().to_string());
    match (status, challenge) {
        ("401", Some(c)) if c.to_ascii_lowercase().starts_with("basic") => Ok(()),
        ("401", _) => bail!("401 without a Basic challenge: is this regctl's registry?"),
        ("", _) => bail!("no HTTP answer"),
        (status, _) => bail!("HTTP {status} instead of 401: the registry must ask for a password"),
    }
}

/// (TLS?, host, port, path) of an `http://` or `https://` URL.
pub fn parse_url(url: &str) -> anyhow::Result<(bool, String, u16, String)> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("health URL {url:?} must start with https:// or http://");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            (host, port.parse().map_err(|_| anyhow!("bad port {port:?} in health URL {url:?}"))?)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() {
        bail!("health URL {url:?} has no host");
    }
    Ok((tls, host.to_string(), port, path.to_string()))
}

/// The local binary to deploy: size, SHA-256, and what it needs to run.
#[derive(Debug)]
struct LocalBinary {
    size: u64,
    sha256: String,
    /// e.g. `x86_64, glibc ≥ 2.34`.
    target: String,
    arch: Option<&'static str>,
    libc: Libc,
}

/// The C library a binary needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Libc {
    /// None (static).
    Static,
    /// musl.
    Musl,
    /// glibc, at least this version.
    Glibc(Option<(u32, u32)>),
}

impl LocalBinary {
    fn inspect(path: &Path) -> anyhow::Result<LocalBinary> {
        let mut file = std::fs::File::open(path).with_context(|| {
            format!("cannot open the server binary {}: pass it with --binary", path.display())
        })?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let elf = Elf::read(path)?;
        let arch = elf.arch();
        let libc = elf.libc();
        let target = format!(
            "{}, {}",
            arch.unwrap_or("unknown architecture"),
            match &libc {
                Libc::Static => "static".to_string(),
                Libc::Musl => "musl".to_string(),
                Libc::Glibc(Some((major, minor))) => format!("glibc ≥ {major}.{minor}"),
                Libc::Glibc(None) => "glibc".to_string(),
            }
        );
        Ok(LocalBinary { size, sha256: hex::encode(hasher.finalize()), target, arch, libc })
    }

    /// Fails with what to do when the binary cannot run on an instance with `facts`.
    fn check_runs_on(&self, facts: &Facts) -> anyhow::Result<()> {
        let remote_arch = match facts.arch.as_str() {
            "arm64" => "aarch64",
            other => other,
        };
        let Some(arch) = self.arch else {
            bail!("the server binary is not an x86_64 or aarch64 Linux executable: pass one with --binary");
        };
        if arch != remote_arch {
            bail!(
                "the server binary is built for {arch} but the instance is {remote_arch}: build regctl for \
                 {remote_arch}-unknown-linux-musl (or -gnu) and pass it with --binary"
            );
        }
        match (&self.libc, facts.is_musl(), facts.glibc()) {
            (Libc::Static, _, _) | (Libc::Musl, true, _) => Ok(()),
            (Libc::Musl, false, _) => bail!(
                "the server binary needs musl's dynamic loader, which the instance ({}) lacks: use a static \
                 or glibc build (--binary)",
                facts.libc
            ),
            (Libc::Glibc(_), true, _) => bail!(
                "the server binary needs glibc but the instance uses musl: build regctl for \
                 {arch}-unknown-linux-musl and pass it with --binary"
            ),
            (Libc::Glibc(Some(need)), false, Some(have)) if have < *need => bail!(
                "the server binary needs glibc {}.{} but the instance has glibc {}.{}: build regctl on an older \
                 distribution or for {arch}-unknown-linux-musl, and pass it with --binary",
                need.0,
                need.1,
                have.0,
                have.1
            ),
            (Libc::Glibc(_), false, _) => Ok(()),
        }
    }
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim_end_matches(|c: char| !c.is_ascii_digit());
    let (major, rest) = s.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Just enough of a 64-bit little-endian ELF file: its machine, its interpreter, and the
/// glibc versions its dynamic symbols need.
struct Elf {
    machine: u16,
    interpreter: Option<String>,
    dynstr: Vec<u8>,
}

impl Elf {
    fn read(path: &Path) -> anyhow::Result<Elf> {
        use std::io::{Seek, SeekFrom};
        let not_elf =
            || anyhow!("{} is not a 64-bit Linux executable: pass one with --binary", path.display());
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut header = [0u8; 64];
        file.read_exact(&mut header).map_err(|_| not_elf())?;
        if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
            return Err(not_elf());
        }
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |b: &[u8], o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let mut read_at = |offset: u64, len: u64| -> anyhow::Result<Vec<u8>> {
            if len > 64 << 20 {
                return Err(not_elf());
            }
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|_| not_elf())?;
            Ok(buf)
        };
        let machine = u16_at(&header, 18);
        // Program headers: the interpreter (PT_INTERP).
        let (phoff, phentsize, phnum) = (u64_at(&header, 32), u16_at(&header, 54), u16_at(&header, 56));
        let phdrs = read_at(phoff, u64::from(phentsize) * u64::from(phnum))?;
        let mut interpreter = None;
        for i in 0..usize::from(phnum) {
            let ph = &phdrs[i * usize::from(phentsize)..];
            if ph.len() >= 56 && u32_at(ph, 0) == 3 {
                let bytes = read_at(u64_at(ph, 8), u64_at(ph, 32))?;
                interpreter = Some(String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string());
            }
        }
        // Section headers: the dynamic string table (.dynstr) names the needed GLIBC_x.y.
        let (shoff, shentsize, shnum, shstrndx) =
            (u64_at(&header, 40), u16_at(&header, 58), u16_at(&header, 60), u16_at(&header, 62));
        let mut dynstr = Vec::new();
        if shoff != 0 && shnum > 0 && shentsize >= 64 && shstrndx < shnum {
            let shdrs = read_at(shoff, u64::from(shentsize) * u64::from(shnum))?;
            let section = |i: usize| &shdrs[i * usize::from(shentsize)..(i + 1) * usize::from(shentsize)];
            let names = section(usize::from(shstrndx));
            let names = read_at(u64_at(names, 24), u64_at(names, 32))?;
            for i in 0..usize::from(shnum) {
                let sh = section(i);
                let name_at = u32_at(sh, 0) as usize;
                let name = names.get(name_at..).and_then(|n| n.split(|b| *b == 0).next()).unwrap_or(b"");
                if name == b".dynstr" {
                    dynstr = read_at(u64_at(sh, 24), u64_at(sh, 32))?;
                }
            }
        }
        Ok(Elf { machine, interpreter, dynstr })
    }

    fn arch(&self) -> Option<&'static str> {
        match self.machine {
            62 => Some("x86_64"),
            183 => Some("aarch64"),
            _ => None,
        }
    }

    fn libc(&self) -> Libc {
        match &self.interpreter {
            None => Libc::Static,
            Some(interp) if interp.contains("musl") => Libc::Musl,
            Some(_) => Libc::Glibc(
                self.dynstr
                    .split(|b| *b == 0)
                    .filter_map(|s| s.strip_prefix(b"GLIBC_"))
                    .filter_map(|v| std::str::from_utf8(v).ok())
                    .filter_map(parse_version)
                    .max(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rendered unit's sandbox, as systemd itself scores it (`systemd-analyze security
    /// --offline`, from Debian's `systemd`): an exposure of 2.0 at most out of 10. It is 1.7;
    /// the same service with no sandbox scores 9.3 ("UNSAFE"), and the unit before the
    /// system-call filter and the other protections were added 4.9. Without the tool, CI
    /// fails and a local run skips.
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
        let unit = render_unit(&layout, "regctl").expect("the unit renders");
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
            "exposure above 2.0:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains("Overall exposure level"), "{report}");
    }

    #[test]
    fn this_executable_is_understood() {
        let exe = std::env::current_exe().expect("current exe");
        let elf = Elf::read(&exe).expect("an ELF file");
        assert_eq!(elf.arch(), Some(std::env::consts::ARCH));
        match elf.libc() {
            Libc::Glibc(Some((2, minor))) => assert!(minor >= 2),
            other => assert!(cfg!(target_env = "musl") || matches!(other, Libc::Static), "{other:?}"),
        }
    }

    #[test]
    fn instance_facts_decide_whether_the_binary_runs() {
        let facts = Facts::parse(
            "arch=x86_64\nlibc=glibc 2.34\nuser=no\nenabled=\nactive=inactive\nsha256:/usr/local/bin/regctl-registry=\
             0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        );
        assert_eq!(facts.glibc(), Some((2, 34)));
        assert!(facts.sha256("/usr/local/bin/regctl-registry").is_some());
        let binary =
            |arch, libc| LocalBinary { size: 1, sha256: String::new(), target: String::new(), arch, libc };
        assert!(binary(Some("x86_64"), Libc::Glibc(Some((2, 34)))).check_runs_on(&facts).is_ok());
        let too_new =
            binary(Some("x86_64"), Libc::Glibc(Some((2, 39)))).check_runs_on(&facts).expect_err("too new");
        assert!(too_new.to_string().contains("glibc 2.39"), "{too_new}");
        assert!(binary(Some("aarch64"), Libc::Static).check_runs_on(&facts).is_err());
        assert!(binary(Some("x86_64"), Libc::Static).check_runs_on(&facts).is_ok());
        let musl = Facts::parse("arch=aarch64\nlibc=musl libc (aarch64)\n");
        assert!(binary(Some("aarch64"), Libc::Glibc(None)).check_runs_on(&musl).is_err());
        assert!(binary(Some("aarch64"), Libc::Musl).check_runs_on(&musl).is_ok());
        assert_eq!(Facts::parse("libc=ldd (GNU libc) 2.41\n").glibc(), Some((2, 41)));
    }

    #[test]
    fn health_answers_are_judged() {
        assert!(
            judge("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"regctl\"\r\n\r\n").is_ok()
        );
        assert!(judge("HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(judge("HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer x\r\n\r\n").is_err());
        assert_eq!(
            parse_url("https://r.example.com/v2/").expect("url"),
            (true, "r.example.com".into(), 443, "/v2/".into())
        );
        assert_eq!(
            parse_url("http://127.0.0.1:5000/v2/").expect("url"),
            (false, "127.0.0.1".into(), 5000, "/v2/".into())
        );
        assert!(parse_url("ftp://x").is_err());
    }
}
