//! htpasswd authentication: bcrypt entries (`$2y$`, `$2a$`, `$2b$`), a Basic challenge with a
//! realm, the file re-read when it changes, a short-lived cache of successful verifications
//! (so a pull is not one bcrypt per request), and a per-client limit on failed attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::error::Error;

/// How long a successful verification is trusted without running bcrypt again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most cached verifications kept; the cache is cleared when full.
const CACHE_MAX: usize = 10_000;
/// Failed attempts allowed per client address within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
/// The window over which failed attempts are counted.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How often the file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// A valid bcrypt hash of a random password, verified against when the user is unknown so that
/// an unknown user costs as much time as a wrong password.
const DUMMY_HASH: &str = "$2y$10$id9uOh0KY5BfSNS91ACQzeoTDpuRoG88jXHPfcEDqrL0IePQg0tN6";

/// Why an htpasswd file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read htpasswd file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:bcrypt-hash`.
    #[error("{path}:{line}: not a `user:bcrypt-hash` entry (only bcrypt, `htpasswd -B`, is accepted)")]
    Entry {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// Parses htpasswd text into user → bcrypt hash. Blank lines and `#` comments are skipped.
pub fn parse_htpasswd(text: &str, path: &Path) -> Result<HashMap<String, String>, HtpasswdError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = line.split_once(':').filter(|(user, hash)| {
            !user.is_empty() && ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p))
        });
        let (user, hash) =
            entry.ok_or_else(|| HtpasswdError::Entry { path: path.to_path_buf(), line: i + 1 })?;
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

/// What identifies a version of the file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

#[derive(Debug)]
struct Users {
    hashes: HashMap<String, String>,
    stamp: Option<FileStamp>,
}

/// A counter of failed attempts from one client.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// A successful verification, remembered.
#[derive(Debug, Clone, Copy)]
struct Cached {
    key: [u8; 32],
    at: Instant,
}

/// htpasswd authentication state, shared by all requests.
#[derive(Debug)]
pub struct Htpasswd {
    path: PathBuf,
    realm: String,
    users: RwLock<Users>,
    /// Per user, the SHA-256 of a per-process secret, the user and the password last verified,
    /// and when: the cache never holds a password, and a hash means nothing outside this
    /// process. Looked up by user name (not secret) and compared in constant time.
    cache: Mutex<HashMap<String, Cached>>,
    secret: [u8; 16],
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Verifications answered from the cache, and those that ran bcrypt (for `/metrics`).
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Htpasswd {
    /// Loads the file at `path`, challenging clients with `realm`.
    pub fn load(path: &Path, realm: &str) -> Result<Htpasswd, HtpasswdError> {
        let read_err = |source| HtpasswdError::Read { path: path.to_path_buf(), source };
        let file_stamp = stamp(path).map_err(read_err)?;
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let hashes = parse_htpasswd(&text, path)?;
        Ok(Htpasswd {
            path: path.to_path_buf(),
            realm: realm.to_string(),
            users: RwLock::new(Users { hashes, stamp: Some(file_stamp) }),
            cache: Mutex::new(HashMap::new()),
            secret: *uuid::Uuid::new_v4().as_bytes(),
            failures: Mutex::new(HashMap::new()),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        })
    }

    /// The realm of the Basic challenge.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Verifications answered from the cache and verifications that ran bcrypt, since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.cache_hits.load(Ordering::Relaxed), self.cache_misses.load(Ordering::Relaxed))
    }

    /// Number of users currently loaded.
    pub fn user_count(&self) -> usize {
        self.users.read().unwrap_or_else(|p| p.into_inner()).hashes.len()
    }

