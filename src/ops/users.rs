//! The registry's users and tokens: bcrypt and token entries in an htpasswd file, each with
//! the rule line of its access ([`regctl_registry::auth::access`]), on the instance (over SSH),
//! in a local file (for `regctl serve`), or in an S3 bucket that several servers share
//! (`regctl serve --users-in-storage`), where each edit is a conditional write (`If-Match`)
//! read and made again when another edit got in first, so that concurrent edits are not lost.
//!
//! Passwords come from a hidden prompt (asked twice) or from stdin, never from the command
//! line; a token's secret is made here, printed once and never stored: only its SHA-256 is.
//! Only hashes leave this process, and on the instance they travel on the SSH
//! channel's stdin into a temporary file that is renamed over the old one (mode 0600, owned by
//! the service user), so the running server, which re-reads the file when it changes, never
//! sees half a file and needs no restart.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use regctl_registry::auth::access::{Access, Grant, RepoGlob, rule_name};
use regctl_registry::auth::{
    Entry, Secret, TOKEN_SCHEME, USERS_PATH, parse_htpasswd, token_digest, users_path,
};
use regctl_registry::config::S3Config;
use regctl_registry::storage::{Condition, ETag, S3Storage, Storage};
use serde::Serialize;

use crate::ops::remote::{Remote, RemoteOptions};

/// Lowest bcrypt cost accepted (below it, hashes are cheap to brute-force).
pub const MIN_COST: u32 = 10;
/// bcrypt's limit: longer passwords would be silently truncated, so they are refused.
const MAX_PASSWORD_BYTES: usize = 72;

/// Where a new password comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// All of stdin, without its final line break (as `docker login --password-stdin`).
    Stdin,
    /// A hidden prompt on the terminal, asked twice.
    Prompt,
}

/// Which htpasswd file to work on.
#[derive(Debug, Clone)]
pub enum Target {
    /// A local file.
    Local(PathBuf),
    /// The file of the deployed registry.
    Remote(RemoteOptions),
    /// The users kept in a bucket, for servers with `instorage = true`.
    Bucket(S3Config),
}

/// How many times an edit of the users in a bucket is read and made again when another edit
/// changed them meanwhile.
const EDIT_ATTEMPTS: usize = 10;

/// Options of `add-user`.
#[derive(Debug, Clone)]
pub struct AddUserOptions {
    /// The file.
    pub target: Target,
    /// The user name.
    pub user: String,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// bcrypt cost (at least [`MIN_COST`]).
    pub cost: u32,
    /// The access to grant: given levels and globs; `None` keeps an existing user's access
    /// and gives a new one [`default_user_grant`].
    pub grant: Option<Grant>,
}

/// Options of `add-token`.
#[derive(Debug, Clone)]
pub struct AddTokenOptions {
    /// The file.
    pub target: Target,
    /// The name the token is used with, as a user name.
    pub name: String,
    /// What it may do; `expires` is set from [`AddTokenOptions::lifetime`].
    pub access: Access,
    /// The repositories (every one when empty).
    pub repos: Vec<RepoGlob>,
    /// How long it works, if not forever.
    pub lifetime: Option<Duration>,
}

/// What `add-user` grants a new user when no `--access`/`--repo` is given: push on every
/// repository.
pub fn default_user_grant() -> Grant {
    Grant { access: Access::Push, repos: vec![RepoGlob::everything()], expires: None }
}

/// The grant of `--access` and `--repo`: the level (default `default`) on the globs (every
/// repository when none).
pub fn grant_of(access: Option<Access>, repos: Vec<RepoGlob>, default: Access) -> Grant {
    let repos = if repos.is_empty() { vec![RepoGlob::everything()] } else { repos };
    Grant { access: access.unwrap_or(default), repos, expires: None }
}

/// What a user command did to the user (in JSON: `created`, `updated`, `removed`, `absent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserOutcome {
    /// A new user.
    Created,
    /// An existing user with a new password.
    Updated,
    /// The user was removed.
    Removed,
    /// There was no such user to remove.
    Absent,
}

impl UserOutcome {
    /// The word of the JSON output and the message.
    pub fn as_str(self) -> &'static str {
        match self {
            UserOutcome::Created => "created",
            UserOutcome::Updated => "updated",
            UserOutcome::Removed => "removed",
            UserOutcome::Absent => "absent",
        }
    }
}

