//! The release of a scaled deployment (`provision --instances N`), kept in its bucket: what
//! every instance of the Auto Scaling group installs at boot, so an instance the group launches
//! on its own comes up with the current version and nobody has to deploy to it.
//!
//! A release has three parts, the registry server binary (the one `deploy` ships over SSH),
//! its config and its systemd unit, each stored once under [`PREFIX`] at a key named by its
//! SHA-256 (`regctl-releases/<sha256>/<file>`): publishing the same bytes again uploads
//! nothing. The pointer object [`POINTER`] (JSON: the key and SHA-256 of each part) is written
//! last, so an instance never picks a half-published release. The prefix is outside the
//! registry's storage (`docker/registry/v2/`, `regctl/`), and the instance role may read it but
//! not write it (`policies/s3-bucket.json`): a compromised server cannot plant what every new
//! instance runs.
//!
//! [`user_data`] is the boot script of the instances (`templates/regctl-fetch.sh`): it reads
//! the pointer with the AWS CLI, verifies every part's SHA-256, installs them atomically and
//! starts the server, at every boot.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::aws::{AwsError, AwsResultExt, not_found_as_none};
use crate::ops::deploy::binary::LocalBinary;
use crate::ops::deploy::render::{Users, base_section, render_unit, s3_section, tags_section, validated};
use crate::ops::progress::Reporter;
use crate::ops::remote::{Layout, SERVICE};
use crate::ssh::shell_quote;
use crate::templates::{self, render};

/// The key prefix of releases in the bucket.
pub const PREFIX: &str = "regctl-releases";
/// The key of the pointer to the current release.
pub const POINTER: &str = "regctl-releases/current";
/// The account the server runs as on the instances.
const SERVICE_USER: &str = "regctl";
/// Where the server listens on an instance: plain HTTP, the load balancer terminates TLS.
const LISTEN: &str = "0.0.0.0:80";
/// The boot script, installed on the instances for their next boots.
const FETCH_SCRIPT: &str = "/usr/local/sbin/regctl-fetch";
/// Its oneshot unit, ordered before the registry's.
const FETCH_UNIT: &str = "/etc/systemd/system/regctl-fetch.service";

/// What to publish.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The server executable.
    pub binary: PathBuf,
    /// The deployment's bucket: the registry's storage and where the release goes.
    pub bucket: String,
    /// Its region.
    pub region: String,
    /// Realm of the Basic challenge.
    pub realm: String,
    /// Whether anyone may pull without credentials.
    pub anonymous_pull: bool,
    /// Patterns of immutable tags (empty: every tag moves).
    pub immutable_tags: Vec<String>,
    /// Exceptions to `immutable_tags`.
    pub mutable_tags: Vec<String>,
}

/// One part of a release, as the pointer names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    /// Its key in the bucket.
    pub key: String,
    /// The SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The pointer object: the parts of the current release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The registry server executable.
    pub binary: PartRef,
    /// Its configuration.
    pub config: PartRef,
    /// Its systemd unit.
    pub unit: PartRef,
}

/// What `publish` did.
#[derive(Debug, Clone, Serialize)]
pub struct PublishSummary {
    /// The bucket.
    pub bucket: String,
    /// The pointer's key.
    pub pointer: String,
    /// The release now current.
    pub release: Pointer,
    /// The keys uploaded (parts the bucket did not have yet, then the pointer when it changed).
    pub uploaded: Vec<String>,
    /// e.g. `x86_64, glibc ≥ 2.34`: where the binary can run.
    pub target: String,
}

