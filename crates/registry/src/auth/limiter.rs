//! Limits on password guessing that never refuse a correct password because of somebody
//! else's mistakes.
//!
//! - Failed attempts are counted per (client, user) pair: [`MAX_FAILURES`] a
//!   [`FAILURE_WINDOW`], then that pair alone is answered `429` with `Retry-After` until the
//!   window ends. Other users behind the same address (a NAT, a CI runner) and the same user
//!   from elsewhere are not affected. An attempt being verified counts as a failure until it
//!   verifies, so a burst of concurrent guesses (or guesses whose connection is closed
//!   mid-check) gets no more tries than sequential ones.
//! - bcrypt runs at most [`SLOTS_PER_CLIENT`] at a time per client address and at most one per
//!   core in all, on a task that keeps its slot until bcrypt is done even if the request is
//!   abandoned: a flood of guesses costs the server bounded CPU, and requests answered from the
//!   verification cache never wait for a slot. At most [`QUEUE_PER_CLIENT`] attempts of one
//!   address wait for a slot; more are answered `429`.
//! - Once an address has failed [`CLIENT_FAILURE_BUDGET`] times in the window, whatever the
//!   user names, each further failure keeps the address's slot for [`FAILURE_PENALTY`] before it
//!   is answered: guessing many users' passwords from one address is slowed to a few a second,
//!   while a correct password from that address still gets its turn.
//!
//! A client is its address, or its /64 network for IPv6 (one host usually has a whole /64).
//! The memory used is bounded: user names are hashed to 16 bytes, and at most [`TRACKED_MAX`]
//! pairs are tracked (expired ones are dropped first; past that, new pairs are left to the slot
//! limits).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Failed attempts allowed per (client, user) pair within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window over which failed attempts are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// bcrypt verifications one client may run at once: fewer than the server's (at least 2), so
/// one address cannot take all of them.
pub const SLOTS_PER_CLIENT: usize = 1;
/// Attempts of one client that may wait for a verification slot. Generous: a burst of correct
/// first logins (64 CI jobs behind one address) waits for one verification, then each finds
/// it in the cache.
pub const QUEUE_PER_CLIENT: usize = 512;
/// Failures from one client, all users together, after which each failure is slowed down.
pub const CLIENT_FAILURE_BUDGET: u32 = 30;
/// How long a failure past the client's budget keeps its slot before it is answered.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Most (client, user) pairs whose failures are tracked.
pub const TRACKED_MAX: usize = 100_000;

/// Why an attempt is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When the client may try again.
    pub retry_after: Duration,
}

/// A client as the limits see it: an IPv4 address, or an IPv6 /64 network.
type ClientKey = IpAddr;
/// A (client, user) pair; the user is a keyed hash of the name.
type PairKey = (ClientKey, [u8; 16]);

#[derive(Debug, Clone, Copy)]
struct Attempts {
    /// Failed attempts since `since`.
    failures: u32,
    /// Attempts reserved and not yet decided (waiting for a slot, or verifying).
    pending: u32,
    /// Attempts whose password is being verified now: each may still be a failure.
    verifying: u32,
    since: Instant,
}

#[derive(Debug)]
struct Client {
    slots: Arc<Semaphore>,
    waiting: usize,
    failures: u32,
    since: Instant,
}

impl Attempts {
    fn refused(&self) -> Refused {
        Refused { retry_after: FAILURE_WINDOW.saturating_sub(self.since.elapsed()) }
    }
}

