//! The collection's side of the pin protocol ([`crate::registry::pins`]): the announcement
//! pushes see, and the pins they leave, which spare what they name.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::collection::Untagged;
use super::mark::{Mark, key};
use super::repositories::read_named;
use super::{GcError, remove};
use crate::oci::Digest;
use crate::registry::pins::{active_path, digest_lines, doomed_path, pins_dir, read_pins};
use crate::storage::Storage;

/// Writes the announcement. Only the holder of the collection's lease calls it, so an
/// announcement already there was left by a collection that died.
pub(super) async fn announce(storage: &dyn Storage, grace: Duration) -> Result<(), GcError> {
    match storage.stat(&active_path()).await {
        Ok(_) => tracing::warn!("replacing the announcement of a garbage collection that never finished"),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    // Pins of earlier collections protect nothing any more.
    remove(storage, &pins_dir()).await?;
    let note = serde_json::json!({
        "started": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "pid": std::process::id(),
        "grace_seconds": grace.as_secs_f64(),
    });
    storage.put(&active_path(), Bytes::from(note.to_string())).await?;
    Ok(())
}

/// Says what is about to go (the doomed list), then spares what pushes pinned meanwhile: a
/// pinned blob, and a pinned untagged manifest with everything it keeps, as if it were tagged.
/// Returns how many blobs were spared.
pub(super) async fn spare_pinned(
    storage: &dyn Storage,
    blobs: &mut BTreeMap<Digest, u64>,
    untagged: &mut Vec<Untagged>,
    cutoff: SystemTime,
) -> Result<usize, GcError> {
    let doomed = digest_lines(blobs.keys().chain(untagged.iter().map(|u| &u.digest)));
    storage.put(&doomed_path(), doomed).await?;
    let pinned = read_pins(storage).await?;
    if pinned.is_empty() {
        return Ok(0);
    }
    let (spared, doomed): (Vec<Untagged>, Vec<Untagged>) =
        std::mem::take(untagged).into_iter().partition(|u| pinned.contains(&u.digest));
    *untagged = doomed;
    let mut keep = Mark { marked: pinned.iter().map(key).collect(), ..Mark::default() };
    for Untagged { repository, digest, .. } in spared {
        let repo = read_named(storage, &repository, cutoff).await?;
        keep.repository(storage, &repository, &repo, vec![digest], true).await?;
    }
    // The children of a spared manifest were not all read by the mark.
    keep.refuse_on_doubt()?;
    let before = blobs.len();
    blobs.retain(|d, _| !keep.marked.contains(&key(d)));
    Ok(before - blobs.len())
}