impl std::fmt::Display for UserOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a user command did.
#[derive(Debug, Clone, Serialize)]
pub struct UserChange {
    /// The user.
    pub user: String,
    /// What became of the user.
    pub outcome: UserOutcome,
    /// The file changed: a local path, or `host:path` on the instance.
    pub file: String,
}

/// Checks a user name: not empty, no `:` (the htpasswd separator), no whitespace or control
/// characters, at most 255 bytes.
pub fn validate_user_name(user: &str) -> anyhow::Result<()> {
    if user.is_empty()
        || user.len() > 255
        || user.contains(':')
        || user.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "invalid user name {user:?}: use 1 to 255 characters without ':', spaces or control characters"
        );
    }
    Ok(())
}

/// Reads a new password for `user`.
pub fn read_password(source: PasswordSource, user: &str) -> anyhow::Result<String> {
    let password = match source {
        PasswordSource::Stdin => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read the password from stdin")?;
            let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            text.to_string()
        }
        PasswordSource::Prompt => {
            if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                bail!(
                    "no terminal to ask for the password of {user}: pass --password-stdin and write the \
                     password on stdin (e.g. `printf '%s' \"$PASSWORD\" | regctl ... --password-stdin`)"
                );
            }
            dialoguer::Password::new()
                .with_prompt(format!("Password for {user}"))
                .with_confirmation("Repeat the password", "The passwords do not match; try again.")
                .interact()
                .context("cannot read the password")?
        }
    };
    if password.is_empty() {
        bail!("the password of {user} is empty: give a non-empty password");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("the password of {user} is longer than bcrypt's {MAX_PASSWORD_BYTES} bytes: use a shorter one");
    }
    Ok(password)
}

/// The bcrypt hash of `password` at `cost`.
pub fn hash_password(password: &str, cost: u32) -> anyhow::Result<String> {
    if !(MIN_COST..=31).contains(&cost) {
        bail!("bcrypt cost {cost} is out of range: use {MIN_COST} to 31 (each step doubles the work)");
    }
    // bcrypt keys on at most 72 bytes: a password of 72 is used whole (bcrypt then drops the
    // C string terminator it otherwise appends), a longer one would be cut, so it is refused
    // (`read_password` says so first, naming the user). Not `non_truncating_hash`: it counts
    // the terminator and refuses a 72-byte password with "found 73 bytes".
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("the password is longer than bcrypt's {MAX_PASSWORD_BYTES} bytes: use a shorter one");
    }
    bcrypt::hash(password, cost).map_err(|e| anyhow!("cannot hash the password: {e}"))
}

/// `text` with `user`'s entry set to `hash` (replaced in place, or appended), followed by the
/// rule line of `grant` (replacing any it had; with `None` the old rule line, if any, stays
/// where it was); comments and other entries are kept as they are.
pub fn set_entry(text: &str, user: &str, hash: &str, grant: Option<&Grant>) -> String {
    let mut entry = format!("{user}:{hash}\n");
    if let Some(grant) = grant {
        entry.push_str(&grant.rule_line(user));
        entry.push('\n');
    }
    let mut out = String::with_capacity(text.len() + entry.len());
    let mut replaced = false;
    for line in text.lines() {
        if entry_user(line) == Some(user) {
            if !replaced {
                out.push_str(&entry);
                replaced = true;
            }
        } else if !(grant.is_some() && rule_user(line) == Some(user)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&entry);
    }
    out
}

/// `text` without `user`'s entry and rule line; `None` when it has no entry.
pub fn remove_entry(text: &str, user: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for line in text.lines() {
        if entry_user(line) == Some(user) {
            found = true;
        } else if rule_user(line) != Some(user) {
            out.push_str(line);
            out.push('\n');
        }
    }
    found.then_some(out)
}

fn entry_user(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user)
}

/// The name a rule line is for (read as the server reads it).
fn rule_user(line: &str) -> Option<&str> {
    rule_name(line.trim())
}

