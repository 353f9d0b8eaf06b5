//! The SSH client (russh): connect, verify the host key, authenticate, run commands, and stream
//! a file into a command's stdin.
//!
//! Host keys are never accepted blindly. The server's key is looked up in a known_hosts file
//! (OpenSSH's format, hashed `|1|…` entries and `[host]:port` included):
//! - recorded and equal: accepted;
//! - recorded, but a different key (or only keys of other types): refused, with the command
//!   that removes the stale entry if the instance was really replaced;
//! - not recorded: when fingerprints are expected (`--host-key-fingerprint`, or the ones the
//!   instance printed to its console), the key must match one of them; otherwise it is trusted
//!   on first use. Either way it is recorded, and its fingerprint is shown.
//!
//! Authentication: a key file (`--identity`; an encrypted one asks for its passphrase on the
//! terminal), else the keys of the SSH agent (`SSH_AUTH_SOCK`), else `~/.ssh/id_ed25519`,
//! `id_ecdsa`, `id_rsa`. RSA keys sign with SHA-2 (OpenSSH 8.8 and later refuse SHA-1).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use russh::client::{self, Handle};
use russh::keys::{self, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Preferred};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long connecting (TCP, key exchange, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the pieces a file is streamed in.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Host name or address of the server.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Remote user name.
    pub user: String,
    /// A private key file; `None` tries the agent, then the default key files.
    pub identity: Option<PathBuf>,
    /// The known_hosts file that is checked and appended to.
    pub known_hosts: PathBuf,
    /// SHA-256 fingerprints (`SHA256:…`) a key seen for the first time must match; empty means
    /// trust on first use.
    pub expected_fingerprints: Vec<String>,
    /// How long to keep retrying while the server is not up yet (see [`not_up_yet`]).
    pub connect_wait: Duration,
}

/// How the server's host key was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// It was already recorded in known_hosts.
    Known,
    /// It was not recorded; it matched an expected fingerprint and is now recorded.
    Verified,
    /// It was not recorded and nothing to check it against was given: trusted on first use and
    /// now recorded.
    TrustedOnFirstUse,
}

/// The host key the server presented, and what was decided about it.
#[derive(Debug, Clone)]
pub struct HostKey {
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Its algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// The decision.
    pub status: HostKeyStatus,
}

/// What a remote command did.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Its exit status; `None` when it ended without one (killed by a signal).
    pub status: Option<u32>,
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// An authenticated SSH connection.
pub struct Session {
    handle: Handle<Client>,
    host_key: HostKey,
    target: String,
}

