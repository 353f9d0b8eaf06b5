//! What the instance has (architecture, C library, service state, the SHA-256 of each managed
//! file), found in one command, and the service account and directories deploy prepares.

use anyhow::bail;

use super::binary::parse_version;
use crate::ops::remote::{Remote, SERVICE, check};
use crate::ssh::shell_quote;

/// What the instance has, found in one command.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// `uname -m`.
    pub arch: String,
    /// The first line of `getconf GNU_LIBC_VERSION` or `ldd --version`.
    pub libc: String,
    /// Whether the service account exists.
    pub user_exists: bool,
    /// `systemctl is-enabled`.
    pub enabled: String,
    /// `systemctl is-active`.
    pub active: String,
    /// SHA-256 of each managed file that exists.
    pub sha256: Vec<(String, String)>,
}

impl Facts {
    /// The SHA-256 of `path` on the instance, when it exists there.
    pub fn sha256(&self, path: &str) -> Option<&str> {
        self.sha256.iter().find(|(p, _)| p == path).map(|(_, sha)| sha.as_str())
    }

    /// Reads the output of [`inspect`]'s script.
    pub fn parse(text: &str) -> Facts {
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
    pub fn glibc(&self) -> Option<(u32, u32)> {
        if self.libc.to_ascii_lowercase().contains("musl") {
            return None;
        }
        self.libc.split_whitespace().rev().find_map(parse_version)
    }

    /// Whether the instance's C library is musl.
    pub fn is_musl(&self) -> bool {
        self.libc.to_ascii_lowercase().contains("musl")
    }
}

/// Finds the instance's [`Facts`], with the SHA-256 of each of `files` that exists.
pub(super) async fn inspect(remote: &Remote, files: &[String]) -> anyhow::Result<Facts> {
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
pub(super) async fn prepare(remote: &Remote, facts: &Facts) -> anyhow::Result<bool> {
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
