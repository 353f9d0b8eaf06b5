//! The instance as `deploy`, the user commands and `logs` see it: an SSH session, where regctl's
//! files live under a root directory, and how commands get root's rights (directly, through
//! `sudo -n`, or not at all when the whole tree belongs to the SSH user).

use anyhow::{anyhow, bail};
use tokio::io::AsyncRead;

use crate::exit::Failure;
use crate::ssh::{HostKeyStatus, Output, Session, SshOptions, shell_quote};

/// Name of the systemd unit of the registry server.
pub const SERVICE: &str = "regctl-registry";

/// Where regctl keeps its files on the instance, below a root directory (`/` on a real
/// instance; a scratch directory to deploy as an unprivileged user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// The layout below `root`, which must be an absolute path without whitespace or quotes
    /// (it ends up in a systemd unit line).
    pub fn new(root: &str) -> anyhow::Result<Layout> {
        if !root.starts_with('/') || root.chars().any(|c| c.is_whitespace() || "\"'\\$`%".contains(c)) {
            bail!("--remote-root must be an absolute path without spaces, quotes, `$` or `%` (got {root:?})");
        }
        Ok(Layout { root: root.trim_end_matches('/').to_string() })
    }

    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    /// The registry server executable (`regctl-registry`, or a `regctl` given as the server).
    pub fn binary(&self) -> String {
        self.path("/usr/local/bin/regctl-registry")
    }

    /// Directory of the configuration, htpasswd file and certificate files.
    pub fn config_dir(&self) -> String {
        self.path("/etc/regctl")
    }

    /// The server's configuration file.
    pub fn config(&self) -> String {
        self.path("/etc/regctl/config.toml")
    }

    /// The htpasswd file of the registry's users.
    pub fn htpasswd(&self) -> String {
        self.path("/etc/regctl/htpasswd")
    }

    /// The certificate chain, when certificate files are deployed.
    pub fn tls_cert(&self) -> String {
        self.path("/etc/regctl/tls/fullchain.pem")
    }

    /// The certificate's private key, when certificate files are deployed.
    pub fn tls_key(&self) -> String {
        self.path("/etc/regctl/tls/key.pem")
    }

    /// The `n`th root CA (from 0) trusted for a private ACME directory's HTTPS, when some
    /// are deployed.
    pub fn acme_ca_root(&self, n: usize) -> String {
        match n {
            0 => self.path("/etc/regctl/acme-ca.pem"),
            n => self.path(&format!("/etc/regctl/acme-ca-{n}.pem")),
        }
    }

    /// The only directory the service may write: ACME cache, filesystem storage.
    pub fn state_dir(&self) -> String {
        self.path("/var/lib/regctl")
    }

    /// The systemd unit file.
    pub fn unit(&self) -> String {
        self.path(&format!("/etc/systemd/system/{SERVICE}.service"))
    }
}

/// How to reach the instance and where regctl's files are on it.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The SSH connection.
    pub ssh: SshOptions,
    /// Where the files are.
    pub layout: Layout,
    /// Run privileged commands through `sudo -n` when the SSH user is not root.
    pub sudo: bool,
    /// The account the service runs as (created by `deploy`; owner of the htpasswd file).
    pub service_user: String,
}

/// How privileged commands run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Privilege {
    /// The SSH user is root.
    Root,
    /// Through `sudo -n`.
    Sudo,
    /// As the SSH user (`--no-sudo`): its own files only, and no change of owner.
    User,
}

/// A connected instance.
pub struct Remote {
    session: Session,
    privilege: Privilege,
    /// Where the files are.
    pub layout: Layout,
    /// The service's account.
    pub service_user: String,
}

impl Remote {
    /// Connects (reporting a new host key on stderr) and finds out whether the user is root.
    pub async fn connect(opts: &RemoteOptions) -> anyhow::Result<Remote> {
        Remote::connect_inner(opts).await.map_err(|e| Failure::Remote.mark(e))
    }

    async fn connect_inner(opts: &RemoteOptions) -> anyhow::Result<Remote> {
        let session = Session::connect(&opts.ssh).await?;
        let key = session.host_key();
        match key.status {
            HostKeyStatus::Known => {}
            HostKeyStatus::Verified => eprintln!(
                "Host key of {} verified: {} {} (recorded in {}).",
                session.target(),
                key.algorithm,
                key.fingerprint,
                opts.ssh.known_hosts.display()
            ),
            HostKeyStatus::TrustedOnFirstUse => eprintln!(
                "First connection to {}: trusting its host key {} {} and recording it in {}. If that \
                 is not the instance's key (see its console output), remove the entry and stop here.",
                session.target(),
                key.algorithm,
                key.fingerprint,
                opts.ssh.known_hosts.display()
            ),
        }
        let id = session.exec("id -u").await?;
        let uid = id.stdout_text();
        let privilege = match (uid.trim(), opts.sudo) {
            ("0", _) => Privilege::Root,
            (_, true) => Privilege::Sudo,
            (_, false) => Privilege::User,
        };
        let remote = Remote {
            session,
            privilege,
            layout: opts.layout.clone(),
            service_user: opts.service_user.clone(),
        };
        if privilege == Privilege::Sudo {
            let check = remote.session.exec("sudo -n true").await?;
            if !check.success() {
                bail!(
                    "{} user {} is not root and cannot use sudo without a password ({}): give it \
                     passwordless sudo, log in as root (--user root), or pass --no-sudo with a \
                     --remote-root the user owns",
                    remote.session.target(),
                    opts.ssh.user,
                    check.stderr_text()
                );
            }
        }
        Ok(remote)
    }