impl Session {
    /// Connects, verifies the host key and authenticates. While the server is not up yet (a
    /// fresh instance's sshd refuses, resets or drops connections for a while after the
    /// instance is "running"), tries again with backoff for up to `opts.connect_wait`.
    pub async fn connect(opts: &SshOptions) -> anyhow::Result<Session> {
        let target = display_target(&opts.host, opts.port);
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(500);
        let mut told = false;
        loop {
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, Session::connect_inner(opts, &target))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::TimedOut)).context(
                        format!(
                            "no SSH connection to {target} within {} s: check the address, that the instance \
                         is running and that its security group lets your address reach port {}",
                            CONNECT_TIMEOUT.as_secs(),
                            opts.port
                        ),
                    ))
                });
            match attempt {
                Err(e) if not_up_yet(&e) && started.elapsed() + pause < opts.connect_wait => {
                    if !told {
                        eprintln!(
                            "SSH on {target} is not answering yet ({}); trying again for up to {} s.",
                            e.root_cause(),
                            opts.connect_wait.as_secs()
                        );
                        told = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    async fn connect_inner(opts: &SshOptions, target: &str) -> anyhow::Result<Session> {
        let host = opts.host.to_ascii_lowercase();
        let recorded = recorded_keys(&opts.known_hosts, &host, opts.port)?;
        let mut preferred = Preferred::default();
        // Ask for the key type already on record first, as OpenSSH does, so a server with
        // several host keys is not mistaken for a changed one.
        let mut algorithms: Vec<keys::Algorithm> = Vec::new();
        for (_, key) in &recorded {
            if !algorithms.contains(&key.algorithm()) {
                algorithms.push(key.algorithm());
            }
        }
        for algorithm in preferred.key.iter() {
            if !algorithms.contains(algorithm) {
                algorithms.push(algorithm.clone());
            }
        }
        preferred.key = algorithms.into();
        // AES-GCM first: with AES instructions it is the fastest cipher for uploads.
        let mut ciphers = vec![russh::cipher::AES_256_GCM];
        ciphers.extend(preferred.cipher.iter().filter(|c| **c != russh::cipher::AES_256_GCM).copied());
        preferred.cipher = ciphers.into();
        let config = Arc::new(client::Config {
            preferred,
            nodelay: true,
            window_size: 16 * 1024 * 1024,
            keepalive_interval: Some(Duration::from_secs(30)),
            ..client::Config::default()
        });
        let decided = Arc::new(Mutex::new(None));
        let handler = Client {
            host,
            port: opts.port,
            known_hosts: opts.known_hosts.clone(),
            expected: opts.expected_fingerprints.clone(),
            decided: decided.clone(),
        };
        let addr = (opts.host.as_str(), opts.port);
        let mut handle = client::connect(config, addr, handler)
            .await
            .with_context(|| format!("cannot connect to {target} over SSH"))?;
        let host_key = decided
            .lock()
            .map_err(|_| anyhow!("internal error: host key check poisoned"))?
            .take()
            .ok_or_else(|| anyhow!("the SSH server at {target} sent no host key"))?;
        authenticate(&mut handle, opts, target).await?;
        Ok(Session { handle, host_key, target: target.to_string() })
    }

    /// The server's host key and how it was judged.
    pub fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// `host` or `[host]:port`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `command` (a shell command line) with no input and collects its output.
    pub async fn exec(&self, command: &str) -> anyhow::Result<Output> {
        self.exec_with_input(command, tokio::io::empty(), |_| {}).await
    }

    /// Runs `command`, streams `input` into its stdin (then closes it), and collects its output.
    /// `progress` is called with the number of bytes sent after each piece.
    pub async fn exec_with_input<R, F>(
        &self,
        command: &str,
        mut input: R,
        mut progress: F,
    ) -> anyhow::Result<Output>
    where
        R: AsyncRead + Unpin,
        F: FnMut(u64),
    {
        let channel = self.open(command).await?;
        let (mut read, write) = channel.split();
        let collect = async move {
            let mut out = Output::default();
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    _ => {}
                }
            }
            out
        };
        let send = async move {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let mut sent = 0u64;
            loop {
                let n = input.read(&mut buf).await.context("cannot read the data to send")?;
                if n == 0 {
                    break;
                }
                // A command that exits early (e.g. a full disk) closes the channel: the error
                // here is then less useful than its exit status and stderr, reported below.
                if write.data(&buf[..n]).await.is_err() {
                    return Ok::<_, anyhow::Error>(false);
                }
                sent += n as u64;
                progress(sent);
            }
            let _ = write.eof().await;
            Ok(true)
        };
        let (out, sent) = tokio::join!(collect, send);
        let complete = sent?;
        if !complete && out.success() {
            bail!("{}: the remote command ended before all data was sent", self.target);
        }
        Ok(out)
    }

    /// Runs `command` and copies its stdout and stderr to ours as they arrive (for `logs -f`);
    /// returns its exit status.
    pub async fn stream(&self, command: &str) -> anyhow::Result<Option<u32>> {
        use std::io::Write;
        let mut channel = self.open(command).await?;
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&data)
                        .and_then(|()| stdout.flush())
                        .context("cannot write to stdout")?;
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    let mut stderr = std::io::stderr().lock();
                    let _ = stderr.write_all(&data).and_then(|()| stderr.flush());
                }
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                _ => {}
            }
        }
        Ok(status)
    }

    async fn open(&self, command: &str) -> anyhow::Result<russh::Channel<client::Msg>> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .with_context(|| format!("{}: cannot open an SSH session channel", self.target))?;
        channel
            .exec(true, command)
            .await
            .with_context(|| format!("{}: cannot start a remote command", self.target))?;
        Ok(channel)
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

