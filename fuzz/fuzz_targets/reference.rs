//! Repository names, tags, digests, references and whole request paths: whatever is accepted
//! prints back as the same text, never holds a path-traversal component, and a parsed request
//! path re-parses from its canonical form to the same endpoint.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regctl_registry::oci::{Digest, Reference, RepoName, Tag};
use regctl_registry::routes::Endpoint;

/// The canonical request path of an endpoint.
fn path(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Base => "/v2/".into(),
        Endpoint::Catalog => "/v2/_catalog".into(),
        Endpoint::Tags(name) => format!("/v2/{name}/tags/list"),
        Endpoint::Manifest(name, reference) => format!("/v2/{name}/manifests/{reference}"),
        Endpoint::Blob(name, digest) => format!("/v2/{name}/blobs/{digest}"),
        Endpoint::UploadStart(name) => format!("/v2/{name}/blobs/uploads/"),
        Endpoint::Upload(name, id) => format!("/v2/{name}/blobs/uploads/{}", id.as_str()),
        Endpoint::Referrers(name, digest) => format!("/v2/{name}/referrers/{digest}"),
    }
}

/// No component a filesystem or an S3 key would treat specially.
fn safe_components(s: &str) {
    assert!(!s.contains('\\') && !s.contains('%') && !s.contains('\0'), "{s:?}");
    assert!(s.split('/').all(|c| c != ".." && c != "."), "{s:?}");
}

fuzz_target!(|s: &str| {
    if let Some(name) = RepoName::parse(s) {
        assert_eq!(name.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 255);
        assert!(s.split('/').all(|c| !c.is_empty()));
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
        safe_components(s);
    }
    if let Some(tag) = Tag::parse(s) {
        assert_eq!(tag.as_str(), s);
        assert!(s.len() <= 128 && !s.starts_with('.') && !s.contains('/'));
        safe_components(s);
    }
    if let Ok(digest) = s.parse::<Digest>() {
        assert_eq!(digest.to_string(), s);
        assert!(digest.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    if let Ok(reference) = Reference::parse(s) {
        assert_eq!(reference.to_string(), s);
    }
    if let Ok(endpoint) = Endpoint::parse(s) {
        safe_components(s.strip_prefix("/v2").unwrap_or(s));
        let canonical = path(&endpoint);
        assert_eq!(Endpoint::parse(&canonical).ok().as_ref(), Some(&endpoint), "{canonical}");
    }
});
