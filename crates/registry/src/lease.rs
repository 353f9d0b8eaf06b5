//! Leases in storage: one process at a time, among all the servers (and `regctl gc` runs)
//! sharing a storage, does a job such as garbage collection or tidying the storage.
//!
//! A lease is one small object, `docker/registry/v2/_regctl/leases/<job>`, naming its holder
//! and when it expires. It is only ever written conditionally ([`Storage::put_if`]):
//! - taken with a create-only write (`If-None-Match: *`) when there is none;
//! - taken over with a replace-only-if-unchanged write (`If-Match`) once expired, so a holder
//!   that died (killed, its machine gone) blocks the job for at most one TTL;
//! - renewed the same way by its holder every third of its TTL while the job runs; a holder
//!   that cannot renew before its lease expires stops its job ([`Lease::hold`]);
//! - released by writing it expired, never by a delete, which could remove a lease another
//!   process took meanwhile.
//!
//! Of several processes taking one lease at once, exactly one gets it: the others' writes
//! are refused, as they all started from the same state.
//!
//! **Limits.** Expiry is compared with each process's own clock: clocks further apart than
//! the TTL (minus a third of it) let a second holder in while the first still works. A holder
//! paused longer than its TTL (a frozen VM) finds its lease taken when it wakes, and stops at
//! its next renewal, up to a third of the TTL later.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::layout;
use crate::storage::{Condition, ETag, Storage, StorageError, StoragePath};

/// The shortest TTL a configuration may set (`[gc] leasettl`): a shorter lease would expire
/// between its renewals, and one of zero would keep nobody out.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// How many times taking a lease reads it again after losing a race to another taker.
const ACQUIRE_ATTEMPTS: usize = 5;

/// Why a lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another process holds it.
    #[error("another process ({holder}) holds the {job} lease until {until}")]
    Held {
        /// The job the lease is for.
        job: String,
        /// Who holds it (host, process id and a random id).
        holder: String,
        /// When it expires unless renewed (RFC 3339).
        until: String,
    },
    /// Another process took the lease over: this one let it expire.
    #[error("the {job} lease expired and was taken over by another process")]
    Lost {
        /// The job the lease is for.
        job: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the lease object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// Who holds it.
    holder: String,
    /// When it expires, in milliseconds since the Unix epoch.
    expires_ms: u64,
}

impl Record {
    fn expires(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.expires_ms)
    }

    fn bytes(&self) -> Bytes {
        // Two plain fields: serializing cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The object of the lease of `job`.
pub fn lease_path(job: &str) -> StoragePath {
    layout::regctl_state().join("leases").join(job)
}

/// Who this process is, in a lease: readable, and unique to this taking of the lease.
fn new_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{}/pid {}/{}",
        if host.is_empty() { "unknown host" } else { host },
        std::process::id(),
        &id[..12]
    )
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    job: String,
    path: StoragePath,
    holder: String,
    ttl: Duration,
    /// The version of the lease object this process last wrote.
    tag: ETag,
    expires: SystemTime,
}