/// A new token's secret: 256 random bits from the system's CSPRNG (through aws-lc), in hex
/// behind a `regctl_` prefix that secret scanners can look for.
pub fn new_token_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system's random number generator failed"))?;
    Ok(format!("regctl_{}", hex::encode(bytes)))
}

/// One user or token, as `list-users` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The name.
    pub name: String,
    /// `user` (a password) or `token`.
    pub kind: &'static str,
    /// Its level: `pull`, `push` or `delete`.
    pub access: &'static str,
    /// Its repository globs.
    pub repos: Vec<String>,
    /// When it stops working (RFC 3339), if ever.
    pub expires: Option<String>,
    /// Whether it has already stopped working.
    pub expired: bool,
}

impl UserInfo {
    fn of(name: String, entry: &Entry, now: SystemTime) -> UserInfo {
        let kind = match entry.secret {
            Secret::Bcrypt(_) => "user",
            Secret::Token(_) => "token",
        };
        UserInfo {
            name,
            kind,
            access: entry.grant.access.as_str(),
            repos: entry.grant.repos.iter().map(|glob| glob.to_string()).collect(),
            expires: entry.grant.expires.map(|at| humantime::format_rfc3339_seconds(at).to_string()),
            expired: entry.grant.expired(now),
        }
    }
}

/// The users and tokens of htpasswd `text` (read from `path`), sorted by name.
pub fn user_infos(text: &str, path: &Path) -> anyhow::Result<Vec<UserInfo>> {
    let now = SystemTime::now();
    let mut users: Vec<UserInfo> = parse_htpasswd(text, path)?
        .into_iter()
        .map(|(name, entry)| UserInfo::of(name, &entry, now))
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

/// The user names in htpasswd `text` (read from `path`), sorted; a malformed file is an error.
pub fn user_names(text: &str, path: &Path) -> anyhow::Result<Vec<String>> {
    let mut users: Vec<String> = parse_htpasswd(text, path)?.into_keys().collect();
    users.sort();
    Ok(users)
}

/// An htpasswd file being edited: its current text, and how to replace it.
enum File {
    Local(PathBuf),
    Remote(Box<Remote>),
    Stored { storage: Arc<dyn Storage>, name: String },
}

impl File {
    async fn open(target: &Target) -> anyhow::Result<File> {
        Ok(match target {
            Target::Local(path) => File::Local(path.clone()),
            Target::Remote(opts) => File::Remote(Box::new(Remote::connect(opts).await?)),
            Target::Bucket(config) => {
                let prefix = config.rootdirectory.trim_matches('/');
                let key = USERS_PATH.join("/");
                let name = if prefix.is_empty() {
                    format!("s3://{}/{key}", config.bucket)
                } else {
                    format!("s3://{}/{prefix}/{key}", config.bucket)
                };
                File::Stored { storage: Arc::new(S3Storage::new(config).await), name }
            }
        })
    }

    fn name(&self) -> String {
        match self {
            File::Local(path) => path.display().to_string(),
            File::Remote(remote) => format!("{}:{}", remote.session().target(), remote.layout.htpasswd()),
            File::Stored { name, .. } => name.clone(),
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            File::Local(path) => path.clone(),
            File::Remote(remote) => PathBuf::from(remote.layout.htpasswd()),
            File::Stored { name, .. } => PathBuf::from(name),
        }
    }

    /// The current text (empty when the file does not exist yet) and, in a bucket, its
    /// version (`None` when absent).
    async fn read(&self) -> anyhow::Result<(String, Option<ETag>)> {
        let (bytes, version) = match self {
            File::Local(path) => match std::fs::read(path) {
                Ok(bytes) => (bytes, None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            },
            File::Remote(remote) => {
                (remote.read_file(&remote.layout.htpasswd()).await?.unwrap_or_default(), None)
            }
            File::Stored { storage, name } => match storage.get_tagged(&users_path()).await {
                Ok((bytes, tag)) => (bytes.to_vec(), Some(tag)),
                Err(e) if e.is_not_found() => (Vec::new(), None),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {name} (needs \"s3:GetObject\")"));
                }
            },
        };
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", self.name()))?;
        // Refuse to edit a file the server would not load: the edit would hide the problem.
        parse_htpasswd(&text, &self.path()).with_context(|| format!("fix {} first", self.name()))?;
        Ok((text, version))
    }

    /// Replaces the file atomically with `text` (mode 0600); in a bucket only if it is still
    /// of `version` (absent for `None`): false when another edit changed it since.
    async fn write(&self, text: &str, version: Option<&ETag>) -> anyhow::Result<bool> {
        match self {
            File::Local(path) => write_local(path, text.as_bytes())?,
            File::Remote(remote) => write_remote(remote, text).await?,
            File::Stored { storage, name } => {
                let condition = version.map_or(Condition::Absent, Condition::Unchanged);
                match storage.put_if(&users_path(), text.as_bytes().to_vec().into(), condition).await {
                    Ok(_) => {}
                    Err(e) if e.is_precondition() => return Ok(false),
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot write {name} (needs \"s3:PutObject\")"));
                    }
                }
            }
        }
        Ok(true)
    }

    /// Reads the file, lets `change` make the new text from it (`None`: nothing to write) with
    /// its outcome, and writes it. In a bucket, when another edit got in between, reads and
    /// changes it again, so that neither edit is lost.
    async fn edit<R>(
        &self,
        mut change: impl FnMut(&str) -> anyhow::Result<(Option<String>, R)>,
    ) -> anyhow::Result<R> {
        for _ in 0..EDIT_ATTEMPTS {
            let (text, version) = self.read().await?;
            let (new, outcome) = change(&text)?;
            let Some(new) = new else { return Ok(outcome) };
            if self.write(&new, version.as_ref()).await? {
                return Ok(outcome);
            }
        }
        bail!("{} kept changing while being edited ({EDIT_ATTEMPTS} attempts): try again", self.name())
    }

    async fn close(self) {
        if let File::Remote(remote) = self {
            remote.close().await;
        }
    }
}

