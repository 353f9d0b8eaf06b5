//! Manifest parsing: a body as pushed, with one of the `Content-Type` headers clients send
//! (chosen by the first byte). An accepted manifest must be internally consistent, and the
//! media type it is served with later (read back from the stored bytes) must be the one it
//! was accepted as.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regctl_registry::oci::Digest;
use regctl_registry::oci::manifest::{self, Kind, Manifest};

const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some(manifest::OCI_MANIFEST),
    Some(manifest::OCI_INDEX),
    Some(manifest::DOCKER_MANIFEST),
    Some(manifest::DOCKER_MANIFEST_LIST),
    Some("application/json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let stored = manifest::stored_media_type(body);
    let Ok(parsed) = Manifest::parse(body, content_type) else { return };
    assert_eq!(manifest::kind_of(&parsed.media_type), Some(parsed.kind));
    assert_eq!(stored, parsed.media_type, "served with another media type than accepted as");
    match parsed.kind {
        Kind::Image => assert!(parsed.config.is_some() && parsed.manifests.is_empty()),
        Kind::Index => assert!(parsed.config.is_none() && parsed.layers.is_empty()),
    }
    let descriptors =
        parsed.config.iter().chain(&parsed.layers).chain(&parsed.manifests).chain(&parsed.subject);
    for descriptor in descriptors {
        let text = descriptor.digest.to_string();
        assert_eq!(text.parse::<Digest>().as_ref(), Ok(&descriptor.digest));
    }
});