/// The limiter shared by every request of one server.
#[derive(Debug)]
pub struct Limiter {
    pairs: Mutex<HashMap<PairKey, Attempts>>,
    clients: Mutex<HashMap<ClientKey, Client>>,
    /// bcrypt verifications running in all, at most one per core.
    all: Arc<Semaphore>,
    secret: [u8; 16],
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The client key of `ip`: IPv4 (also when mapped into IPv6) as it is, IPv6 by its /64.
fn client_key(ip: IpAddr) -> ClientKey {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Default for Limiter {
    /// One verification at a time per core, and at least two.
    fn default() -> Limiter {
        Limiter::new(std::thread::available_parallelism().map_or(2, usize::from).max(2))
    }
}

impl Limiter {
    /// A limiter that runs at most `verifications` bcrypt verifications at once in all.
    pub fn new(verifications: usize) -> Limiter {
        Limiter {
            pairs: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            all: Arc::new(Semaphore::new(verifications)),
            secret: *uuid::Uuid::new_v4().as_bytes(),
        }
    }

    /// Reserves an attempt by `user` from `client`, or refuses it when that pair has failed
    /// too often. The reservation counts as a failure unless [`Reservation::succeeded`] is
    /// called.
    pub fn reserve(&self, client: Option<IpAddr>, user: &str) -> Result<Reservation<'_>, Refused> {
        let Some(client) = client.map(client_key) else {
            return Ok(Reservation { limiter: self, pair: None, client: None, verifying: false });
        };
        let pair = (client, self.user_key(user));
        let mut pairs = lock(&self.pairs);
        let now = Instant::now();
        if pairs.len() >= TRACKED_MAX && !pairs.contains_key(&pair) {
            pairs.retain(|_, a| a.pending > 0 || a.since.elapsed() < FAILURE_WINDOW);
        }
        let tracked = pairs.len() < TRACKED_MAX || pairs.contains_key(&pair);
        if tracked {
            let attempts =
                pairs.entry(pair).or_insert(Attempts { failures: 0, pending: 0, verifying: 0, since: now });
            if attempts.since.elapsed() >= FAILURE_WINDOW {
                attempts.failures = 0;
                attempts.since = now;
            }
            if attempts.failures >= MAX_FAILURES {
                return Err(attempts.refused());
            }
            attempts.pending += 1;
        }
        Ok(Reservation {
            limiter: self,
            pair: tracked.then_some(pair),
            client: Some(client),
            verifying: false,
        })
    }

    /// Waits for a verification slot for `client` (and one of the server's), or refuses when
    /// too many of the client's attempts are already waiting.
    pub async fn slot(&self, client: Option<IpAddr>) -> Result<Slot, Refused> {
        let busy = Refused { retry_after: Duration::from_secs(1) };
        let client = client.map(client_key);
        let own = match client {
            None => None,
            Some(key) => {
                let slots = {
                    let mut clients = lock(&self.clients);
                    if !clients.contains_key(&key) {
                        clients.retain(|_, c| {
                            c.waiting > 0
                                || c.slots.available_permits() < SLOTS_PER_CLIENT
                                || c.since.elapsed() < FAILURE_WINDOW
                        });
                    }
                    if clients.len() >= TRACKED_MAX && !clients.contains_key(&key) {
                        // Every tracked client is busy: this one shares the server's slots only.
                        None
                    } else {
                        let entry = clients.entry(key).or_insert_with(|| Client {
                            slots: Arc::new(Semaphore::new(SLOTS_PER_CLIENT)),
                            waiting: 0,
                            failures: 0,
                            since: Instant::now(),
                        });
                        if entry.waiting >= QUEUE_PER_CLIENT {
                            return Err(busy);
                        }
                        entry.waiting += 1;
                        Some(entry.slots.clone())
                    }
                };
                match slots {
                    None => None,
                    Some(slots) => {
                        // Counted as waiting until the permit comes or the request is abandoned.
                        let _waiting = Waiting { limiter: self, client: key };
                        Some(slots.acquire_owned().await.map_err(|_| busy)?)
                    }
                }
            }
        };
        let all = self.all.clone().acquire_owned().await.map_err(|_| busy)?;
        Ok(Slot { _own: own, _all: all })
    }

    /// Records a failure of `client` (all users together) and says whether it is past the
    /// client's budget, so its answer should be slowed down.
    fn client_failed(&self, client: ClientKey) -> bool {
        let mut clients = lock(&self.clients);
        let Some(c) = clients.get_mut(&client) else { return false };
        if c.since.elapsed() >= FAILURE_WINDOW {
            c.failures = 0;
            c.since = Instant::now();
        }
        c.failures += 1;
        c.failures > CLIENT_FAILURE_BUDGET
    }

    fn user_key(&self, user: &str) -> [u8; 16] {
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        h.update(user.as_bytes());
        let full: [u8; 32] = h.finalize().into();
        let mut key = [0; 16];
        key.copy_from_slice(&full[..16]);
        key
    }
}

/// One attempt of `client` waiting for a slot.
struct Waiting<'a> {
    limiter: &'a Limiter,
    client: ClientKey,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.limiter.clients).get_mut(&self.client) {
            c.waiting = c.waiting.saturating_sub(1);
        }
    }
}

/// The right to run one bcrypt verification, held until it is dropped.
#[derive(Debug)]
pub struct Slot {
    _own: Option<OwnedSemaphorePermit>,
    _all: OwnedSemaphorePermit,
}

/// An attempt counted against its (client, user) pair until it is decided.
#[derive(Debug)]
pub struct Reservation<'a> {
    limiter: &'a Limiter,
    pair: Option<PairKey>,
    client: Option<ClientKey>,
    /// [`Reservation::begin`] was called: the password is being verified.
    verifying: bool,
}

impl Reservation<'_> {
    /// Starts verifying, once the attempt has its slot: refused when the pair's failures, with
    /// the verifications of it still running (each may fail), reach the limit. Attempts that
    /// waited for the slot see what the ones before them decided, so concurrent guesses get
    /// no more tries than sequential ones, while concurrent correct logins are not refused.
    pub fn begin(&mut self) -> Result<(), Refused> {
        let Some(pair) = self.pair else { return Ok(()) };
        let mut pairs = lock(&self.limiter.pairs);
        let Some(a) = pairs.get_mut(&pair) else { return Ok(()) };
        if a.failures + a.verifying >= MAX_FAILURES {
            return Err(a.refused());
        }
        a.verifying += 1;
        self.verifying = true;
        Ok(())
    }

    /// The password verified: the attempt is not a failure.
    pub fn succeeded(mut self) {
        self.release(false);
    }

    /// The password did not verify. Returns how long the answer should be held back (with
    /// the slot kept) because the client is past its failure budget.
    pub fn failed(mut self) -> Option<Duration> {
        self.release(true);
        let client = self.client.take()?;
        self.limiter.client_failed(client).then_some(FAILURE_PENALTY)
    }

    fn release(&mut self, failed: bool) {
        let Some(pair) = self.pair.take() else { return };
        let mut pairs = lock(&self.limiter.pairs);
        if let Some(a) = pairs.get_mut(&pair) {
            a.pending = a.pending.saturating_sub(1);
            if self.verifying {
                a.verifying = a.verifying.saturating_sub(1);
            }
            if failed {
                a.failures += 1;
            }
        }
    }
}

