//! htpasswd authentication: bcrypt entries (`$2y$`, `$2a$`, `$2b$`) and token entries
//! (`$regctl-token$`, a SHA-256 of a random secret), each with the [`access`] its rule line
//! grants; a Basic challenge with a realm, the file re-read when it changes, a short-lived
//! cache of successful verifications (so a pull is not one bcrypt per request), and
//! [`limiter`]'s bounds on password guessing; and Docker's Bearer token flow ([`token`],
//! [`keys`], [`token_endpoint`]), whose tokens are checked here against the same entries.
//!
//! The file is a local one, or the object [`USERS_PATH`] in the storage (`[auth.htpasswd]
//! instorage = true`), which every server sharing a bucket reads and re-reads when its ETag
//! changes, so that `regctl add-user --bucket` reaches them all within a reload interval.

pub mod access;
pub mod authorize;
pub mod keys;
pub mod limiter;
pub mod token;
pub mod token_endpoint;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use access::Grant;
use limiter::{Limiter, Refused};

use base64::Engine;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::storage::{ETag, Storage, StorageError, StoragePath};

/// A user or token whose credentials were verified; the authentication middleware leaves it
/// in the request's extensions for the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's or token's name (never its secret).
    pub name: String,
    /// What it may do.
    pub grant: Grant,
    /// When the caller came with a Bearer token: what the token covers, within `grant`.
    pub scope: Option<token::Scope>,
    /// Anonymous pull is on: anyone may pull every repository, so this caller may too, on top
    /// of its grant (a user limited to pushing `team/*` still pulls what is public).
    pub public_pull: bool,
    /// The caller sent no credentials (the anonymous puller, with or without its token): what
    /// it is refused is answered with a challenge to log in, not `403`.
    pub anonymous: bool,
}

impl User {
    /// A caller with `grant`, not narrowed by a token, without anonymous pull.
    pub fn new(name: impl Into<String>, grant: Grant) -> User {
        User { name: name.into(), grant, scope: None, public_pull: false, anonymous: false }
    }

    /// The level this caller has on `repository` at `now`, before a token's scope narrows it:
    /// its grant's, or `pull` when anonymous pull is on and the grant gives less.
    pub fn level_on(&self, repository: &str, now: SystemTime) -> Option<access::Access> {
        let public = self.public_pull.then_some(access::Access::Pull);
        self.grant.on(repository, now).max(public)
    }

    /// Whether this caller may do `need` to `repository` now. Every authorization decision
    /// goes through here (or [`User::may_pull`]), so a Bearer token's scope narrows the grant
    /// here: both must allow it.
    pub fn allows(&self, repository: &str, need: access::Access) -> bool {
        self.level_on(repository, SystemTime::now()).is_some_and(|level| level >= need)
            && self.scope.as_ref().is_none_or(|scope| scope.allows(repository, need))
    }

    /// Whether this caller may pull `repository`: what the catalog and the UI list. A token
    /// for the catalog (`registry:catalog:*`) lists what the grant may pull.
    pub fn may_pull(&self, repository: &str) -> bool {
        match &self.scope {
            Some(scope) if scope.catalog => self.level_on(repository, SystemTime::now()).is_some(),
            _ => self.allows(repository, access::Access::Pull),
        }
    }

    /// Whether this caller may list some repository at `now` (a catalog scope is worth
    /// granting).
    pub fn may_list(&self, now: SystemTime) -> bool {
        self.public_pull || (!self.grant.repos.is_empty() && !self.grant.expired(now))
    }
}

/// The prefix of a token entry's hash: the SHA-256 of the token's secret, in hex.
pub const TOKEN_SCHEME: &str = "$regctl-token$";

/// How long a successful verification is trusted without running bcrypt again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most cached verifications kept; the cache is cleared when full.
const CACHE_MAX: usize = 10_000;
/// The longest user name that is checked at all; a longer one is refused without bcrypt.
const MAX_USER_LEN: usize = 256;
/// How often the file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Where the users live in the storage, below its root (beside the token keys, outside the
/// `docker/registry/v2` tree), for servers with `[auth.htpasswd] instorage = true`.
pub const USERS_PATH: [&str; 3] = ["regctl", "auth", "htpasswd"];

/// [`USERS_PATH`] as a storage path.
pub fn users_path() -> StoragePath {
    StoragePath::new(USERS_PATH)
}
/// A valid bcrypt hash of a random password, verified against when the user is unknown so that
/// an unknown user costs as much time as a wrong password.
const DUMMY_HASH: &str = "$2y$10$id9uOh0KY5BfSNS91ACQzeoTDpuRoG88jXHPfcEDqrL0IePQg0tN6";