/// Replaces the htpasswd file on the instance with `text`: mode 0600, owned by the service user.
pub async fn write_remote(remote: &Remote, text: &str) -> anyhow::Result<()> {
    let owner = remote.service_user.clone();
    remote.write_file(&remote.layout.htpasswd(), "0600", Some(&owner), None, text.as_bytes(), |_| {}).await
}

/// Writes `bytes` to `path` atomically with mode 0600: a new file beside it, synced, renamed.
pub fn write_local(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Adds `user`, or sets a new password for an existing one.
pub async fn add_user(opts: &AddUserOptions) -> anyhow::Result<UserChange> {
    validate_user_name(&opts.user)?;
    if !(MIN_COST..=31).contains(&opts.cost) {
        bail!("bcrypt cost {} is out of range: use {MIN_COST} to 31", opts.cost);
    }
    let password = read_password(opts.password, &opts.user)?;
    let cost = opts.cost;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password, cost))
        .await
        .context("the password hashing task failed")??;
    let file = File::open(&opts.target).await?;
    let result = file
        .edit(|text| {
            let existing = parse_htpasswd(text, &file.path())?.remove(&opts.user);
            if let Some(Entry { secret: Secret::Token(_), .. }) = existing {
                bail!(
                    "{} is a token: remove it first (regctl remove-user {0}) to make a user of that name",
                    opts.user
                );
            }
            // An existing user keeps its access unless new access is given: setting a password
            // must not take the admin's `delete` away.
            let grant = match (&opts.grant, &existing) {
                (Some(grant), _) => Some(grant.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(default_user_grant()),
            };
            let outcome = if existing.is_some() { UserOutcome::Updated } else { UserOutcome::Created };
            Ok((Some(set_entry(text, &opts.user, &hash, grant.as_ref())), outcome))
        })
        .await
        .map(|outcome| UserChange { user: opts.user.clone(), outcome, file: file.name() });
    file.close().await;
    result
}