/// A part to publish: its file name and its bytes (in memory, or the file of the binary).
struct Part {
    name: &'static str,
    sha256: String,
    size: u64,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Part {
    fn from_bytes(name: &'static str, bytes: Vec<u8>) -> Part {
        Part {
            name,
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            body: Body::Bytes(bytes),
        }
    }

    fn reference(&self) -> PartRef {
        PartRef {
            key: format!("{PREFIX}/{}/{}", self.sha256, self.name),
            sha256: self.sha256.clone(),
            size: self.size,
        }
    }
}

/// The server config of a scaled deployment's instances: S3 storage in `opts.bucket`, users in
/// the bucket, plain HTTP on port 80 behind the load balancer, no ACME.
pub fn render_config(opts: &ReleaseOptions) -> anyhow::Result<String> {
    let mut config = base_section(LISTEN, true, opts.anonymous_pull, &opts.realm, Users::InStorage)?;
    config.push_str(&s3_section(&opts.bucket, &opts.region, None)?);
    config.push_str(&tags_section(&opts.immutable_tags, &opts.mutable_tags)?);
    validated(config)
}

/// Publishes the release of `opts` to its bucket and makes it current: each part not there yet,
/// then the pointer when it changed.
pub async fn publish(
    s3: &aws_sdk_s3::Client,
    opts: &ReleaseOptions,
    reporter: &Reporter,
) -> anyhow::Result<PublishSummary> {
    crate::policies::validate_bucket_name(&opts.bucket).map_err(|e| anyhow!(e))?;
    validate_region(&opts.region)?;
    let binary = reporter
        .task("binary", &opts.binary.display().to_string(), async {
            let path = opts.binary.clone();
            let info = tokio::task::spawn_blocking(move || LocalBinary::inspect(&path))
                .await
                .context("the binary inspection task failed")??;
            info.check_runs_on_amazon_linux()?;
            Ok((format!("{} MiB, {}", info.size >> 20, info.target), info))
        })
        .await
        .1?;
    let layout = Layout::new("/")?;
    let parts = [
        Part {
            name: SERVICE,
            sha256: binary.sha256.clone(),
            size: binary.size,
            body: Body::File(opts.binary.clone()),
        },
        Part::from_bytes("config.toml", render_config(opts)?.into_bytes()),
        Part::from_bytes("regctl-registry.service", render_unit(&layout, SERVICE_USER, true)?.into_bytes()),
    ];
    let mut uploaded = Vec::new();
    for part in &parts {
        let key = part.reference().key;
        let resource = format!("s3://{}/{key}", opts.bucket);
        let sent = reporter
            .task("release", &resource, async {
                let head = s3
                    .head_object()
                    .bucket(&opts.bucket)
                    .key(&key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .aws("s3:GetObject", &resource);
                // The key names the content, and S3 keeps the SHA-256 it checked at upload (moto
                // keeps none): an object with another size or checksum was damaged or written
                // otherwise (the instance role cannot write here), and is uploaded again.
                let found = not_found_as_none(head, &["NotFound", "NoSuchKey"])?;
                let size = i64::try_from(part.size).context("the part is too large")?;
                let digest =
                    hex::decode(&part.sha256).context("internal error: a SHA-256 that is not hex")?;
                let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
                if found.as_ref().is_some_and(|h| {
                    h.content_length() == Some(size) && h.checksum_sha256().is_none_or(|c| c == checksum)
                }) {
                    return Ok(("already there (same SHA-256)".to_string(), false));
                }
                let body = match &part.body {
                    Body::Bytes(bytes) => ByteStream::from(bytes.clone()),
                    Body::File(path) => ByteStream::from_path(path)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?,
                };
                // S3 checks the bytes against the SHA-256 the key names, and refuses them otherwise
                // (e.g. a binary rebuilt since it was hashed).
                s3.put_object()
                    .bucket(&opts.bucket)
                    .key(&key)
                    .content_length(size)
                    .checksum_sha256(&checksum)
                    .body(body)
                    .send()
                    .await
                    .aws("s3:PutObject", &resource)?;
                let done = if found.is_some() {
                    "uploaded again (the stored size or checksum differed)"
                } else {
                    "uploaded"
                };
                Ok((format!("{done}: {} bytes", part.size), true))
            })
            .await
            .1?;
        if sent {
            uploaded.push(key);
        }
    }
    let [binary_part, config_part, unit_part] = &parts;
    let release = Pointer {
        binary: binary_part.reference(),
        config: config_part.reference(),
        unit: unit_part.reference(),
    };
    let text = serde_json::to_string_pretty(&release).context("cannot serialise the release pointer")? + "\n";
    let resource = format!("s3://{}/{POINTER}", opts.bucket);
    let changed = reporter
        .task("release", &resource, async {
            if read_pointer(s3, &opts.bucket).await?.as_deref() == Some(text.as_bytes()) {
                return Ok(("current already".to_string(), false));
            }
            s3.put_object()
                .bucket(&opts.bucket)
                .key(POINTER)
                .content_type("application/json")
                .body(ByteStream::from(text.clone().into_bytes()))
                .send()
                .await
                .aws("s3:PutObject", &resource)?;
            Ok(("made current".to_string(), true))
        })
        .await
        .1?;
    if changed {
        uploaded.push(POINTER.to_string());
    }
    Ok(PublishSummary {
        bucket: opts.bucket.clone(),
        pointer: POINTER.to_string(),
        release,
        uploaded,
        target: binary.target,
    })
}

/// The bytes of the pointer in `bucket`, `None` when no release was published yet.
async fn read_pointer(s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let resource = format!("s3://{bucket}/{POINTER}");
    let got = s3.get_object().bucket(bucket).key(POINTER).send().await.aws("s3:GetObject", &resource);
    let Some(out) = not_found_as_none(got, &["NoSuchKey", "NotFound"])? else {
        return Ok(None);
    };
    let body =
        out.body.collect().await.map_err(|e| {
            AwsError::local("s3:GetObject", resource.clone(), format!("reading the body: {e}"))
        })?;
    Ok(Some(body.into_bytes().to_vec()))
}

/// The boot script of the instances of the deployment whose bucket is `bucket` in `region`
/// (their EC2 user data): see `templates/regctl-fetch.sh`.
pub fn user_data(bucket: &str, region: &str) -> anyhow::Result<String> {
    crate::policies::validate_bucket_name(bucket).map_err(|e| anyhow!(e))?;
    validate_region(region)?;
    let layout = Layout::new("/")?;
    let q = |s: &str| Some(shell_quote(s));
    render(
        templates::FETCH,
        &[
            ("bucket", q(bucket)),
            ("region", q(region)),
            ("pointer", q(POINTER)),
            ("service", q(SERVICE)),
            ("service_user", q(SERVICE_USER)),
            ("state_dir", q(&layout.state_dir())),
            ("binary", q(&layout.binary())),
            ("config", q(&layout.config())),
            ("unit", q(&layout.unit())),
            ("fetch_script", q(FETCH_SCRIPT)),
            ("fetch_unit", q(FETCH_UNIT)),
        ],
    )
}

/// Checks an AWS region name (`eu-west-1`): lowercase letters, digits and `-`.
fn validate_region(region: &str) -> anyhow::Result<()> {
    if region.is_empty() || !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("invalid AWS region {region:?}: e.g. eu-west-1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ReleaseOptions {
        ReleaseOptions {
            binary: PathBuf::from("/nonexistent"),
            bucket: "regctl-test-bucket".to_string(),
            region: "eu-west-1".to_string(),
            realm: "regctl".to_string(),
            anonymous_pull: false,
            immutable_tags: vec!["v*".to_string()],
            mutable_tags: Vec::new(),
        }
    }

    #[test]
    fn the_scaled_config_serves_plain_http_from_the_bucket_with_users_in_it() {
        let text = render_config(&options()).expect("renders");
        let config: regctl_registry::config::Config = toml::from_str(&text).expect("the server reads it");
        assert_eq!(config.http.addr, "0.0.0.0:80");
        assert_eq!(config.http.tls, Default::default(), "TLS is the load balancer's: {text}");
        // Behind the balancer: drained until it marks the server unhealthy (3 checks 10 s apart),
        // idle connections closed by the balancer (300 s) first, its forwarded headers believed.
        assert_eq!(config.http.draintime, std::time::Duration::from_secs(35), "{text}");
        assert_eq!(config.http.headertimeout, Some(std::time::Duration::from_secs(310)), "{text}");
        assert_eq!(config.http.proxies.len(), 3, "{text}");
        let s3 = config.storage.s3.expect("S3 storage");
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_deref(), s3.rootdirectory.as_str()),
            ("regctl-test-bucket", Some("eu-west-1"), "")
        );
        let htpasswd = config.auth.htpasswd.expect("users");
        assert!(htpasswd.instorage && htpasswd.path.is_none(), "{text}");
        assert_eq!(config.tags.immutable, [regctl_registry::oci::Glob::new("v*")]);
        // The release lives outside what the server stores.
        assert!(!PREFIX.starts_with("docker/") && !PREFIX.starts_with("regctl/"));
    }