/// Whether a failed connection looks like an SSH server that is not up yet: refused, reset,
/// closed before the SSH handshake finished, or no answer in time. A refused host key or
/// login is not: retrying those changes nothing.
fn not_up_yet(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    let transient = |io: &std::io::Error| {
        matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
                | ErrorKind::TimedOut
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
        )
    };
    // russh's I/O errors are `transparent`: the io::Error is inside, not a cause of its own.
    error.chain().any(|cause| match cause.downcast_ref::<russh::Error>() {
        Some(russh::Error::IO(io)) => transient(io),
        Some(russh::Error::Disconnect | russh::Error::ConnectionTimeout) => true,
        Some(_) => false,
        None => cause.downcast_ref::<std::io::Error>().is_some_and(transient),
    })
}

/// `host` for port 22, `[host]:port` otherwise: the form known_hosts uses.
pub fn display_target(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// The keys recorded for `host`:`port` in `known_hosts`, with their line numbers.
fn recorded_keys(known_hosts: &Path, host: &str, port: u16) -> anyhow::Result<Vec<(usize, PublicKey)>> {
    keys::known_hosts::known_host_keys_path(host, port, known_hosts).map_err(|e| {
        anyhow!(
            "cannot read {}: {e} (fix the file or point --known-hosts at another one)",
            known_hosts.display()
        )
    })
}

/// Whether `known_hosts` records any key for `host`:`port` (an unreadable file counts as no).
pub fn is_known(known_hosts: &Path, host: &str, port: u16) -> bool {
    recorded_keys(known_hosts, &host.to_ascii_lowercase(), port).is_ok_and(|keys| !keys.is_empty())
}

/// The SHA-256 host key fingerprints that cloud-init prints to an instance's console, between
/// its `-----BEGIN SSH HOST KEY FINGERPRINTS-----` and `-----END …-----` lines (which may carry
/// a prefix such as `ec2: `).
pub fn console_fingerprints(console: &str) -> Vec<String> {
    let mut inside = false;
    let mut found = Vec::new();
    for line in console.lines() {
        if line.contains("-----BEGIN SSH HOST KEY FINGERPRINTS-----") {
            inside = true;
        } else if line.contains("-----END SSH HOST KEY FINGERPRINTS-----") {
            inside = false;
        } else if inside {
            let fingerprint = line.split_whitespace().find(|w| w.starts_with("SHA256:"));
            if let Some(fingerprint) = fingerprint.filter(|f| !found.iter().any(|seen: &String| seen == f)) {
                found.push(fingerprint.to_string());
            }
        }
    }
    found
}

/// The `SHA256:…` fingerprint of `key`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Decides whether `key`, presented by `host`:`port`, is to be trusted; records it when it is
/// new and acceptable.
pub fn verify_host_key(
    known_hosts: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
    expected: &[String],
) -> anyhow::Result<HostKey> {
    let target = display_target(host, port);
    let fingerprint = fingerprint(key);
    let algorithm = key.algorithm().to_string();
    let recorded = recorded_keys(known_hosts, host, port)?;
    if recorded.iter().any(|(_, k)| k.key_data() == key.key_data()) {
        return Ok(HostKey { fingerprint, algorithm, status: HostKeyStatus::Known });
    }
    if let Some((line, old)) = recorded.first() {
        bail!(
            "the host key of {target} has CHANGED: it is now {algorithm} {fingerprint}, but {file} \
             line {line} records {old_algorithm} {old_fingerprint}. Either the instance was replaced \
             (then remove the old entry with `ssh-keygen -R '{target}' -f {file}` and connect again) \
             or someone is intercepting the connection: regctl refuses to continue.",
            file = known_hosts.display(),
            old_algorithm = old.algorithm(),
            old_fingerprint = self::fingerprint(old),
        );
    }
    let status = if expected.is_empty() {
        HostKeyStatus::TrustedOnFirstUse
    } else if expected.iter().any(|e| e.trim() == fingerprint) {
        HostKeyStatus::Verified
    } else {
        bail!(
            "the host key of {target} ({algorithm} {fingerprint}) matches none of the expected \
             fingerprints ({}): regctl refuses to connect. Check the fingerprints the instance printed \
             (EC2 console output) and the address you connect to.",
            expected.join(", ")
        );
    };
    keys::known_hosts::learn_known_hosts_path(host, port, key, known_hosts)
        .map_err(|e| anyhow!("cannot record the host key of {target} in {}: {e}", known_hosts.display()))?;
    Ok(HostKey { fingerprint, algorithm, status })
}

/// The russh event handler: only the host key check matters here.
struct Client {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    expected: Vec<String>,
    decided: Arc<Mutex<Option<HostKey>>>,
}

impl client::Handler for Client {
    type Error = anyhow::Error;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> anyhow::Result<bool> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            bail!(
                "{} presented a host certificate; regctl checks plain host keys against known_hosts only",
                display_target(&self.host, self.port)
            );
        };
        let decision = verify_host_key(&self.known_hosts, &self.host, self.port, key, &self.expected)?;
        *self.decided.lock().map_err(|_| anyhow!("internal error: host key check poisoned"))? =
            Some(decision);
        Ok(true)
    }
}

