//! The keys that sign Bearer tokens: a current key and, after a rotation, the previous one,
//! still accepted (never used to sign) until its `valid_until`, so tokens issued just before a
//! rotation keep working for their lifetime.
//!
//! The ring is kept with the server's state through the [`Storage`] trait, as the object
//! [`KEYS_PATH`] below the storage root (beside the ACME cache's `regctl/acme/`, outside the
//! `docker/registry/v2` tree that the catalog and garbage collection walk): a file on the
//! filesystem backend, an object in the bucket on S3, so servers sharing a bucket sign and
//! verify with the same keys. The first server to start generates it; each server re-reads
//! it every [`RELOAD_INTERVAL`]; `regctl rotate-token-key` replaces it ([`rotate`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::hmac;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::token::epoch_secs;
use crate::storage::{Condition, Storage, StorageError, StoragePath};

/// Where the ring is stored, below the storage root.
pub const KEYS_PATH: [&str; 3] = ["regctl", "token", "keys.json"];
/// How often a server re-reads the ring, so a rotation reaches every server sharing a bucket.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes of a signing key (HMAC-SHA256's block is 64; 32 random bytes are its strength).
const KEY_LEN: usize = 32;

/// One HMAC-SHA256 key and its identifier (the `kid` of the tokens it signs).
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    secret: Vec<u8>,
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SigningKey {
    fn from_secret(id: String, secret: Vec<u8>) -> SigningKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        SigningKey { id, secret, key }
    }

    fn generate() -> SigningKey {
        let mut secret = vec![0; KEY_LEN];
        // aws-lc's DRBG seeded by the OS; it only fails when the OS has no randomness, and a
        // server must not sign with a predictable key then.
        if aws_lc_rs::rand::fill(&mut secret).is_err() {
            panic!("the operating system gave no random bytes for a token signing key");
        }
        let mut id = [0; 6];
        if aws_lc_rs::rand::fill(&mut id).is_err() {
            panic!("the operating system gave no random bytes for a key id");
        }
        SigningKey::from_secret(hex::encode(id), secret)
    }

    /// The key's identifier.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The HMAC-SHA256 of `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, data).as_ref().to_vec()
    }

    /// Whether `tag` is `data`'s HMAC under this key (compared in constant time).
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, data, tag).is_ok()
    }
}

/// The current key and the previous one with the end of its grace.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: SigningKey,
    previous: Option<(SigningKey, SystemTime)>,
}

/// The stored form of a key.
#[derive(Debug, Serialize, Deserialize)]
struct StoredKey {
    id: String,
    secret: String,
    created: u64,
    /// For the previous key: until when it still verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_until: Option<u64>,
}

/// The stored form of the ring.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRing {
    current: StoredKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<StoredKey>,
}

