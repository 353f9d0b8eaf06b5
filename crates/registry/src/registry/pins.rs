//! The pin protocol that garbage collection ([`crate::gc`]) and pushes share: how a
//! collection announces itself, how serving processes pin what their clients rely on, and
//! how a request waits for a collection about to delete what it needs.
//!
//! **Why a concurrent push never loses a layer.**
//! 1. Nothing written (blob, manifest revision, layer link) within the grace period is deleted:
//!    content uploaded or linked by a push in progress survives until its manifest lands.
//! 2. A collection announces itself (`_regctl/gc/active`), then waits `settle` before marking,
//!    so every push either finished its manifest before the mark (and is marked) or sees the
//!    announcement. Every server then *pins* (`_regctl/gc/pins/<id>`) what it confirmed to
//!    clients within the grace period (a blob a `HEAD` found: the client will not upload it
//!    again; at most an hour back), and
//!    from then on whatever a request relies on (every blob and child a manifest names, a blob
//!    found, uploaded or mounted) *before* checking that it exists ([`Guard::protect`]).
//! 3. Before deleting, the collection writes what it is about to delete (`_regctl/gc/doomed`),
//!    *then* reads the pins and spares whatever is pinned. A push that pinned too late to be
//!    seen finds its digest doomed and waits until the collection ends, then checks again: the
//!    blob is either still there or gone, never deleted under a manifest that was accepted.
//!
//! Storage layout of the coordination objects:
//! ```text
//! docker/registry/v2/_regctl/gc/active        a collection runs (JSON: when, where)
//! docker/registry/v2/_regctl/gc/doomed        digests it is about to delete, one a line
//! docker/registry/v2/_regctl/gc/pins/<uuid>   digests a push relies on, one a line
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::Registry;
use crate::layout;
use crate::oci::Digest;
use crate::storage::{Storage, StorageError, StoragePath};

/// An announcement older than this is left over from a collection that died.
pub(crate) const LEASE: Duration = Duration::from_secs(6 * 3600);
/// How long a push trusts what it learnt about a running collection.
const ACTIVE_CACHE: Duration = Duration::from_secs(1);
/// The shortest wait between announcing and marking: every server notices the announcement
/// (its watch checks each second, through a one-second cache) and pins what it must.
pub(crate) const MIN_SETTLE: Duration = Duration::from_secs(3);
/// How long a push waits for a collection that is about to delete what it needs.
const DOOMED_WAIT: Duration = Duration::from_secs(120);

/// Where the coordination objects live.
fn gc_dir() -> StoragePath {
    layout::regctl_state().join("gc")
}

/// The announcement of a running collection.
pub(crate) fn active_path() -> StoragePath {
    gc_dir().join("active")
}

/// What a running collection is about to delete.
pub(crate) fn doomed_path() -> StoragePath {
    gc_dir().join("doomed")
}

/// The pins written by serving processes.
pub(crate) fn pins_dir() -> StoragePath {
    gc_dir().join("pins")
}

