//! Giving freed heap memory back to the operating system once the server goes quiet.
//!
//! glibc's allocator keeps what request handlers free in its arenas, ready for the next
//! allocations; after a burst of pushes and pulls that is several MiB a quiet server holds for
//! nothing (measured: `malloc_trim` on a settled server gave back 11.7 of its 26.8 MiB of
//! anonymous memory). So once requests have stopped finishing for [`QUIET`], the free pages are
//! returned, once per burst. Builds on other C libraries (musl) have nothing to trim.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// How long no request may finish before the server counts as quiet.
pub const QUIET: Duration = Duration::from_secs(5);

/// Starts the task that trims the heap each time the server goes quiet after serving requests.
pub fn spawn_idle_trim(metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(QUIET);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut trimmer = IdleTrimmer::default();
        loop {
            ticks.tick().await;
            if trimmer.due(metrics.requests_finished()) {
                // It walks every arena under its lock: off the runtime's threads.
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

/// Decides, at each tick, whether a burst of requests has just ended.
#[derive(Debug, Default)]
struct IdleTrimmer {
    /// Requests finished at the previous tick.
    seen: u64,
    /// Requests finished at the last trim.
    trimmed: u64,
}

impl IdleTrimmer {
    /// True when no request finished since the previous tick but some did since the last trim.
    fn due(&mut self, finished: u64) -> bool {
        let quiet = finished == self.seen;
        self.seen = finished;
        if quiet && finished != self.trimmed {
            self.trimmed = finished;
            return true;
        }
        false
    }
}

/// Returns the allocator's free memory to the operating system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "malloc_trim is a C function; no crate wraps it")]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases pages of free chunks; glibc
    // locks each arena while it walks it, so it is safe beside other threads' allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the allocator's free memory to the operating system (nothing to do here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_burst_after_a_quiet_tick() {
        let mut trimmer = IdleTrimmer::default();
        assert!(!trimmer.due(0), "nothing served yet");
        assert!(!trimmer.due(10), "still busy");
        assert!(!trimmer.due(25), "still busy");
        assert!(trimmer.due(25), "the burst ended");
        assert!(!trimmer.due(25), "already trimmed");
        assert!(!trimmer.due(26), "busy again");
        assert!(trimmer.due(26), "the second burst ended");
    }
}