/// Adds a token named `opts.name` (or replaces that token, whose old secret stops working):
/// returns the change and the new secret, which is not stored anywhere.
pub async fn add_token(opts: &AddTokenOptions) -> anyhow::Result<(UserChange, String)> {
    validate_user_name(&opts.name)?;
    let expires =
        match opts.lifetime {
            Some(lifetime) => Some(SystemTime::now().checked_add(lifetime).ok_or_else(|| {
                anyhow!("--expires {} is too far away", humantime::format_duration(lifetime))
            })?),
            None => None,
        };
    let grant = Grant { expires, ..grant_of(Some(opts.access), opts.repos.clone(), opts.access) };
    let secret = new_token_secret()?;
    let hash = format!("{TOKEN_SCHEME}{}", hex::encode(token_digest(&secret)));
    let file = File::open(&opts.target).await?;
    let result = file
        .edit(|text| {
            let existing = parse_htpasswd(text, &file.path())?.remove(&opts.name);
            if let Some(Entry { secret: Secret::Bcrypt(_), .. }) = existing {
                bail!("{} is a user with a password: give the token another name", opts.name);
            }
            let outcome = if existing.is_some() { UserOutcome::Updated } else { UserOutcome::Created };
            Ok((Some(set_entry(text, &opts.name, &hash, Some(&grant))), outcome))
        })
        .await
        .map(|outcome| UserChange { user: opts.name.clone(), outcome, file: file.name() });
    file.close().await;
    Ok((result?, secret))
}

/// Removes `user` (or token) and its rule line; one that does not exist is reported as
/// `absent`, not an error.
pub async fn remove_user(target: &Target, user: &str) -> anyhow::Result<UserChange> {
    validate_user_name(user)?;
    let file = File::open(target).await?;
    let result = file
        .edit(|text| match remove_entry(text, user) {
            Some(rest) => {
                let empty = user_names(&rest, &file.path())?.is_empty();
                Ok((Some(rest), (UserOutcome::Removed, empty)))
            }
            None => Ok((None, (UserOutcome::Absent, false))),
        })
        .await
        .map(|(outcome, empty)| {
            if empty {
                eprintln!("Note: {} has no users left: every request will be refused.", file.name());
            }
            UserChange { user: user.to_string(), outcome, file: file.name() }
        });
    file.close().await;
    result
}