/// Why an htpasswd file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The users kept in the storage could not be read.
    #[error("cannot read the users kept in the storage: {0}")]
    Storage(#[from] StorageError),
    /// The file could not be read.
    #[error("cannot read htpasswd file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:bcrypt-hash` or a token entry.
    #[error(
        "{path}:{line}: not a `user:bcrypt-hash` entry (only bcrypt, `htpasswd -B`, is accepted) or a regctl token"
    )]
    Entry {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A rule line (`#!regctl ...`) was refused.
    #[error("{path}:{line}: {source}")]
    Rule {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: access::RuleError,
    },
}

/// How an entry's secret is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A user's password, against a bcrypt hash.
    Bcrypt(String),
    /// A token's random secret, against its SHA-256 (a fast hash suffices for ≥ 128 random bits).
    Token([u8; 32]),
}

/// One user or token of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// How its secret is checked.
    pub secret: Secret,
    /// What it may do: its rule line's grant; without one, [`Grant::full`] for a user (as in a
    /// `registry:2` file) and [`Grant::nothing`] for a token.
    pub grant: Grant,
    /// A fingerprint of the stored hash ([`token::fingerprint`]): what a Bearer or refresh
    /// token records of its subject, so setting a password or token again ends them. Computed
    /// once, when the file is read, not per request.
    pub generation: String,
}

/// Parses htpasswd text into name → entry. Blank lines and `#` comments are skipped, except
/// rule lines ([`access`]).
pub fn parse_htpasswd(text: &str, path: &Path) -> Result<HashMap<String, Entry>, HtpasswdError> {
    let mut rules = access::parse_rules(text).map_err(|(line, source)| HtpasswdError::Rule {
        path: path.to_path_buf(),
        line,
        source,
    })?;
    let mut entries = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || HtpasswdError::Entry { path: path.to_path_buf(), line: i + 1 };
        let (name, hash) =
            line.split_once(':').filter(|(name, _)| access::valid_name(name)).ok_or_else(bad)?;
        let (secret, default) = if let Some(hex) = hash.strip_prefix(TOKEN_SCHEME) {
            let digest = hex::decode(hex).ok().and_then(|d| <[u8; 32]>::try_from(d).ok()).ok_or_else(bad)?;
            (Secret::Token(digest), Grant::nothing())
        } else if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
            (Secret::Bcrypt(hash.to_string()), Grant::full())
        } else {
            return Err(bad());
        };
        let grant = rules.remove(name).unwrap_or(default);
        let generation = match &secret {
            Secret::Bcrypt(hash) => token::fingerprint(hash.as_bytes()),
            Secret::Token(digest) => token::fingerprint(digest),
        };
        entries.insert(name.to_string(), Entry { secret, grant, generation });
    }
    Ok(entries)
}

