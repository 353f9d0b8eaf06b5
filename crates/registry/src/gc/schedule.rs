//! Collections the server runs on its own (`[gc] interval`).

use std::time::Duration;

use super::{GcError, GcOptions, collect};
use crate::units::human_bytes;

/// Runs a collection every `interval` in the background (the first one `interval` after
/// start), logging each report and counting it into `metrics`. A turn is skipped (and counted
/// as such) while another process holds the collection's lease.
pub fn spawn_scheduled(
    registry: std::sync::Arc<crate::Registry>,
    options: GcOptions,
    interval: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    tracing::info!(every = ?interval, grace = ?options.grace, delete_untagged = options.delete_untagged, "scheduled garbage collection on");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match collect(registry.storage(), &options).await {
                Ok(report) => {
                    tracing::info!(
                        dry_run = report.dry_run,
                        blobs = report.blobs.len(),
                        freed = %human_bytes(report.bytes_freed),
                        manifests = report.manifests.len(),
                        uploads = report.uploads.len(),
                        seconds = report.seconds,
                        "garbage collection finished"
                    );
                    if !report.dry_run {
                        metrics.gc_run(Some(crate::metrics::GcRun {
                            blobs: report.blobs.len() as u64,
                            bytes: report.bytes_freed,
                            manifests: report.manifests.len() as u64,
                            uploads: report.uploads.len() as u64,
                            duration: Duration::from_secs_f64(report.seconds),
                        }));
                    }
                }
                Err(GcError::Busy { holder, until }) => {
                    tracing::info!(%holder, %until, "garbage collection skipped: another process holds its lease");
                    metrics.gc_skipped();
                }
                Err(e) => {
                    tracing::error!(error = %e, "garbage collection failed");
                    metrics.gc_run(None);
                }
            }
        }
    });
}