impl Lease {
    /// Takes the lease of `job` for `ttl`: creates it, or takes it over when it has expired.
    /// [`LeaseError::Held`] when another process holds it.
    pub async fn acquire(storage: &dyn Storage, job: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        let path = lease_path(job);
        let holder = new_holder();
        for _ in 0..ACQUIRE_ATTEMPTS {
            let current = match storage.get_tagged(&path).await {
                Ok((bytes, tag)) => Some((serde_json::from_slice::<Record>(&bytes).ok(), tag)),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            let condition = match &current {
                None => Condition::Absent,
                Some((Some(record), _)) if record.expires() > SystemTime::now() => {
                    return Err(held(job, record));
                }
                Some((record, tag)) => {
                    match record {
                        Some(r) if r.expires_ms > 0 => {
                            tracing::warn!(job, holder = %r.holder, "taking over a lease its holder let expire")
                        }
                        Some(_) => {}
                        None => tracing::warn!(job, %path, "taking over a lease object that cannot be read"),
                    }
                    Condition::Unchanged(tag)
                }
            };
            let expires = SystemTime::now() + ttl;
            let record = Record { holder: holder.clone(), expires_ms: millis(expires) };
            match storage.put_if(&path, record.bytes(), condition).await {
                Ok(tag) => {
                    tracing::debug!(job, %holder, "lease taken");
                    return Ok(Lease { job: job.to_string(), path, holder, ttl, tag, expires });
                }
                // Another process got in first: read what it wrote.
                Err(e) if e.is_precondition() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(LeaseError::Held {
            job: job.to_string(),
            holder: "another process".into(),
            until: "unknown".into(),
        })
    }

    /// Extends the lease to a TTL from now. [`LeaseError::Lost`] when another process took it
    /// over meanwhile.
    pub async fn renew(&mut self, storage: &dyn Storage) -> Result<(), LeaseError> {
        let expires = SystemTime::now() + self.ttl;
        let record = Record { holder: self.holder.clone(), expires_ms: millis(expires) };
        match storage.put_if(&self.path, record.bytes(), Condition::Unchanged(&self.tag)).await {
            Ok(tag) => {
                self.tag = tag;
                self.expires = expires;
                Ok(())
            }
            Err(e) if e.is_precondition() => Err(LeaseError::Lost { job: self.job.clone() }),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews the lease every third of its TTL, for ever; returns why it could not: lost to
    /// another process, or a storage failure that lasted until the lease would expire before
    /// the next renewal.
    async fn keep(&mut self, storage: &dyn Storage) -> LeaseError {
        let every = self.ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.renew(storage).await {
                Ok(()) => {}
                Err(LeaseError::Storage(e)) if SystemTime::now() + every < self.expires => {
                    tracing::warn!(job = %self.job, error = %e, "could not renew a lease; trying again");
                }
                Err(e) => return e,
            }
        }
    }

    /// Runs `work` while keeping the lease. When the lease cannot be kept, `work` is dropped
    /// (stopped at its next await) before the lease expires, and the reason is returned.
    pub async fn hold<T>(
        &mut self,
        storage: &dyn Storage,
        work: impl Future<Output = T>,
    ) -> Result<T, LeaseError> {
        tokio::select! {
            done = work => Ok(done),
            lost = self.keep(storage) => Err(lost),
        }
    }

    /// Gives the lease up, by writing it expired: the next process takes it at once.
    pub async fn release(self, storage: &dyn Storage) -> Result<(), LeaseError> {
        let record = Record { holder: self.holder.clone(), expires_ms: 0 };
        match storage.put_if(&self.path, record.bytes(), Condition::Unchanged(&self.tag)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_precondition() => Err(LeaseError::Lost { job: self.job }),
            Err(e) => Err(e.into()),
        }
    }
}

fn held(job: &str, record: &Record) -> LeaseError {
    LeaseError::Held {
        job: job.to_string(),
        holder: record.holder.clone(),
        until: humantime::format_rfc3339_seconds(record.expires()).to_string(),
    }
}

/// Runs `work` under the lease of `job`: takes it, keeps it while `work` runs, releases it.
/// [`LeaseError::Held`] (and `work` not run) when another process holds it.
pub async fn exclusive<T>(
    storage: &dyn Storage,
    job: &str,
    ttl: Duration,
    work: impl Future<Output = T>,
) -> Result<T, LeaseError> {
    let mut lease = Lease::acquire(storage, job, ttl).await?;
    let done = lease.hold(storage, work).await?;
    if let Err(e) = lease.release(storage).await {
        // It expires on its own.
        tracing::warn!(job, error = %e, "could not release a lease");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_holder_at_a_time_and_released_for_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        let lease = Lease::acquire(&storage, "job", TTL).await.expect("first");
        let refused = Lease::acquire(&storage, "job", TTL).await;
        assert!(
            matches!(&refused, Err(LeaseError::Held { holder, .. }) if *holder == lease.holder),
            "{refused:?}"
        );
        // Another job's lease is another object.
        Lease::acquire(&storage, "other", TTL).await.expect("another job");
        lease.release(&storage).await.expect("release");
        Lease::acquire(&storage, "job", TTL).await.expect("taken again once released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_racing_takers_exactly_one_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        for round in 0..2 {
            let taken =
                futures_util::future::join_all((0..8).map(|_| Lease::acquire(&storage, "race", TTL))).await;
            let won: Vec<_> = taken.into_iter().filter_map(Result::ok).collect();
            assert_eq!(won.len(), 1, "round {round}");
            // The second round races to take over an expired lease.
            let mut lease = won.into_iter().next().expect("a winner");
            lease.ttl = Duration::ZERO;
            lease.renew(&storage).await.expect("expire it");
        }
    }

    /// A holder that dies keeps the job from others only until its lease expires; then it
    /// cannot renew any more.
    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_learns_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        let short = Duration::from_millis(300);
        let mut dead = Lease::acquire(&storage, "job", short).await.expect("first");
        assert!(matches!(Lease::acquire(&storage, "job", TTL).await, Err(LeaseError::Held { .. })));
        tokio::time::sleep(short + Duration::from_millis(50)).await;
        let taker = Lease::acquire(&storage, "job", TTL).await.expect("taken over");
        assert!(matches!(dead.renew(&storage).await, Err(LeaseError::Lost { .. })));
        assert!(matches!(Lease::acquire(&storage, "job", TTL).await, Err(LeaseError::Held { .. })));
        taker.release(&storage).await.expect("release");
    }

    /// Work outlasting the TTL keeps its lease by renewing it; work whose lease is taken over
    /// meanwhile is stopped.
    #[tokio::test]
    async fn hold_renews_while_the_work_runs_and_stops_it_when_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        let ttl = Duration::from_millis(300);
        let done = exclusive(&storage, "job", ttl, async {
            tokio::time::sleep(ttl * 3).await;
            // Renewed all along: nobody else could take it.
            matches!(Lease::acquire(&storage, "job", ttl).await, Err(LeaseError::Held { .. }))
        })
        .await
        .expect("held");
        assert!(done, "the lease lapsed while its work ran");
        Lease::acquire(&storage, "job", ttl).await.expect("released at the end");

        let dir = tempfile::tempdir().expect("tempdir");
        let storage = FsStorage::new(dir.path());
        let mut lease = Lease::acquire(&storage, "job", ttl).await.expect("take");
        // Another process overwrites the lease (as a taker whose clock runs ahead would).
        let other = Record { holder: "other".into(), expires_ms: millis(SystemTime::now() + TTL) };
        storage.put(&lease_path("job"), other.bytes()).await.expect("overwrite");
        let stopped = lease.hold(&storage, tokio::time::sleep(TTL)).await;
        assert!(matches!(stopped, Err(LeaseError::Lost { .. })), "{stopped:?}");
    }
}