/// Why the ring could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Storage failed.
    #[error("token signing keys (regctl/token/keys.json): {0}")]
    Storage(#[from] StorageError),
    /// The stored ring does not parse.
    #[error("token signing keys (regctl/token/keys.json) are damaged: {0}")]
    Damaged(String),
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl KeyRing {
    /// A ring with one fresh key.
    pub fn generate() -> KeyRing {
        KeyRing { current: SigningKey::generate(), previous: None }
    }

    /// The key that signs.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The key named `id` if it verifies at `now`: the current key, or the previous one
    /// within its grace.
    pub fn verifying(&self, id: &str, now: SystemTime) -> Option<&SigningKey> {
        if self.current.id == id {
            return Some(&self.current);
        }
        self.previous.as_ref().filter(|(key, until)| key.id == id && now < *until).map(|(key, _)| key)
    }

    /// A new current key; the current one verifies for `grace` more.
    pub fn rotated(&self, now: SystemTime, grace: Duration) -> KeyRing {
        KeyRing { current: SigningKey::generate(), previous: Some((self.current.clone(), now + grace)) }
    }

    fn to_json(&self) -> Vec<u8> {
        let stored = |key: &SigningKey, until: Option<SystemTime>| StoredKey {
            id: key.id.clone(),
            secret: b64().encode(&key.secret),
            created: epoch_secs(SystemTime::now()),
            valid_until: until.map(epoch_secs),
        };
        let ring = StoredRing {
            current: stored(&self.current, None),
            previous: self.previous.as_ref().map(|(key, until)| stored(key, Some(*until))),
        };
        serde_json::to_vec_pretty(&ring).unwrap_or_default()
    }

    fn from_json(data: &[u8]) -> Result<KeyRing, KeyError> {
        let ring: StoredRing = serde_json::from_slice(data).map_err(|e| KeyError::Damaged(e.to_string()))?;
        let key = |stored: StoredKey| -> Result<SigningKey, KeyError> {
            let secret = b64().decode(&stored.secret).map_err(|e| KeyError::Damaged(e.to_string()))?;
            if secret.len() < KEY_LEN || stored.id.is_empty() {
                return Err(KeyError::Damaged("a key is too short or has no id".into()));
            }
            Ok(SigningKey::from_secret(stored.id, secret))
        };
        let previous = match ring.previous {
            Some(stored) => {
                let until = SystemTime::UNIX_EPOCH + Duration::from_secs(stored.valid_until.unwrap_or(0));
                Some((key(stored)?, until))
            }
            None => None,
        };
        Ok(KeyRing { current: key(ring.current)?, previous })
    }
}

fn keys_path() -> StoragePath {
    StoragePath::new(KEYS_PATH)
}

/// The stored ring, if there is one.
pub async fn read(storage: &dyn Storage) -> Result<Option<KeyRing>, KeyError> {
    stored(storage).await?.map(|data| KeyRing::from_json(&data)).transpose()
}

/// The stored ring's bytes, as they are; `None` when there is none yet.
async fn stored(storage: &dyn Storage) -> Result<Option<Bytes>, KeyError> {
    match storage.get(&keys_path()).await {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The stored ring, generated and stored first when there is none. Of servers starting at
/// once on one bucket, the first to store its ring wins (a create-only write): the others read
/// and use that one, so no token is ever signed with a key the others will not know.
pub async fn load_or_create(storage: &dyn Storage) -> Result<KeyRing, KeyError> {
    if let Some(ring) = read(storage).await? {
        return Ok(ring);
    }
    let ring = KeyRing::generate();
    match storage.put_if(&keys_path(), Bytes::from(ring.to_json()), Condition::Absent).await {
        Ok(_) => {
            tracing::info!(key = ring.current.id(), "generated a token signing key");
            Ok(ring)
        }
        // Another server stored its ring first (or it was removed since: then ours will do).
        Err(e) if e.is_precondition() => Ok(read(storage).await?.unwrap_or(ring)),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the stored ring with a new current key; the old current key keeps verifying for
/// `grace` (the access tokens' lifetime). Returns the new ring.
pub async fn rotate(storage: &dyn Storage, grace: Duration) -> Result<KeyRing, KeyError> {
    let (ring, data) = rotated(stored(storage).await?.as_deref(), grace)?;
    storage.put(&keys_path(), Bytes::from(data)).await?;
    Ok(ring)
}

/// What [`rotate`] stores in place of `stored` (the ring's stored bytes; none yet: a new
/// ring): the rotated ring and its bytes. For a ring kept where no [`Storage`] reaches, such
/// as an instance's disk over SSH.
pub fn rotated(stored: Option<&[u8]>, grace: Duration) -> Result<(KeyRing, Vec<u8>), KeyError> {
    let ring = match stored {
        Some(data) => KeyRing::from_json(data)?,
        None => KeyRing::generate(),
    };
    let ring = ring.rotated(SystemTime::now(), grace);
    let data = ring.to_json();
    Ok((ring, data))
}

/// A ring shared by the server's requests, re-read from storage periodically.
#[derive(Debug)]
pub struct SharedRing {
    storage: Arc<dyn Storage>,
    ring: std::sync::RwLock<Arc<KeyRing>>,
}

impl SharedRing {
    /// Loads (or creates) the stored ring.
    pub async fn load(storage: Arc<dyn Storage>) -> Result<SharedRing, KeyError> {
        let ring = load_or_create(storage.as_ref()).await?;
        Ok(SharedRing { storage, ring: std::sync::RwLock::new(Arc::new(ring)) })
    }

    /// The ring now.
    pub fn get(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the stored ring; a failure keeps the current one (and is logged).
    pub async fn reload(&self) {
        match read(self.storage.as_ref()).await {
            Ok(Some(ring)) => {
                let changed = self.get().current.id != ring.current.id;
                if changed {
                    tracing::info!(key = ring.current.id(), "token signing key changed");
                }
                *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
            }
            Ok(None) => tracing::warn!("token signing keys are gone from storage; keeping the loaded ones"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the token signing keys; keeping the loaded ones")
            }
        }
    }

    /// Re-reads the ring every [`RELOAD_INTERVAL`], for as long as the server runs.
    pub fn spawn_reload(self: &Arc<Self>) {
        let ring = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                ring.reload().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    /// Servers starting at once on an empty bucket agree on one ring: the first stored wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_starting_at_once_share_one_ring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::storage::FsStorage::new(dir.path());
        let rings = futures_util::future::join_all((0..8).map(|_| load_or_create(&storage))).await;
        let ids: std::collections::HashSet<String> =
            rings.into_iter().map(|r| r.expect("a ring").current().id().to_string()).collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        let stored = read(&storage).await.expect("read").expect("a ring");
        assert!(ids.contains(stored.current().id()));
    }

    #[tokio::test]
    async fn the_ring_is_created_once_kept_in_storage_and_rotated_with_a_grace() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = FsStorage::new(dir.path());
        let first = load_or_create(&storage).await.expect("created");
        assert!(dir.path().join("regctl/token/keys.json").is_file());
        let again = load_or_create(&storage).await.expect("read back");
        assert_eq!(first.current().id(), again.current().id(), "a restart keeps the key");
        assert_eq!(again.current().sign(b"x"), first.current().sign(b"x"));

        let rotated = rotate(&storage, Duration::from_secs(60)).await.expect("rotated");
        assert_ne!(rotated.current().id(), first.current().id());
        let now = SystemTime::now();
        let stored = read(&storage).await.expect("read").expect("a ring");
        assert!(stored.verifying(first.current().id(), now).is_some(), "the old key verifies for a while");
        assert!(stored.verifying(first.current().id(), now + Duration::from_secs(61)).is_none());
        assert!(stored.verifying(rotated.current().id(), now).is_some());
        let twice = rotate(&storage, Duration::from_secs(60)).await.expect("rotated again");
        assert!(twice.verifying(first.current().id(), now).is_none(), "two rotations end the first key");

        std::fs::write(dir.path().join("regctl/token/keys.json"), "{").expect("damage");
        assert!(matches!(read(&storage).await, Err(KeyError::Damaged(_))));
    }
}