/// The digests of a pin or the doomed list, one a line.
pub(crate) fn parse_digests(text: &[u8]) -> HashSet<Digest> {
    String::from_utf8_lossy(text).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Digests one a line, as pins and the doomed list hold them.
pub(crate) fn digest_lines<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Bytes {
    let text: Vec<String> = digests.into_iter().map(|d| d.to_string()).collect();
    Bytes::from(text.join("\n"))
}

/// Every digest pinned by pushes since the announcement.
pub(crate) async fn read_pins(storage: &dyn Storage) -> Result<HashSet<Digest>, StorageError> {
    let mut pinned = HashSet::new();
    for (name, _) in storage.walk(&pins_dir()).await? {
        let Some(path) = pins_dir().join_listed(&name) else { continue };
        match storage.get(&path).await {
            Ok(text) => pinned.extend(parse_digests(&text)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pinned)
}

/// The serving side of the protocol, kept by every [`Registry`].
///
/// It remembers which blobs and manifests were recently confirmed to clients (a `HEAD` that
/// found a blob, an upload or mount that stored one, a manifest's references), because a client
/// that was told "the registry has it" will not upload it again. When it sees a collection
/// announced (checked at most once a second, on requests and by [`spawn_watch`]), it pins
/// everything confirmed within the collection's grace period (an hour at most) in one object, then pins each further
/// confirmation as it happens, and makes a request wait while the collection is about to
/// delete what it needs.
#[derive(Debug, Default)]
pub struct Guard {
    state: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    /// When the announcement was last checked.
    checked: Option<Instant>,
    /// The announcement being honoured (its modification time), if a collection runs.
    run: Option<SystemTime>,
    /// Digests pinned during `run`.
    pinned: HashSet<Digest>,
    /// Digests confirmed to clients, and when.
    recent: HashMap<Digest, Instant>,
}

/// How long a confirmation to a client is remembered at most; a collection's announcement says
/// how far back to pin (its grace period).
const RECENT_WINDOW: Duration = Duration::from_secs(3600);
/// Most confirmations remembered; older ones are forgotten first.
const MAX_RECENT: usize = 200_000;

impl Guard {
    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a client relies on `digests` existing; while a collection runs, pins them
    /// and, if the collection is about to delete any of them, waits until it has finished (the
    /// caller then checks existence as usual). Without a collection it costs a map insert and
    /// at most one storage `stat` a second.
    pub async fn protect(&self, storage: &dyn Storage, digests: &[Digest]) -> Result<(), StorageError> {
        if digests.is_empty() {
            return Ok(());
        }
        self.remember(digests);
        if self.current_run(storage).await?.is_none() {
            return Ok(());
        }
        let unpinned: Vec<Digest> = {
            let state = self.lock();
            digests.iter().filter(|d| !state.pinned.contains(*d)).cloned().collect()
        };
        if !unpinned.is_empty() {
            pin(storage, &unpinned).await?;
            self.lock().pinned.extend(unpinned);
        }
        let deadline = Instant::now() + DOOMED_WAIT;
        loop {
            let doomed = match storage.get(&doomed_path()).await {
                Ok(text) => parse_digests(&text),
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            };
            if !digests.iter().any(|d| doomed.contains(d)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let message = "a garbage collection that is deleting content this request names has not \
                               finished within two minutes; retry";
                return Err(StorageError::Backend {
                    path: doomed_path(),
                    source: std::io::Error::other(message),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn remember(&self, digests: &[Digest]) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.recent.len() + digests.len() > MAX_RECENT {
            state.recent.retain(|_, at| now.duration_since(*at) < RECENT_WINDOW);
            if state.recent.len() + digests.len() > MAX_RECENT {
                let mut times: Vec<Instant> = state.recent.values().copied().collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                state.recent.retain(|_, at| *at > cut);
            }
        }
        for d in digests {
            state.recent.insert(d.clone(), now);
        }
    }

    /// The running collection's announcement, checked at most once a second. On seeing a new
    /// one, pins every recent confirmation first.
    async fn current_run(&self, storage: &dyn Storage) -> Result<Option<SystemTime>, StorageError> {
        {
            let state = self.lock();
            if state.checked.is_some_and(|at| at.elapsed() < ACTIVE_CACHE) {
                return Ok(state.run);
            }
        }
        let run = match storage.stat(&active_path()).await {
            Ok(meta) if meta.modified.is_none_or(|m| m.elapsed().map_or(true, |age| age < LEASE)) => {
                Some(meta.modified.unwrap_or(SystemTime::UNIX_EPOCH))
            }
            Ok(_) => None,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        {
            let mut state = self.lock();
            state.checked = Some(Instant::now());
            if state.run == run {
                return Ok(run);
            }
            state.run = run;
            state.pinned.clear();
            if run.is_none() {
                return Ok(None);
            }
        }
        // Only confirmations within the grace period before the announcement (and since) need a
        // pin, as the collection spares anything written later than that anyway.
        let since = run.and_then(|at| at.elapsed().ok()).unwrap_or_default();
        let grace = match storage.get(&active_path()).await {
            Ok(note) => serde_json::from_slice::<serde_json::Value>(&note)
                .ok()
                .and_then(|v| v["grace_seconds"].as_f64())
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .map_or(RECENT_WINDOW, |grace| grace.min(RECENT_WINDOW)),
            Err(e) if e.is_not_found() => return Ok(run), // finished meanwhile
            Err(e) => return Err(e),
        };
        let window = grace + since;
        let recent: Vec<Digest> = {
            let state = self.lock();
            state.recent.iter().filter(|(_, at)| at.elapsed() < window).map(|(d, _)| d.clone()).collect()
        };
        if !recent.is_empty() {
            tracing::info!(
                digests = recent.len(),
                "garbage collection announced: pinning recently used content"
            );
            pin(storage, &recent).await?;
            self.lock().pinned.extend(recent);
        }
        Ok(run)
    }
}

/// Writes a pin naming `digests`.
async fn pin(storage: &dyn Storage, digests: &[Digest]) -> Result<(), StorageError> {
    let path = pins_dir().join(&uuid::Uuid::new_v4().simple().to_string());
    storage.put(&path, digest_lines(digests)).await
}

/// Checks for a collection's announcement every second, so that a server with clients in the
/// middle of a push pins what they were told exists even before their next request.
pub fn spawn_watch(registry: Arc<Registry>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ACTIVE_CACHE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = registry.gc_guard().current_run(registry.storage()).await {
                tracing::warn!(error = %e, "cannot check for a running garbage collection");
            }
        }
    });
}