/// The users and tokens, sorted by name.
pub async fn list_users(target: &Target) -> anyhow::Result<Vec<UserInfo>> {
    let file = File::open(target).await?;
    let result = async { user_infos(&file.read().await?.0, &file.path()) }.await;
    file.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "$2y$10$id9uOh0KY5BfSNS91ACQzeoTDpuRoG88jXHPfcEDqrL0IePQg0tN6";
    const H2: &str = "$2b$10$id9uOh0KY5BfSNS91ACQzeoTDpuRoG88jXHPfcEDqrL0IePQg0tN6";

    #[test]
    fn entries_are_set_replaced_and_removed_keeping_the_rest() {
        let text = "# users\nalice:H\n";
        let text = text.replace('H', H1);
        let added = set_entry(&text, "bob", H2, None);
        assert_eq!(added, format!("# users\nalice:{H1}\nbob:{H2}\n"));
        let replaced = set_entry(&added, "alice", H2, None);
        assert_eq!(replaced, format!("# users\nalice:{H2}\nbob:{H2}\n"));
        assert_eq!(user_names(&replaced, Path::new("h")).expect("valid"), ["alice", "bob"]);
        let removed = remove_entry(&replaced, "alice").expect("alice was there");
        assert_eq!(removed, format!("# users\nbob:{H2}\n"));
        assert_eq!(remove_entry(&removed, "alice"), None);
        assert_eq!(set_entry("", "a", H1, None), format!("a:{H1}\n"));
    }

    /// Issue 19: each entry's rule line follows it, is replaced with new access, kept without,
    /// and removed with the entry; only its own name's rule line is touched.
    #[test]
    fn rule_lines_follow_their_entries() {
        let glob = |s: &str| s.parse::<RepoGlob>().expect("glob");
        let reader = grant_of(Some(Access::Pull), vec![glob("team/*"), glob("app")], Access::Push);
        let text =
            set_entry(&format!("alice:{H1}\n#!regctl alice access=delete\n"), "bob", H2, Some(&reader));
        assert_eq!(
            text,
            format!(
                "alice:{H1}\n#!regctl alice access=delete\nbob:{H2}\n#!regctl bob access=pull repos=team/*,app\n"
            )
        );
        // A new password without new access keeps the rule line; new access replaces it.
        assert_eq!(
            set_entry(&text, "alice", H2, None),
            text.replace(&format!("alice:{H1}"), &format!("alice:{H2}"))
        );
        let pusher = default_user_grant();
        let changed = set_entry(&text, "alice", H1, Some(&pusher));
        assert!(
            changed.contains("#!regctl alice access=push\n") && !changed.contains("access=delete"),
            "{changed}"
        );
        let infos = user_infos(&changed, Path::new("h")).expect("valid");
        assert_eq!(infos[1].repos, ["team/*", "app"]);
        assert_eq!((infos[0].kind, infos[0].access), ("user", "push"));
        let removed = remove_entry(&changed, "bob").expect("bob was there");
        assert!(!removed.contains("bob"), "{removed}");
        assert_eq!(user_names(&removed, Path::new("h")).expect("valid"), ["alice"]);
    }

    #[test]
    fn token_secrets_are_long_random_and_stored_only_as_a_digest() {
        let (a, b) = (new_token_secret().expect("secret"), new_token_secret().expect("secret"));
        assert_ne!(a, b);
        assert_eq!(a.len(), "regctl_".len() + 64, "256 bits in hex: {a}");
        let hash = format!("{TOKEN_SCHEME}{}", hex::encode(token_digest(&a)));
        let text = set_entry("", "ci", &hash, Some(&grant_of(None, Vec::new(), Access::Pull)));
        assert!(!text.contains(&a[7..]), "{text}");
        let infos = user_infos(&text, Path::new("h")).expect("valid");
        assert_eq!((infos[0].kind, infos[0].access, infos[0].expired), ("token", "pull", false));
    }

    #[test]
    fn names_and_costs_are_checked() {
        assert!(validate_user_name("ci-bot@example.com").is_ok());
        for bad in ["", "a:b", "a b", "a\nb"] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
        assert!(hash_password("pw", 4).is_err(), "cost below 10 is refused");
        let hash = hash_password("pw", MIN_COST).expect("hash");
        assert!(bcrypt::verify("pw", &hash).expect("verify"));
    }

    /// Issue 23.10: bcrypt's 72 bytes are all usable (a 72-byte password was refused, "found 73
    /// bytes"), and every one counts; a 73rd would be ignored, so such a password is refused.
    #[test]
    fn passwords_of_72_bytes_are_hashed_whole_and_longer_ones_refused() {
        let longest = "p".repeat(MAX_PASSWORD_BYTES);
        let hash = hash_password(&longest, MIN_COST).expect("a 72-byte password is hashed");
        assert!(bcrypt::verify(&longest, &hash).expect("verify"));
        let mut other = "p".repeat(MAX_PASSWORD_BYTES - 1);
        other.push('q');
        assert!(!bcrypt::verify(&other, &hash).expect("verify"), "the 72nd byte counts");
        let error = hash_password(&format!("{longest}p"), MIN_COST).expect_err("73 bytes refused");
        assert!(error.to_string().contains("72 bytes"), "{error}");
    }

    /// An edit of the users in a bucket that another edit overtakes (between its read and its
    /// write) is read and made again on top of it: neither edit is lost.
    #[tokio::test]
    async fn an_edit_of_stored_users_overtaken_by_another_is_made_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(regctl_registry::storage::FsStorage::new(dir.path()));
        let file = File::Stored { storage, name: "bucket".into() };
        let mut calls = 0;
        let outcome = file
            .edit(|text| {
                calls += 1;
                if calls == 1 {
                    // Another admin's edit lands between this one's read and its write.
                    let other = dir.path().join(USERS_PATH.join("/"));
                    std::fs::create_dir_all(other.parent().expect("a parent")).expect("mkdir");
                    std::fs::write(&other, format!("bob:{H2}\n")).expect("the other edit");
                }
                Ok((Some(set_entry(text, "alice", H1, None)), calls))
            })
            .await
            .expect("edit");
        assert_eq!(outcome, 2, "made again once");
        let (text, version) = file.read().await.expect("read");
        assert!(version.is_some());
        assert_eq!(user_names(&text, Path::new("h")).expect("valid"), ["alice", "bob"]);
    }

    #[test]
    fn local_writes_are_atomic_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("htpasswd");
        write_local(&path, b"a:b\n").expect("write");
        write_local(&path, b"c:d\n").expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "c:d\n");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1, "no temporary file is left");
    }
}
