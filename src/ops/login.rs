//! `regctl login`: the local clients of an operator's or CI machine set up for a registry —
//! the credentials checked against the registry first ([`verify`]), its CA in docker's and
//! containers' `certs.d` when the certificate is private, the credentials through docker's
//! configured credential helper (plain text in `config.json` only when none is configured, and
//! then said so), and a Kubernetes pull Secret.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

use crate::ops::https::{self, Target};

/// Where the local clients keep their settings; each overridable (tests, unusual setups).
#[derive(Debug, Clone)]
pub struct ClientPaths {
    /// docker's configuration directory (`DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config: PathBuf,
    /// docker's per-registry CA directory (`REGCTL_DOCKER_CERTS_D`, else `/etc/docker/certs.d`).
    pub docker_certs: PathBuf,
    /// podman/skopeo/buildah's (`REGCTL_CONTAINERS_CERTS_D`, else `/etc/containers/certs.d`).
    pub containers_certs: PathBuf,
}

impl ClientPaths {
    /// The paths from the environment, with the clients' defaults.
    pub fn from_env() -> ClientPaths {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = var("HOME").unwrap_or_else(|| PathBuf::from("."));
        ClientPaths {
            docker_config: var("DOCKER_CONFIG").unwrap_or_else(|| home.join(".docker")),
            docker_certs: var("REGCTL_DOCKER_CERTS_D")
                .unwrap_or_else(|| PathBuf::from("/etc/docker/certs.d")),
            containers_certs: var("REGCTL_CONTAINERS_CERTS_D")
                .unwrap_or_else(|| PathBuf::from("/etc/containers/certs.d")),
        }
    }
}

/// Writes `ca_pem` as `<certs.d>/<host>/ca.crt` for docker and for containers; returns the
/// files written.
pub fn install_ca(paths: &ClientPaths, host: &str, ca_pem: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for dir in [&paths.docker_certs, &paths.containers_certs] {
        let dir = dir.join(host);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let file = dir.join("ca.crt");
        std::fs::write(&file, ca_pem).with_context(|| format!("cannot write {}", file.display()))?;
        written.push(file);
    }
    Ok(written)
}

/// Where credentials went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Through `docker-credential-<helper>`.
    Helper(String),
    /// In plain text (base64) in this `config.json`: no helper is configured.
    PlainText(PathBuf),
}

/// Stores `user`'s `secret` for `host` as docker does: through the helper that `config.json`
/// names for the host (`credHelpers`) or for all (`credsStore`), leaving only an empty entry
/// in the file; in the file itself only when there is no helper.
pub fn store_credentials(
    paths: &ClientPaths,
    host: &str,
    user: &str,
    secret: &str,
) -> anyhow::Result<Stored> {
    let file = paths.docker_config.join("config.json");
    let mut config: Value = match std::fs::read(&file) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", file.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    if !config.is_object() {
        bail!("{} is not a JSON object", file.display());
    }
    let helper = config["credHelpers"][host].as_str().or(config["credsStore"].as_str()).map(str::to_string);
    let entry = match &helper {
        Some(helper) => {
            run_helper(helper, host, user, secret)?;
            json!({})
        }
        None => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            json!({ "auth": auth })
        }
    };
    if !config["auths"].is_object() {
        config["auths"] = json!({});
    }
    config["auths"][host] = entry;
    std::fs::create_dir_all(&paths.docker_config)
        .with_context(|| format!("cannot create {}", paths.docker_config.display()))?;
    let text = serde_json::to_vec_pretty(&config).context("cannot serialise config.json")?;
    crate::ops::users::write_local(&file, &text)?;
    Ok(match helper {
        Some(helper) => Stored::Helper(helper),
        None => Stored::PlainText(file),
    })
}

/// `docker-credential-<helper> store`, the credentials as JSON on stdin (never argv).
fn run_helper(helper: &str, host: &str, user: &str, secret: &str) -> anyhow::Result<()> {
    if helper.is_empty() || !helper.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("invalid docker credential helper name {helper:?}");
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("store")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("cannot run {program} (docker's config.json names it as the credential helper)")
        })?;
    let input = json!({ "ServerURL": host, "Username": user, "Secret": secret }).to_string();
    child.stdin.take().context("the helper's stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output().with_context(|| format!("{program} store"))?;
    if !out.status.success() {
        bail!(
            "{program} store failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Checks that the registry at `host` (`HOST[:PORT]`) takes `user`'s `secret`: `GET
/// https://HOST/v2/` with them as Basic credentials, TLS verified against `roots`. `Ok` when it
/// answers 200; otherwise an error saying what it answered (never the secret).
pub async fn verify(
    host: &str,
    roots: Arc<rustls::RootCertStore>,
    user: &str,
    secret: &str,
) -> anyhow::Result<()> {
    let target = Target::parse(&format!("https://{host}/v2/"))?;
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")));
    let answer = https::get_as(&target, None, roots, Some(&basic))
        .await
        .with_context(|| format!("cannot check the credentials of {user} at https://{host}/v2/"))?;
    match answer.status {
        200 => Ok(()),
        401 => bail!(
            "the registry at {host} refused the credentials of {user} (401): wrong name or password, or an expired token"
        ),
        429 => bail!(
            "the registry at {host} is refusing logins from this address for a while after failed ones (429): try again later"
        ),
        status => bail!(
            "https://{host}/v2/ answered {status} to the credentials of {user}, not 200: is {host} the registry?"
        ),
    }
}

/// A `kubernetes.io/dockerconfigjson` Secret named `name` with `user`'s `secret` for `host`.
pub fn kubernetes_secret(name: &str, host: &str, user: &str, secret: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let auth = b64.encode(format!("{user}:{secret}"));
    let config = json!({ "auths": { host: { "username": user, "password": secret, "auth": auth } } });
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        b64.encode(config.to_string())
    )
}

/// Whether `path` holds a PEM certificate (a CA worth installing).
pub fn read_ca(path: &Path) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the CA {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{} is not a PEM certificate", path.display());
    }
    Ok(pem)
}