    #[test]
    fn the_boot_script_is_rendered_with_quoted_values_and_refuses_bad_ones() {
        let script = user_data("regctl-test-bucket", "eu-west-1").expect("renders");
        assert!(script.starts_with("#!/bin/bash\n"), "{script}");
        for line in ["bucket=regctl-test-bucket\n", "region=eu-west-1\n", "pointer=regctl-releases/current\n"]
        {
            assert!(script.contains(line), "{line:?} missing");
        }
        assert!(!script.contains("{{"), "{script}");
        // EC2 refuses user data over 16 KiB (before base64).
        assert!(script.len() < 16 << 10, "{} bytes", script.len());
        assert!(user_data("Bad_Bucket", "eu-west-1").is_err());
        assert!(user_data("regctl-test-bucket", "eu-west-1; reboot").is_err());
    }

    /// The boot script passes shellcheck (Debian's `shellcheck`; CI fails without it, a local
    /// run skips).
    #[test]
    fn the_boot_script_is_shellcheck_clean() {
        use std::io::Write as _;
        let tool = std::path::Path::new("/usr/bin/shellcheck");
        if !tool.exists() {
            assert!(
                std::env::var("CI").is_err(),
                "shellcheck is required in CI (apt-get install shellcheck)"
            );
            eprintln!("SKIPPED: shellcheck is not installed (apt-get install shellcheck)");
            return;
        }
        let script = user_data("regctl-test-bucket", "eu-west-1").expect("renders");
        let mut child = std::process::Command::new(tool)
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run shellcheck");
        child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write the script");
        let out = child.wait_with_output().expect("shellcheck's report");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}