    /// Re-reads the file if it changed since the last load. A file that cannot be read or
    /// parsed leaves the current users in place (and is logged), so a half-edited file never
    /// locks everyone out or lets anyone in.
    pub fn reload_if_changed(&self) {
        let current = stamp(&self.path).ok();
        {
            let users = self.users.read().unwrap_or_else(|p| p.into_inner());
            if users.stamp == current {
                return;
            }
        }
        let loaded = std::fs::read_to_string(&self.path)
            .map_err(|source| HtpasswdError::Read { path: self.path.clone(), source })
            .and_then(|text| parse_htpasswd(&text, &self.path));
        match loaded {
            Ok(hashes) => {
                tracing::info!(path = %self.path.display(), users = hashes.len(), "htpasswd file reloaded");
                let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
                *users = Users { hashes, stamp: current };
                lock(&self.cache).clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, "htpasswd file changed but could not be loaded; keeping the previous users");
                self.users.write().unwrap_or_else(|p| p.into_inner()).stamp = current;
            }
        }
    }

    /// Checks an `Authorization` header from `client`; `Ok` when it names a valid user.
    pub async fn check(&self, authorization: Option<&str>, client: Option<IpAddr>) -> Result<(), Error> {
        let unauthorized = || Error::Unauthorized { realm: self.realm.clone() };
        let (user, password) = authorization.and_then(basic_credentials).ok_or_else(unauthorized)?;
        if self.throttled(client) {
            return Err(Error::TooManyRequests);
        }
        let key = self.cache_key(&user, &password);
        let cached = lock(&self.cache).get(&user).copied();
        if cached.is_some_and(|c| c.at.elapsed() < CACHE_TTL && bool::from(c.key[..].ct_eq(&key[..]))) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        let (known, hash) = self.hash_to_check(&user);
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if verified && known {
            let mut cache = lock(&self.cache);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(user, Cached { key, at: Instant::now() });
            Ok(())
        } else {
            self.record_failure(client);
            // Debug-formatted: a user name is the client's text and must not start a log line of its own.
            tracing::warn!(user = ?user, client = ?client, "authentication failed");
            Err(unauthorized())
        }
    }

    /// The hash to verify `user`'s password against, and whether `user` exists. An unknown
    /// user is checked against another user's hash (the answer is discarded), so that it
    /// costs the same bcrypt work as a known one: how long a refusal takes must not tell
    /// which user names exist (a fixed dummy hash has a fixed cost, and `htpasswd -B` writes
    /// cost 5 where `regctl add-user` writes 10).
    fn hash_to_check(&self, user: &str) -> (bool, String) {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        match users.hashes.get(user) {
            Some(hash) => (true, hash.clone()),
            None => {
                (false, users.hashes.values().next().map_or_else(|| DUMMY_HASH.to_string(), Clone::clone))
            }
        }
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn throttled(&self, client: Option<IpAddr>) -> bool {
        let Some(ip) = client else { return false };
        let failures = lock(&self.failures);
        failures.get(&ip).is_some_and(|f| f.count >= MAX_FAILURES && f.since.elapsed() < FAILURE_WINDOW)
    }

    fn record_failure(&self, client: Option<IpAddr>) {
        let Some(ip) = client else { return };
        let mut failures = lock(&self.failures);
        failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
        let entry = failures.entry(ip).or_insert(Failures { count: 0, since: Instant::now() });
        entry.count += 1;
    }
}

/// Decodes `Basic base64(user:password)`.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    fn file_with(users: &[(&str, &str)]) -> tempfile::NamedTempFile {
        let mut text = String::from("# users\n\n");
        for (user, password) in users {
            let hash = bcrypt::hash(password, 4).expect("hash");
            text.push_str(&format!("{user}:{hash}\n"));
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    #[test]
    fn parses_bcrypt_entries_only() {
        let p = Path::new("h");
        let users = parse_htpasswd("a:$2y$05$x\nb:$2b$05$y\n# c\n", p).expect("parse");
        assert_eq!(users.len(), 2);
        assert!(parse_htpasswd("a:{SHA}abc", p).is_err());
        assert!(parse_htpasswd("nocolon", p).is_err());
        assert!(parse_htpasswd(":$2y$05$x", p).is_err());
    }

    #[tokio::test]
    async fn verifies_caches_and_throttles() {
        let file = file_with(&[("alice", "s3cret")]);
        let auth = Htpasswd::load(file.path(), "test").expect("load");
        let ip = Some(IpAddr::from([127, 0, 0, 9]));
        assert!(auth.check(Some(&basic("alice", "s3cret")), ip).await.is_ok());
        assert!(auth.check(Some(&basic("alice", "s3cret")), ip).await.is_ok(), "cached");
        assert!(matches!(auth.check(None, ip).await, Err(Error::Unauthorized { .. })));
        for _ in 0..MAX_FAILURES {
            assert!(matches!(
                auth.check(Some(&basic("alice", "nope")), ip).await,
                Err(Error::Unauthorized { .. })
            ));
        }
        assert!(matches!(auth.check(Some(&basic("alice", "s3cret")), ip).await, Err(Error::TooManyRequests)));
        let other = Some(IpAddr::from([127, 0, 0, 10]));
        assert!(auth.check(Some(&basic("bob", "x")), other).await.is_err(), "unknown user");
        assert!(auth.check(Some(&basic("alice", "s3cret")), other).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_users_cost_the_bcrypt_work_of_known_ones() {
        let file = file_with(&[("alice", "s3cret")]);
        let auth = Htpasswd::load(file.path(), "test").expect("load");
        let (known, alice) = auth.hash_to_check("alice");
        let (unknown, checked) = auth.hash_to_check("mallory");
        assert!(known && !unknown);
        // Same algorithm and cost ("$2b$04$"), so the same work, whatever the file's cost.
        assert_eq!(checked[..7], alice[..7]);
        // And alice's password under another name is still refused.
        let ip = Some(IpAddr::from([127, 0, 0, 11]));
        assert!(auth.check(Some(&basic("mallory", "s3cret")), ip).await.is_err());
    }

    #[tokio::test]
    async fn reload_picks_up_changes_and_keeps_users_on_a_bad_file() {
        let file = file_with(&[("alice", "a")]);
        let auth = Htpasswd::load(file.path(), "test").expect("load");
        let hash = bcrypt::hash("b", 4).expect("hash");
        std::fs::write(file.path(), format!("bob:{hash}\n")).expect("rewrite");
        auth.reload_if_changed();
        assert!(auth.check(Some(&basic("bob", "b")), None).await.is_ok());
        assert!(auth.check(Some(&basic("alice", "a")), None).await.is_err(), "alice removed");
        std::fs::write(file.path(), "garbage line without a hash\n").expect("rewrite");
        auth.reload_if_changed();
        assert_eq!(auth.user_count(), 1);
    }
}
