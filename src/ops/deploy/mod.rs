//! `regctl deploy`: puts the registry server on the instance over SSH and waits until it answers.
//!
//! In order: check that the binary can run there (architecture, C library); create the service
//! account and directories; upload the binary only when its SHA-256 differs; render the config
//! and the systemd unit from `templates/` and write each only when it differs; create the first
//! user when there is none; enable the unit and restart it only when something it reads
//! changed (or start it when it is not running); then wait until the health URL answers 401
//! with a Basic challenge over verified TLS. Deploying the same build and settings again
//! changes nothing and restarts nothing.

pub(crate) mod binary;
mod elf;
mod instance;
pub(crate) mod render;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use regctl_registry::config::ChallengeKind;
use serde::Serialize;
use sha2::Digest as _;

use self::binary::LocalBinary;
use self::instance::{Facts, inspect, prepare};
use self::render::{render_config, render_unit, tls_files};
use crate::exit::Failure;
use crate::ops::https::{self, Answer, Target, trust_roots};
use crate::ops::progress::Reporter;
use crate::ops::remote::{Remote, RemoteOptions, SERVICE};
use crate::ops::users::{self, PasswordSource};

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
        /// Root CAs (PEM files) trusted for the directory's own HTTPS (a private ACME CA).
        ca_roots: Vec<PathBuf>,
        /// The challenge types to try, in order; the server's default when empty.
        challenges: Vec<ChallengeKind>,
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
    /// Patterns of immutable tags, and their exceptions (empty: every tag moves).
    pub immutable_tags: Vec<String>,
    /// Exceptions to `immutable_tags`.
    pub mutable_tags: Vec<String>,
    /// The first user.
    pub first_user: FirstUser,
    /// Whether anyone may pull without credentials.
    pub anonymous_pull: bool,
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
    let unit = render_unit(&remote.layout, &remote.service_user, false)?;
    let mut files = vec![layout.binary(), layout.config(), layout.unit()];
    files.extend(tls_files.iter().map(|f| f.path.clone()));
    let facts = reporter
        .task("instance", remote.session().target(), async {
            let facts = inspect(remote, &files).await?;
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
            // The first user administers the registry: `delete` on every repository.
            let grant = regctl_registry::auth::access::Grant::full();
            Some((first.name.clone(), users::set_entry(&text, &first.name, &hash, Some(&grant))))
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

/// Polls the health URL until it answers 401 with a Basic challenge; on timeout, fails with the
/// last problem and the service's recent log.
async fn wait_healthy(opts: &DeployOptions, reporter: &Reporter, remote: &Remote) -> anyhow::Result<()> {
    let (seconds, result) =
        poll_health(&opts.health_url, opts.ca_file.as_deref(), opts.wait, reporter).await?;
    let Err(problem) = result else { return Ok(()) };
    let journal = remote.run(&format!("journalctl -u {SERVICE} -n 50 --no-pager")).await;
    let log = match journal {
        Ok(out) if out.success() => out.stdout_text(),
        Ok(out) => format!("(journalctl failed: {})", out.stderr_text()),
        Err(e) => format!("(cannot run journalctl: {e:#})"),
    };
    Err(Failure::Remote.mark(anyhow!(
        "{url} did not answer 401 with a login challenge within {seconds:.0}s; last problem: {problem:#}.\n\
         Check that {domain} resolves to the instance (regctl status), that ports 80 and 443 are open, \
         and the service's log. The last 50 lines of `journalctl -u {SERVICE}`:\n{log}",
        url = opts.health_url,
        domain = opts.domain,
    )))
}

/// Polls `url` every 2 s, trusting the extra CA certificates of `ca_file`, until it answers 401
/// with a login challenge (the registry is up and asks for credentials), for `wait` at most:
/// the seconds it took and, on timeout, the last problem seen. Fails at once on a URL or CA file
/// it cannot use.
pub async fn poll_health(
    url: &str,
    ca_file: Option<&Path>,
    wait: Duration,
    reporter: &Reporter,
) -> anyhow::Result<(f64, anyhow::Result<()>)> {
    let target = Target::parse(url).context("the health URL")?;
    let roots = Arc::new(trust_roots(ca_file)?);
    Ok(reporter
        .task("health", url, async {
            let deadline = Instant::now() + wait;
            let started = Instant::now();
            loop {
                let answer = https::get(&target, None, roots.clone()).await;
                let problem = match answer.and_then(|answer| judge(&answer)) {
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
        .await)
}

/// Accepts a 401 answer with a Basic challenge, or with a Bearer challenge that sends the
/// client to the registry's own `/token` (what a registry with anonymous pull or `--bearer`
/// answers).
fn judge(answer: &Answer) -> anyhow::Result<()> {
    let ours = |challenge: &str| {
        let lower = challenge.to_ascii_lowercase();
        lower.starts_with("basic")
            || (lower.starts_with("bearer ")
                && lower.split(',').any(|p| {
                    p.trim_start_matches("bearer ").trim().starts_with("realm=")
                        && p.trim_end_matches('"').ends_with("/token")
                }))
    };
    match (answer.status, &answer.challenge) {
        (401, Some(c)) if ours(c) => Ok(()),
        (401, _) => {
            bail!("401 without a Basic challenge or a Bearer one to its /token: is this regctl's registry?")
        }
        (status, _) => bail!("HTTP {status} instead of 401: the registry must ask for a password"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_are_judged() {
        let answer = |status, challenge: Option<&str>| Answer {
            status,
            challenge: challenge.map(str::to_string),
            certificate_expires: None,
        };
        assert!(judge(&answer(401, Some("Basic realm=\"regctl\""))).is_ok());
        assert!(judge(&answer(200, None)).is_err());
        assert!(judge(&answer(401, Some("Bearer x"))).is_err());
        let bearer = "Bearer realm=\"https://r.example.com/token\",service=\"regctl\"";
        assert!(judge(&answer(401, Some(bearer))).is_ok(), "anonymous pull challenges with Bearer");
        assert!(judge(&answer(401, Some("Bearer realm=\"https://auth.example.com/oauth\""))).is_err());
        assert!(judge(&answer(401, None)).is_err());
    }
}