    /// The SSH session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether files can be given to another owner (root, directly or through sudo).
    pub fn privileged(&self) -> bool {
        self.privilege != Privilege::User
    }

    /// `script` as a command line run with the rights regctl needs.
    pub fn command(&self, script: &str) -> String {
        match self.privilege {
            Privilege::Sudo => format!("sudo -n sh -c {}", shell_quote(script)),
            Privilege::Root | Privilege::User => format!("sh -c {}", shell_quote(script)),
        }
    }

    /// Runs `script` with the needed rights and collects its output.
    pub async fn run(&self, script: &str) -> anyhow::Result<Output> {
        self.session.exec(&self.command(script)).await.map_err(|e| Failure::Remote.mark(e))
    }

    /// Runs `script`; fails with its stderr, saying it was trying to `what`, unless it succeeds.
    /// Returns its stdout.
    pub async fn run_ok(&self, what: &str, script: &str) -> anyhow::Result<String> {
        let out = self.run(script).await?;
        check(&out, self.session.target(), what)?;
        Ok(out.stdout_text())
    }

    /// Writes `input` to `path` atomically: into a temporary file in the same directory, which
    /// gets `mode` (and `owner`, when privileged) and, when `size` is given, must have exactly
    /// that many bytes (a dropped connection ends the input early), then is renamed over `path`. The content travels on the channel's stdin, never on a
    /// command line.
    pub async fn write_file<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        mode: &str,
        owner: Option<&str>,
        size: Option<u64>,
        input: R,
        progress: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let script = self.write_script(path, mode, owner, size);
        let out = self
            .session
            .exec_with_input(&self.command(&script), input, progress)
            .await
            .map_err(|e| Failure::Remote.mark(e))?;
        check(&out, self.session.target(), &format!("write {path}"))
    }

    /// The shell script behind [`Remote::write_file`].
    pub fn write_script(&self, path: &str, mode: &str, owner: Option<&str>, size: Option<u64>) -> String {
        let (dir, name) = path.rsplit_once('/').unwrap_or((".", path));
        let dir = if dir.is_empty() { "/" } else { dir };
        let mut script = format!(
            "set -e; mkdir -p {qdir}; umask 077; tmp=$(mktemp {qtmp}); trap 'rm -f \"$tmp\"' EXIT; ",
            qdir = shell_quote(dir),
            qtmp = shell_quote(&format!("{dir}/.{name}.XXXXXX")),
        );
        script.push_str("cat > \"$tmp\"; ");
        if let Some(size) = size {
            // SSH guarantees the bytes are intact; a dropped connection ends `cat` early, though.
            script.push_str(&format!(
                "[ \"$(wc -c < \"$tmp\")\" -eq {size} ] || {{ echo 'the upload is incomplete (connection \
                 lost or disk full?): try again' >&2; exit 1; }}; "
            ));
        }
        script.push_str(&format!("chmod {mode} \"$tmp\"; "));
        if let (Some(owner), true) = (owner, self.privileged()) {
            script.push_str(&format!("chown {} \"$tmp\"; ", shell_quote(&format!("{owner}:"))));
        }
        script.push_str(&format!("mv -f \"$tmp\" {}; trap - EXIT", shell_quote(path)));
        script
    }

    /// Reads a file; `None` when it does not exist.
    pub async fn read_file(&self, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let q = shell_quote(path);
        let out = self.run(&format!("if [ -e {q} ]; then cat {q}; else exit 3; fi")).await?;
        match out.status {
            Some(0) => Ok(Some(out.stdout)),
            Some(3) => Ok(None),
            _ => Err(Failure::Remote.mark(anyhow!(
                "{}: cannot read {path}: {}",
                self.session.target(),
                out.stderr_text()
            ))),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.session.close().await;
    }
}

/// Fails with the command's stderr unless it succeeded.
pub fn check(out: &Output, target: &str, what: &str) -> anyhow::Result<()> {
    if out.success() {
        return Ok(());
    }
    let status = out.status.map_or_else(|| "killed by a signal".to_string(), |s| format!("exit status {s}"));
    let stderr = out.stderr_text();
    let error = if stderr.is_empty() {
        anyhow!("{target}: cannot {what} ({status})")
    } else {
        anyhow!("{target}: cannot {what} ({status}): {stderr}")
    };
    Err(Failure::Remote.mark(error))
}