impl Drop for Reservation<'_> {
    /// An attempt abandoned while its password was being verified counts as a failure: closing
    /// the connection mid-check must not be a way around the limit. One abandoned while it
    /// waited for its turn was never checked, and does not count.
    fn drop(&mut self) {
        let verifying = self.verifying;
        self.release(verifying);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    /// Reserves and begins an attempt, as a request does once it has its slot.
    fn attempt<'a>(
        limiter: &'a Limiter,
        client: Option<IpAddr>,
        user: &str,
    ) -> Result<Reservation<'a>, Refused> {
        let mut reservation = limiter.reserve(client, user)?;
        reservation.begin()?;
        Ok(reservation)
    }

    #[test]
    fn a_pair_is_refused_after_its_failures_and_only_that_pair() {
        let limiter = Limiter::default();
        for _ in 0..MAX_FAILURES {
            let _ = attempt(&limiter, ip(1), "alice").expect("under the limit").failed();
        }
        let refused = limiter.reserve(ip(1), "alice").expect_err("over the limit");
        assert!(refused.retry_after > Duration::from_secs(50) && refused.retry_after <= FAILURE_WINDOW);
        // Another user behind the same address, and alice from elsewhere, are not affected.
        attempt(&limiter, ip(1), "bob").expect("bob").succeeded();
        attempt(&limiter, ip(2), "alice").expect("alice elsewhere").succeeded();
    }

    #[test]
    fn verifications_in_progress_count_against_the_limit_and_waiting_ones_do_not() {
        let limiter = Limiter::default();
        // Reserved and waiting for a slot: not counted, however many.
        let waiting: Vec<_> = (0..50).map(|_| limiter.reserve(ip(3), "alice").expect("reserved")).collect();
        drop(waiting);
        let verifying: Vec<_> =
            (0..MAX_FAILURES).map(|_| attempt(&limiter, ip(3), "alice").expect("under the limit")).collect();
        let mut extra = limiter.reserve(ip(3), "alice").expect("failures are still under the limit");
        assert!(extra.begin().is_err(), "a verification beyond the limit while 10 may still fail");
        drop(extra);
        // A success gives its attempt back; one abandoned while verifying counts as a failure.
        let mut verifying = verifying.into_iter();
        verifying.next().expect("one").succeeded();
        drop(verifying);
        // 9 failures: one more attempt may be verified, and while it runs no other.
        let last = attempt(&limiter, ip(3), "alice").expect("the tenth attempt");
        assert!(
            attempt(&limiter, ip(3), "alice").is_err(),
            "the 9 abandoned verifications counted as failures"
        );
        let _ = last.failed();
        assert!(limiter.reserve(ip(3), "alice").is_err(), "10 failures: refused before waiting");
    }

    #[test]
    fn ipv6_clients_are_their_64_network() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("mapped");
        assert_eq!(client_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }

    #[tokio::test]
    async fn slots_bound_concurrent_verifications_per_client() {
        let limiter = Limiter::new(2);
        let held = limiter.slot(ip(4)).await.expect("first");
        let second = tokio::time::timeout(Duration::from_millis(50), limiter.slot(ip(4))).await;
        assert!(second.is_err(), "a second concurrent verification from one client waits");
        let other = tokio::time::timeout(Duration::from_millis(50), limiter.slot(ip(5))).await;
        let other = other.expect("another client does not wait").expect("a slot");
        let third = tokio::time::timeout(Duration::from_millis(50), limiter.slot(ip(6))).await;
        assert!(third.is_err(), "the server's own bound holds");
        drop((held, other));
        assert!(tokio::time::timeout(Duration::from_secs(1), limiter.slot(ip(4))).await.is_ok());
    }

    #[test]
    fn failures_past_the_client_budget_are_slowed() {
        let limiter = Limiter::default();
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(async {
            drop(limiter.slot(ip(6)).await.expect("a slot registers the client"));
        });
        let mut penalties = Vec::new();
        for i in 0..CLIENT_FAILURE_BUDGET + 2 {
            penalties.push(attempt(&limiter, ip(6), &format!("user{i}")).expect("a new pair").failed());
        }
        assert!(penalties[..CLIENT_FAILURE_BUDGET as usize].iter().all(Option::is_none));
        assert_eq!(penalties.last().copied().flatten(), Some(FAILURE_PENALTY));
    }
}