/// The SHA-256 of a token's secret, as its entry stores it.
pub fn token_digest(secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// What identifies a version of the users.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    /// A file on disk: its time, size and inode.
    File { modified: Option<SystemTime>, len: u64, inode: u64 },
    /// The object in the storage: its version.
    Object(ETag),
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(Stamp::File { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

/// The version and text of the users kept in `storage`; `None` while there is no object yet.
async fn read_stored(storage: &dyn Storage) -> Result<Option<(Stamp, String)>, StorageError> {
    match storage.get_tagged(&users_path()).await {
        Ok((data, tag)) => Ok(Some((Stamp::Object(tag), String::from_utf8_lossy(&data).into_owned()))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
struct Users {
    entries: HashMap<String, Entry>,
    /// Every bcrypt hash, in a fixed order: an unknown user, or a wrong token secret, is
    /// checked against one of them.
    decoys: Vec<String>,
    stamp: Option<Stamp>,
}

impl Users {
    fn new(entries: HashMap<String, Entry>, stamp: Option<Stamp>, path: &Path) -> Users {
        let mut decoys: Vec<String> = entries
            .values()
            .filter_map(|entry| match &entry.secret {
                Secret::Bcrypt(hash) => Some(hash.clone()),
                Secret::Token(_) => None,
            })
            .collect();
        decoys.sort();
        let mut costs: Vec<&str> = decoys.iter().filter_map(|h| h.get(4..6)).collect();
        costs.sort_unstable();
        costs.dedup();
        if costs.len() > 1 {
            tracing::warn!(
                path = %path.display(),
                costs = %costs.join(", "),
                "htpasswd entries use different bcrypt costs: how long a refusal takes can tell a \
                 cheap entry's users apart; re-set those passwords with one cost (regctl add-user uses 10)"
            );
        }
        Users { entries, decoys, stamp }
    }
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
    /// The file, or the name of the users in storage (for messages).
    path: PathBuf,
    /// The storage holding the users, when they are kept there rather than in `path`.
    store: Option<Arc<dyn Storage>>,
    realm: String,
    users: RwLock<Users>,
    /// Per user, the SHA-256 of a per-process secret, the user and the password last verified,
    /// and when: the cache never holds a password, and a hash means nothing outside this
    /// process. Looked up by user name (not secret) and compared in constant time.
    cache: Mutex<HashMap<String, Cached>>,
    secret: [u8; 16],
    limiter: Limiter,
    /// Verifications answered from the cache, and those that ran bcrypt (for `/metrics`).
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Docker's token flow, when on: the signing keys and its settings.
    tokens: Option<token_endpoint::TokenService>,
    /// Requests whose Bearer token verified (for `/metrics`).
    bearer_verified: AtomicU64,
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
        let entries = parse_htpasswd(&text, path)?;
        Ok(Htpasswd::with_users(path.to_path_buf(), None, Users::new(entries, Some(file_stamp), path), realm))
    }

    /// Loads the users kept in `storage` ([`USERS_PATH`]), challenging clients with `realm`.
    /// Before the first `regctl add-user --bucket` there are none: every request is refused.
    pub async fn load_from_storage(
        storage: Arc<dyn Storage>,
        realm: &str,
    ) -> Result<Htpasswd, HtpasswdError> {
        let name = PathBuf::from(format!("storage:{}", users_path()));
        let (entries, stamp) = match read_stored(storage.as_ref()).await? {
            Some((stamp, text)) => (parse_htpasswd(&text, &name)?, Some(stamp)),
            None => {
                tracing::warn!(path = %name.display(), "no users in the storage yet: add one with regctl add-user --bucket");
                (HashMap::new(), None)
            }
        };
        let users = Users::new(entries, stamp, &name);
        Ok(Htpasswd::with_users(name, Some(storage), users, realm))
    }

    fn with_users(path: PathBuf, store: Option<Arc<dyn Storage>>, users: Users, realm: &str) -> Htpasswd {
        Htpasswd {
            path,
            store,
            realm: realm.to_string(),
            users: RwLock::new(users),
            cache: Mutex::new(HashMap::new()),
            secret: *uuid::Uuid::new_v4().as_bytes(),
            limiter: Limiter::default(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            tokens: None,
            bearer_verified: AtomicU64::new(0),
        }
    }

    /// Whether requests without credentials may pull: a setting of the token flow, which
    /// issues the anonymous puller's tokens.
    pub fn anonymous_pull(&self) -> bool {
        self.tokens.as_ref().is_some_and(|t| t.settings.anonymous_pull)
    }

    /// Turns on Docker's token flow: `/token` issues tokens signed by `tokens`' keys, and
    /// `Authorization: Bearer` is accepted beside Basic.
    pub fn with_tokens(mut self, tokens: token_endpoint::TokenService) -> Htpasswd {
        self.tokens = Some(tokens);
        self
    }

    /// The token flow's settings and keys, when it is on.
    pub fn tokens(&self) -> Option<&token_endpoint::TokenService> {
        self.tokens.as_ref()
    }

    /// The service name of the token flow (the `aud` of its tokens): the realm.
    pub fn service(&self) -> &str {
        &self.realm
    }

    /// The realm of the Basic challenge.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Verifications answered from the cache and verifications that ran bcrypt, since start.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.cache_hits.load(Ordering::Relaxed), self.cache_misses.load(Ordering::Relaxed))
    }

    /// The counters `/metrics` shows.
    pub fn counts(&self) -> crate::metrics::AuthCounts {
        let (cache_hits, cache_misses) = self.cache_stats();
        crate::metrics::AuthCounts {
            cache_hits,
            cache_misses,
            bearer_verified: self.bearer_verified.load(Ordering::Relaxed),
            tokens_issued: self.tokens.as_ref().map_or(0, token_endpoint::TokenService::issued),
        }
    }

    /// Number of users and tokens currently loaded.
    pub fn user_count(&self) -> usize {
        self.users.read().unwrap_or_else(|p| p.into_inner()).entries.len()
    }

    /// Re-reads the users if they changed since the last load: the file (on a blocking
    /// thread), or the object in the storage (one GET, compared by ETag: a few kilobytes a
    /// second per server).
    pub async fn reload(self: &Arc<Self>) {
        match &self.store {
            Some(storage) => match read_stored(storage.as_ref()).await {
                Ok(Some((stamp, text))) => {
                    let stamp = Some(stamp);
                    if self.users.read().unwrap_or_else(|p| p.into_inner()).stamp != stamp {
                        self.replace_if_changed(parse_htpasswd(&text, &self.path), stamp);
                    }
                }
                // Removed: a half-done edit cannot remove it (edits replace it whole), so an
                // operator did; keeping the users is the safe side, as for a bad file.
                Ok(None) => self.replace_if_changed(
                    Err(HtpasswdError::Storage(StorageError::NotFound(users_path()))),
                    None,
                ),
                // Storage failing is no change: the users stay, the next poll tries again.
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the users kept in the storage; keeping the current ones");
                }
            },
            None => {
                let auth = Arc::clone(self);
                let _ = tokio::task::spawn_blocking(move || auth.reload_if_changed()).await;
            }
        }
    }

    /// Re-reads the file if it changed since the last load. A file that cannot be read or
    /// parsed leaves the current users in place (and is logged), so a half-edited file never
    /// locks everyone out or lets anyone in.
    pub fn reload_if_changed(&self) {
        let current = stamp(&self.path).ok();
        if self.users.read().unwrap_or_else(|p| p.into_inner()).stamp == current {
            return;
        }
        let loaded = std::fs::read_to_string(&self.path)
            .map_err(|source| HtpasswdError::Read { path: self.path.clone(), source })
            .and_then(|text| parse_htpasswd(&text, &self.path));
        self.replace_if_changed(loaded, current);
    }

    /// Puts `loaded` in place of the users, unless they are already of version `stamp`.
    fn replace_if_changed(
        &self,
        loaded: Result<HashMap<String, Entry>, HtpasswdError>,
        stamp: Option<Stamp>,
    ) {
        if self.users.read().unwrap_or_else(|p| p.into_inner()).stamp == stamp {
            return;
        }
        match loaded {
            Ok(entries) => {
                tracing::info!(path = %self.path.display(), users = entries.len(), "htpasswd file reloaded");
                let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
                *users = Users::new(entries, stamp, &self.path);
                lock(&self.cache).clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, "htpasswd file changed but could not be loaded; keeping the previous users");
                self.users.write().unwrap_or_else(|p| p.into_inner()).stamp = stamp;
            }
        }
    }

    /// Checks an `Authorization` header from `client`; `Ok` with the user (or token) and its
    /// grant when it names a valid one whose access has not expired.
    ///
    /// A verification remembered in the cache answers at once. Otherwise the attempt is
    /// reserved against the (client, user) pair's failure limit, waits for a verification slot
    /// ([`limiter`]), and checks the secret: a token's SHA-256 at once, a password's bcrypt on
    /// a blocking thread that keeps the slot until it is done. A refused token secret costs the
    /// bcrypt work of a refused password, so the time of a refusal does not tell tokens apart.
    ///
    /// `Bearer` credentials are a token of [`token`]: checked without bcrypt, and against the
    /// current entries ([`Htpasswd::bearer`]).
    pub async fn check(&self, authorization: Option<&str>, client: Option<IpAddr>) -> Result<User, Error> {
        match Credentials::of(authorization) {
            Credentials::Bearer(token) => self.bearer(token).ok_or_else(|| self.unauthorized(true)),
            Credentials::Basic(name, password) => self.check_password(name, password, client).await,
            // A scheme that is not ours is no credentials, as before the token flow.
            Credentials::Absent | Credentials::Unreadable => Err(self.unauthorized(false)),
        }
    }

    /// Checks a user name and password (or token secret) from `client`, as [`Htpasswd::check`]
    /// does for Basic credentials: cache, throttle, bcrypt.
    pub async fn check_password(
        &self,
        name: String,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<User, Error> {
        let key = self.cache_key(&name, &password);
        if let Some(user) = self.cached(&name, &key) {
            return Ok(user);
        }
        if name.len() > MAX_USER_LEN {
            return Err(self.unauthorized(true));
        }
        let too_many = |r: Refused| Error::TooManyRequests {
            reason: "too many failed or concurrent login attempts",
            retry_after: r.retry_after,
        };
        let mut reservation = self.limiter.reserve(client, &name).map_err(too_many)?;
        let slot = self.limiter.slot(client).await.map_err(too_many)?;
        // While this attempt waited, the one before it may have verified these credentials.
        if let Some(user) = self.cached(&name, &key) {
            reservation.succeeded();
            return Ok(user);
        }
        reservation.begin().map_err(too_many)?;
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        let (entry, decoy) = self.entry_to_check(&name);
        let token_matches = match &entry {
            Some(Entry { secret: Secret::Token(digest), .. }) => {
                Some(bool::from(token_digest(&password).ct_eq(digest)))
            }
            _ => None,
        };
        let verified = match (token_matches, &entry) {
            (Some(matches), _) => {
                if !matches {
                    // The decoy's bcrypt, so that a wrong token secret takes as long to refuse
                    // as a wrong password.
                    let _ = tokio::task::spawn_blocking(move || bcrypt::verify(password, &decoy)).await;
                }
                Some((matches, slot))
            }
            (None, Some(Entry { secret: Secret::Bcrypt(hash), .. })) => {
                let hash = hash.clone();
                tokio::task::spawn_blocking(move || (bcrypt::verify(password, &hash).unwrap_or(false), slot))
                    .await
                    .ok()
            }
            (None, _) => tokio::task::spawn_blocking(move || {
                let _ = bcrypt::verify(password, &decoy);
                (false, slot)
            })
            .await
            .ok(),
        };
        let now = SystemTime::now();
        match (verified, entry) {
            (Some((true, _slot)), Some(entry)) if !entry.grant.expired(now) => {
                reservation.succeeded();
                let mut cache = lock(&self.cache);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(name.clone(), Cached { key, at: Instant::now() });
                Ok(self.caller(name, entry.grant))
            }
            (verified, _) => {
                // Debug-formatted: a user name is the client's text and must not start a log line of its own.
                tracing::warn!(user = ?name, client = ?client, "authentication failed");
                if let Some(penalty) = reservation.failed() {
                    // Past the client's failure budget: its slot stays taken a while longer.
                    tokio::time::sleep(penalty).await;
                }
                drop(verified);
                Err(self.unauthorized(true))
            }
        }
    }

    /// The user `name` with its current grant, if its credentials with cache key `key` were
    /// verified recently and its access has not expired (counted as a cache hit when so).
    fn cached(&self, name: &str, key: &[u8; 32]) -> Option<User> {
        let cached = lock(&self.cache).get(name).copied();
        let fresh =
            cached.is_some_and(|c| c.at.elapsed() < CACHE_TTL && bool::from(c.key[..].ct_eq(&key[..])));
        if !fresh {
            return None;
        }
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let grant = users.entries.get(name).map(|entry| entry.grant.clone())?;
        if grant.expired(SystemTime::now()) {
            return None;
        }
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(self.caller(name, grant))
    }

    /// The caller an access token names, narrowed to its scope: `None` when the token does not
    /// verify (signature, expiry, audience), or its subject is no longer what it was when the
    /// token was issued (removed, expired, password or secret set again). A map lookup and an
    /// HMAC, no bcrypt.
    fn bearer(&self, text: &str) -> Option<User> {
        let tokens = self.tokens.as_ref()?;
        let now = SystemTime::now();
        let verified = token::verify(text, &tokens.ring(), now, &self.realm, token::Kind::Access);
        let claims = match verified {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(error = %e, "Bearer token refused");
                return None;
            }
        };
        let mut user = self.subject(&claims, now)?;
        user.scope = Some(token::Scope::of(&claims.access));
        self.bearer_verified.fetch_add(1, Ordering::Relaxed);
        Some(user)
    }

    /// The user a token's claims name, if it still exists unchanged and its access has not
    /// expired; the anonymous puller for an anonymous token while anonymous pull is on.
    fn subject(&self, claims: &token::Claims, now: SystemTime) -> Option<User> {
        if claims.sub.is_empty() {
            return self.anonymous_pull().then(anonymous);
        }
        let (user, generation) = self.entry_at(&claims.sub, now)?;
        (generation == claims.generation).then_some(user)
    }

    /// The user `name` with its current grant and the [`Entry::generation`] of its entry,
    /// if it exists and has not expired.
    pub fn entry_now(&self, name: &str) -> Option<(User, String)> {
        self.entry_at(name, SystemTime::now())
    }

    /// [`Htpasswd::entry_now`] at `now`.
    fn entry_at(&self, name: &str, now: SystemTime) -> Option<(User, String)> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let entry = users.entries.get(name).filter(|e| !e.grant.expired(now))?;
        Some((self.caller(name, entry.grant.clone()), entry.generation.clone()))
    }

    /// The verified caller `name` with `grant`, and what anyone may do when anonymous pull is on.
    fn caller(&self, name: impl Into<String>, grant: Grant) -> User {
        User { public_pull: self.anonymous_pull(), ..User::new(name, grant) }
    }

    /// A `401` with the realm's challenge; `rejected` when credentials were given and refused.
    pub fn unauthorized(&self, rejected: bool) -> Error {
        Error::Unauthorized { realm: self.realm.clone(), rejected, access: Vec::new() }
    }

    /// `name`'s entry, if it exists, and a bcrypt hash to spend the work of a refusal on. An
    /// unknown name is checked against one of the file's hashes, chosen by a keyed hash of the
    /// name, so that it costs the bcrypt work of a real entry: how long a refusal takes must
    /// not tell which user names exist. With entries of different costs (`htpasswd -B` writes
    /// cost 5, `regctl add-user` 10) unknown names spread over the costs as the users do; the
    /// same name always gets the same cost.
    fn entry_to_check(&self, name: &str) -> (Option<Entry>, String) {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let entry = users.entries.get(name).cloned();
        if users.decoys.is_empty() {
            return (entry, DUMMY_HASH.to_string());
        }
        let key = self.cache_key(name, "");
        let pick = u64::from_le_bytes(key[..8].try_into().unwrap_or_default());
        let index = usize::try_from(pick % users.decoys.len() as u64).unwrap_or(0);
        (entry, users.decoys[index].clone())
    }

    #[cfg(test)]
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        lock(&self.cache)
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }
}

/// The anonymous puller: no grant of its own, only what anyone may do while anonymous pull is
/// on (only issued then).
pub fn anonymous() -> User {
    User { public_pull: true, anonymous: true, ..User::new("anonymous", Grant::nothing()) }
}

/// What an `Authorization` header carries: read here alone, for `/v2` ([`Htpasswd::check`])
/// and for `/token`.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'h> {
    /// None: no header, or Basic with an empty user name (clients without credentials, such as
    /// skopeo, answer a Basic challenge with `Basic Og==`, and no entry can have that name).
    Absent,
    /// `Bearer <token>`.
    Bearer(&'h str),
    /// `Basic base64(user:password)`.
    Basic(String, String),
    /// Another scheme, or Basic that does not decode to `user:password`.
    Unreadable,
}

impl<'h> Credentials<'h> {
    /// Reads `header`, the value of `Authorization` if the request has one.
    pub fn of(header: Option<&'h str>) -> Credentials<'h> {
        let Some(header) = header else { return Credentials::Absent };
        let Some((scheme, value)) = header.trim().split_once(' ') else { return Credentials::Unreadable };
        if scheme.eq_ignore_ascii_case("bearer") {
            return Credentials::Bearer(value.trim());
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Credentials::Unreadable;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok();
        let text = decoded.and_then(|d| String::from_utf8(d).ok());
        match text.as_deref().and_then(|t| t.split_once(':')) {
            Some(("", _)) => Credentials::Absent,
            Some((user, password)) => Credentials::Basic(user.to_string(), password.to_string()),
            None => Credentials::Unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
        // A name that could not carry a rule line is refused (found by the fuzz target).
        assert!(parse_htpasswd("a b# c:$2y$05$x", p).is_err());
    }

    /// One reader of `Authorization` for `/v2` and `/token`: what each kind of header is.
    #[test]
    fn credentials_are_read_in_one_place() {
        assert_eq!(Credentials::of(None), Credentials::Absent);
        assert_eq!(Credentials::of(Some(&basic("", ""))), Credentials::Absent, "skopeo's Basic Og==");
        assert_eq!(Credentials::of(Some(&basic("a", "b:c"))), Credentials::Basic("a".into(), "b:c".into()));
        assert_eq!(Credentials::of(Some(" bearer  t.k.n ")), Credentials::Bearer("t.k.n"));
        for unreadable in ["Basic !!!", "Basic YQ==", "Negotiate abc", "Bearer", ""] {
            assert_eq!(Credentials::of(Some(unreadable)), Credentials::Unreadable, "{unreadable:?}");
        }
    }

    #[tokio::test]
    async fn verifies_caches_and_throttles_the_failing_pair_only() {
        let file = file_with(&[("alice", "s3cret"), ("bob", "b0b")]);
        let auth = Htpasswd::load(file.path(), "test").expect("load");
        let ip = Some(IpAddr::from([127, 0, 0, 9]));
        assert!(auth.check(Some(&basic("alice", "s3cret")), ip).await.is_ok());
        assert!(auth.check(Some(&basic("alice", "s3cret")), ip).await.is_ok(), "cached");
        assert_eq!(auth.cache_stats(), (1, 1));
        assert!(matches!(auth.check(None, ip).await, Err(Error::Unauthorized { rejected: false, .. })));
        // What a client without credentials answers a Basic challenge with (skopeo): none.
        let empty = auth.check(Some(&basic("", "")), ip).await;
        assert!(matches!(empty, Err(Error::Unauthorized { rejected: false, .. })), "{empty:?}");
        for _ in 0..limiter::MAX_FAILURES {
            assert!(matches!(
                auth.check(Some(&basic("bob", "nope")), ip).await,
                Err(Error::Unauthorized { rejected: true, .. })
            ));
        }
        let refused = auth.check(Some(&basic("bob", "b0b")), ip).await;
        assert!(
            matches!(refused, Err(Error::TooManyRequests { .. })),
            "bob from here is locked: {refused:?}"
        );
        // Neither another user from that address nor bob from elsewhere is refused.
        auth.lock_cache().clear();
        assert!(auth.check(Some(&basic("alice", "s3cret")), ip).await.is_ok(), "alice is not locked out");
        let other = Some(IpAddr::from([127, 0, 0, 10]));
        assert!(auth.check(Some(&basic("bob", "b0b")), other).await.is_ok());
        assert!(auth.check(Some(&basic("mallory", "x")), other).await.is_err(), "unknown user");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_guesses_get_no_more_tries_than_sequential_ones() {
        let file = file_with(&[("alice", "s3cret")]);
        let auth = Arc::new(Htpasswd::load(file.path(), "test").expect("load"));
        let ip = Some(IpAddr::from([127, 0, 0, 12]));
        let guesses: Vec<_> = (0..200)
            .map(|i| {
                let auth = auth.clone();
                let password = if i == 150 { "s3cret".to_string() } else { format!("guess{i}") };
                tokio::spawn(async move { auth.check(Some(&basic("alice", &password)), ip).await })
            })
            .collect();
        let mut verified = 0;
        for guess in guesses {
            if guess.await.expect("join").is_ok() {
                verified += 1;
            }
        }
        let (_, bcrypt_runs) = auth.cache_stats();
        assert!(
            bcrypt_runs <= u64::from(limiter::MAX_FAILURES),
            "{bcrypt_runs} passwords were checked for one user from one address"
        );
        assert!(verified <= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_correct_logins_costs_one_verification_and_is_never_refused() {
        let file = file_with(&[("ci", "s3cret")]);
        let auth = Arc::new(Htpasswd::load(file.path(), "test").expect("load"));
        let ip = Some(IpAddr::from([127, 0, 0, 13]));
        let logins: Vec<_> = (0..64)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.check(Some(&basic("ci", "s3cret")), ip).await })
            })
            .collect();
        for login in logins {
            let result = login.await.expect("join");
            assert!(result.is_ok(), "a correct login in a burst of 64 was refused: {result:?}");
        }
        assert_eq!(auth.cache_stats(), (63, 1));
    }

    #[tokio::test]
    async fn unknown_users_cost_the_bcrypt_work_of_known_ones() {
        let cheap = bcrypt::hash("a", 4).expect("hash");
        let dear = bcrypt::hash("b", 5).expect("hash");
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), format!("cheap:{cheap}\ndear:{dear}\n")).expect("write");
        let auth = Htpasswd::load(file.path(), "test").expect("load");
        let (entry, _) = auth.entry_to_check("cheap");
        assert_eq!(entry.map(|e| e.secret), Some(Secret::Bcrypt(cheap.clone())));
        // Unknown names are checked against the file's own hashes, spread over both costs, and
        // each name always against the same one.
        let mut costs = std::collections::BTreeSet::new();
        for i in 0..64 {
            let name = format!("nobody{i}");
            let (entry, checked) = auth.entry_to_check(&name);
            assert!(entry.is_none() && (checked == cheap || checked == dear));
            assert_eq!(auth.entry_to_check(&name).1, checked, "the same name, the same hash");
            costs.insert(checked[..7].to_string());
        }
        assert_eq!(costs.len(), 2, "unknown names cost like the users do: {costs:?}");
        // And a user's password under another name is still refused.
        let ip = Some(IpAddr::from([127, 0, 0, 11]));
        assert!(auth.check(Some(&basic("mallory", "a")), ip).await.is_err());
    }

    #[tokio::test]
    async fn tokens_and_rules_give_each_entry_its_grant_until_it_expires() {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let digest = hex::encode(token_digest("t0ken"));
        let old = hex::encode(token_digest("old"));
        let bare = hex::encode(token_digest("bare"));
        let text = format!(
            "legacy:{hash}\nreader:{hash}\n#!regctl reader access=pull repos=team/*\n\
             ci:{TOKEN_SCHEME}{digest}\n#!regctl ci access=push expires=2999-01-01T00:00:00Z\n\
             gone:{TOKEN_SCHEME}{old}\n#!regctl gone access=push expires=2001-01-01T00:00:00Z\n\
             bare:{TOKEN_SCHEME}{bare}\n"
        );
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        let auth = Htpasswd::load(file.path(), "test").expect("load");
        let grant = |user: Result<User, Error>| user.expect("verified").grant;
        assert_eq!(grant(auth.check(Some(&basic("legacy", "pw")), None).await), Grant::full());
        let reader = grant(auth.check(Some(&basic("reader", "pw")), None).await);
        assert_eq!((reader.access, reader.repos[0].as_str()), (access::Access::Pull, "team/*"));
        let ci = grant(auth.check(Some(&basic("ci", "t0ken")), None).await);
        assert_eq!(ci.access, access::Access::Push);
        assert!(auth.check(Some(&basic("ci", "t0ken")), None).await.is_ok(), "cached");
        assert!(auth.check(Some(&basic("ci", "wrong")), None).await.is_err());
        assert!(auth.check(Some(&basic("gone", "old")), None).await.is_err(), "expired");
        assert_eq!(grant(auth.check(Some(&basic("bare", "bare")), None).await), Grant::nothing());
        // A bad rule line refuses the whole file: the last good rules stay.
        assert!(parse_htpasswd("a:$2y$05$x\n#!regctl a access=root\n", Path::new("h")).is_err());
        assert!(parse_htpasswd(&format!("t:{TOKEN_SCHEME}abc\n"), Path::new("h")).is_err());
    }

    /// Issue 19: guessing a token's secret is throttled like guessing a password: after the
    /// failure budget of a (client, name) pair, even the right secret is refused for a while,
    /// and each refusal costs the bcrypt work of a password's.
    #[tokio::test]
    async fn guesses_at_a_token_are_throttled_like_passwords() {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let digest = hex::encode(token_digest("the-secret"));
        let text = format!("admin:{hash}\nci:{TOKEN_SCHEME}{digest}\n#!regctl ci access=pull\n");
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        let auth = Htpasswd::load(file.path(), "test").expect("load");
        let ip = Some(IpAddr::from([127, 0, 0, 14]));
        for i in 0..limiter::MAX_FAILURES {
            let guess = auth.check(Some(&basic("ci", &format!("guess{i}"))), ip).await;
            assert!(matches!(guess, Err(Error::Unauthorized { rejected: true, .. })), "{guess:?}");
        }
        let right = auth.check(Some(&basic("ci", "the-secret")), ip).await;
        assert!(matches!(right, Err(Error::TooManyRequests { .. })), "the pair is locked: {right:?}");
        assert_eq!(auth.cache_stats().1, u64::from(limiter::MAX_FAILURES), "one check per allowed guess");
        let elsewhere = Some(IpAddr::from([127, 0, 0, 15]));
        assert!(auth.check(Some(&basic("ci", "the-secret")), elsewhere).await.is_ok());
    }

    /// An access token for `sub` of `auth`'s service, pulling `app`, as `/token` issues it.
    fn access_token(auth: &Htpasswd, sub: &str, generation: &str) -> String {
        let now = token::epoch_secs(SystemTime::now());
        let claims = token::Claims {
            iss: token::ISSUER.into(),
            sub: sub.into(),
            aud: auth.service().into(),
            exp: now + 60,
            nbf: now,
            iat: now,
            jti: token::token_id(),
            access: vec![token::ResourceActions {
                kind: "repository".into(),
                name: "app".into(),
                actions: vec!["pull".into()],
            }],
            kind: token::Kind::Access,
            generation: generation.into(),
        };
        format!("Bearer {}", token::sign(&claims, &auth.tokens().expect("tokens on").ring()))
    }

    #[tokio::test]
    async fn bearer_tokens_are_narrowed_to_their_scope_and_end_with_their_user() {
        let file = file_with(&[("alice", "a"), ("bob", "b")]);
        let state = tempfile::tempdir().expect("temporary directory");
        let storage = Arc::new(crate::storage::FsStorage::new(state.path()));
        let settings = token_endpoint::TokenSettings {
            bearer: true,
            anonymous_pull: false,
            lifetime: Duration::from_secs(60),
        };
        let tokens = token_endpoint::TokenService::start(storage, settings).await.expect("keys");
        let auth = Htpasswd::load(file.path(), "svc").expect("load").with_tokens(tokens);
        let (_, alice_gen) = auth.entry_now("alice").expect("alice");
        let (_, bob_gen) = auth.entry_now("bob").expect("bob");
        let alice =
            auth.check(Some(&access_token(&auth, "alice", &alice_gen)), None).await.expect("verified");
        assert_eq!(alice.grant, Grant::full(), "the grant is the entry's");
        assert!(alice.allows("app", access::Access::Pull), "the scope covers pulling app");
        assert!(!alice.allows("app", access::Access::Push), "but not pushing it, whatever the grant");
        assert!(!alice.may_pull("other"));
        assert_eq!(auth.cache_stats(), (0, 0), "no password check, no bcrypt");
        assert!(auth.check(Some(&access_token(&auth, "", "")), None).await.is_err(), "anonymous is off");
        assert!(auth.check(Some("Bearer not.a.token"), None).await.is_err());

        // Alice removed, bob's password set again: both their tokens stop at the reload.
        let hash = bcrypt::hash("new", 4).expect("hash");
        std::fs::write(file.path(), format!("bob:{hash}\n")).expect("rewrite");
        auth.reload_if_changed();
        assert!(auth.check(Some(&access_token(&auth, "alice", &alice_gen)), None).await.is_err());
        assert!(auth.check(Some(&access_token(&auth, "bob", &bob_gen)), None).await.is_err());
        let (_, new_gen) = auth.entry_now("bob").expect("bob");
        assert!(auth.check(Some(&access_token(&auth, "bob", &new_gen)), None).await.is_ok());
    }

    /// Users kept in the storage: none before the first edit, then each version as it is
    /// written, compared by version; a bad edit or a removal keeps the users.
    #[tokio::test]
    async fn users_in_storage_are_reloaded_when_their_version_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::FsStorage::new(dir.path()));
        let auth = Arc::new(Htpasswd::load_from_storage(storage.clone(), "test").await.expect("load"));
        assert_eq!(auth.user_count(), 0);
        let put = |text: String| {
            let storage = storage.clone();
            async move { storage.put(&users_path(), bytes::Bytes::from(text)).await.expect("put") }
        };
        put(format!("alice:{}\n", bcrypt::hash("a", 4).expect("hash"))).await;
        auth.reload().await;
        assert!(auth.check(Some(&basic("alice", "a")), None).await.is_ok());
        put(format!("bob:{}\n", bcrypt::hash("b", 4).expect("hash"))).await;
        auth.reload().await;
        assert!(auth.check(Some(&basic("bob", "b")), None).await.is_ok());
        assert!(auth.check(Some(&basic("alice", "a")), None).await.is_err(), "alice removed");
        put("garbage line without a hash\n".into()).await;
        auth.reload().await;
        assert!(auth.check(Some(&basic("bob", "b")), None).await.is_ok(), "a bad edit keeps the users");
        storage.delete(&users_path()).await.expect("delete");
        auth.reload().await;
        assert_eq!(auth.user_count(), 1, "a removal keeps the users");
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