/// Tries the identity file, else the agent's keys, else the default key files.
async fn authenticate(handle: &mut Handle<Client>, opts: &SshOptions, target: &str) -> anyhow::Result<()> {
    let user = opts.user.as_str();
    let refused = |what: &str| {
        anyhow!(
            "{target} refused {what} for user {user}: check the user name (--user: ec2-user on Amazon \
             Linux, ubuntu on Ubuntu, admin on Debian) and the key (--identity: the private key of the \
             instance's key pair)"
        )
    };
    if let Some(path) = &opts.identity {
        let key = load_key(path)?;
        if offer_key(handle, user, key).await? {
            return Ok(());
        }
        return Err(refused(&format!("the key {}", path.display())));
    }
    let mut tried = Vec::new();
    if let Ok(mut agent) = keys::agent::client::AgentClient::connect_env().await {
        let identities = agent.request_identities().await.unwrap_or_default();
        for identity in identities {
            let key = identity.public_key().into_owned();
            let hash = rsa_hash(handle, &key).await?;
            // A key the agent cannot sign with is skipped like a refused one.
            if let Ok(result) = handle.authenticate_publickey_with(user, key, hash, &mut agent).await
                && result.success()
            {
                return Ok(());
            }
        }
        tried.push("the SSH agent's keys".to_string());
    }
    let ssh_dir = std::env::home_dir().map(|home| home.join(".ssh"));
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let Some(path) = ssh_dir.as_ref().map(|dir| dir.join(name)).filter(|p| p.is_file()) else {
            continue;
        };
        let key = load_key(&path)?;
        if offer_key(handle, user, key).await? {
            return Ok(());
        }
        tried.push(path.display().to_string());
    }
    if tried.is_empty() {
        bail!(
            "no SSH key to log in to {target} with: pass --identity FILE (the private key of the \
             instance's key pair), or load it into ssh-agent (ssh-add FILE)"
        );
    }
    Err(refused(&tried.join(", ")))
}

/// Offers a private key; true when the server accepted it.
async fn offer_key(handle: &mut Handle<Client>, user: &str, key: PrivateKey) -> anyhow::Result<bool> {
    let hash = rsa_hash(handle, key.public_key()).await?;
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
    let result = handle.authenticate_publickey(user, key).await.context("SSH authentication failed")?;
    Ok(result.success())
}

/// The signature hash for an RSA key: the best the server announces, SHA-256 when it announces
/// nothing (OpenSSH 8.8 and later refuse SHA-1 signatures).
async fn rsa_hash(handle: &Handle<Client>, key: &PublicKey) -> anyhow::Result<Option<HashAlg>> {
    if !key.algorithm().is_rsa() {
        return Ok(None);
    }
    let best = handle.best_supported_rsa_hash().await.context("SSH negotiation failed")?;
    Ok(best.unwrap_or(Some(HashAlg::Sha256)))
}

