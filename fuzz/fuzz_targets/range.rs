//! `Range` request headers: a resolved range is never empty or beyond the blob, one whose last
//! byte comes before its first never resolves (it is answered 416); numbers written as the RFC
//! writes them parse to exactly what they say.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regctl_registry::routes::BlobRange;

/// What holds for any parsed range against a blob of `size` bytes.
fn check(range: BlobRange, size: u64) {
    let Some(resolved) = range.resolve(size) else { return };
    if let BlobRange::From { start, end: Some(end) } = range {
        assert!(start <= end, "{range:?} resolved to {resolved:?}");
    }
    assert!(resolved.start < resolved.end && resolved.end <= size, "{range:?} of {size}: {resolved:?}");
    match range {
        BlobRange::From { start, end } => {
            assert_eq!(resolved.start, start);
            assert_eq!(resolved.end, end.map_or(size, |e| e.saturating_add(1).min(size)));
        }
        BlobRange::Suffix(n) => assert_eq!(resolved.end - resolved.start, n.min(size)),
    }
}

fuzz_target!(|input: (u64, u64, u64, &str)| {
    let (a, b, size, raw) = input;
    if let Some(range) = BlobRange::parse(raw) {
        check(range, size);
    }
    let closed = BlobRange::parse(&format!("bytes={a}-{b}"));
    assert_eq!(closed, Some(BlobRange::From { start: a, end: Some(b) }));
    assert_eq!(BlobRange::parse(&format!("bytes={a}-")), Some(BlobRange::From { start: a, end: None }));
    assert_eq!(BlobRange::parse(&format!("bytes=-{b}")), Some(BlobRange::Suffix(b)));
    assert_eq!(BlobRange::parse(&format!("bytes={a}-{b},{a}-{b}")), None, "several ranges");
    for range in [closed, Some(BlobRange::Suffix(b))].into_iter().flatten() {
        check(range, size);
    }
});
