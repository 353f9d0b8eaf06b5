//! `Content-Range` of an upload chunk: never panics on any header, and `<start>-<end>` (with or
//! without the `bytes ` unit and a `/total`) gives `start` exactly when `end >= start`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regctl_registry::routes::content_range_start;

fuzz_target!(|input: (u64, u64, &str)| {
    let (start, end, raw) = input;
    let _ = content_range_start(raw);
    let want = (end >= start).then_some(start);
    for header in [
        format!("{start}-{end}"),
        format!("bytes {start}-{end}/*"),
        format!("bytes {start}-{end}/{}", end.saturating_add(1)),
    ] {
        assert_eq!(content_range_start(&header).ok(), want, "{header}");
    }
});