/// Reads a private key file, asking for its passphrase on the terminal when it is encrypted.
fn load_key(path: &Path) -> anyhow::Result<PrivateKey> {
    match keys::load_secret_key(path, None) {
        Ok(key) => Ok(key),
        Err(keys::Error::KeyIsEncrypted) => {
            if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                bail!(
                    "the key {} is encrypted and there is no terminal to ask for its passphrase: load it \
                     into ssh-agent (ssh-add {}) and run again without --identity",
                    path.display(),
                    path.display()
                );
            }
            let passphrase = dialoguer::Password::new()
                .with_prompt(format!("Passphrase for {}", path.display()))
                .allow_empty_password(true)
                .interact()
                .context("cannot read the passphrase")?;
            keys::load_secret_key(path, Some(&passphrase))
                .map_err(|e| anyhow!("cannot decrypt {} ({e}): wrong passphrase?", path.display()))
        }
        Err(e) => Err(anyhow!(
            "cannot read the SSH key {}: {e} (it must be an OpenSSH, PKCS#8 or PEM private key)",
            path.display()
        )),
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=@+,".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let keypair = keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        PublicKey::from(keys::ssh_key::public::Ed25519PublicKey::from(&keypair.private))
    }

    #[test]
    fn unknown_is_recorded_known_is_accepted_changed_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        let first = verify_host_key(&file, "127.0.0.1", 2222, &key(1), &[]).expect("first use");
        assert_eq!(first.status, HostKeyStatus::TrustedOnFirstUse);
        let text = std::fs::read_to_string(&file).expect("recorded");
        assert!(text.trim_start().starts_with("[127.0.0.1]:2222 ssh-ed25519 "), "{text}");
        let again = verify_host_key(&file, "127.0.0.1", 2222, &key(1), &[]).expect("known");
        assert_eq!(again.status, HostKeyStatus::Known);
        let changed = verify_host_key(&file, "127.0.0.1", 2222, &key(2), &[]).expect_err("changed");
        assert!(changed.to_string().contains("CHANGED"), "{changed}");
        assert!(changed.to_string().contains("ssh-keygen -R '[127.0.0.1]:2222'"), "{changed}");
        // Another port of the same host is another entry.
        let other = verify_host_key(&file, "127.0.0.1", 22, &key(2), &[]).expect("other port");
        assert_eq!(other.status, HostKeyStatus::TrustedOnFirstUse);
    }

    #[test]
    fn expected_fingerprints_decide_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        let wrong = vec![fingerprint(&key(9))];
        assert!(verify_host_key(&file, "h", 22, &key(3), &wrong).is_err());
        assert!(!file.exists(), "a refused key is not recorded");
        let right = vec![fingerprint(&key(9)), fingerprint(&key(3))];
        let ok = verify_host_key(&file, "h", 22, &key(3), &right).expect("verified");
        assert_eq!(ok.status, HostKeyStatus::Verified);
        assert!(ok.fingerprint.starts_with("SHA256:"));
    }

    #[test]
    fn cloud_init_fingerprints_are_found_in_console_output() {
        let console = "[   10.1] cloud-init[1234]: boot\n\
            ec2: #############################################################\n\
            ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n\
            ec2: 256 SHA256:AbCdEf0123456789abcdef0123456789abcdef01234 no comment (ECDSA)\n\
            ec2: 256 SHA256:ZyXw9876543210zyxw9876543210zyxw98765432109 no comment (ED25519)\n\
            ec2: -----END SSH HOST KEY FINGERPRINTS-----\n\
            later SHA256:NotAHostKeyFingerprint\n";
        assert_eq!(
            console_fingerprints(console),
            [
                "SHA256:AbCdEf0123456789abcdef0123456789abcdef01234",
                "SHA256:ZyXw9876543210zyxw9876543210zyxw98765432109"
            ]
        );
        assert!(console_fingerprints("no cloud-init here").is_empty());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/var/lib/regctl"), "/var/lib/regctl");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
