//! Where things live in storage: CNCF distribution's `docker/registry/v2` layout, so a directory
//! or bucket written by `registry:2` is served as it is, and the other way round.
//!
//! ```text
//! docker/registry/v2/blobs/<alg>/<hex[..2]>/<hex>/data               blob and manifest bytes
//! docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link    blob linked into a repo
//! .../<name>/_manifests/revisions/<alg>/<hex>/link                   manifest in a repo
//! .../<name>/_manifests/tags/<tag>/current/link                      what a tag points at
//! .../<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link            every digest the tag held
//! .../<name>/_uploads/<id>/{data,startedat}                           an upload in progress
//! .../<name>/_uploads/<id>/hashstates/<alg>/<offset>                 its running hash
//! .../<name>/_referrers/<alg>/<hex>/<alg>/<hex>/link                 ours: subject -> referrer
//! docker/registry/v2/_regctl/...                                     ours: queues, gc state
//! ```
//!
//! A link file holds the digest string it points at.

use crate::oci::{Algorithm, Digest, RepoName, Tag};
use crate::storage::StoragePath;

const ROOT: &str = "docker/registry/v2";

/// The directory of regctl's own state, beside distribution's: notification queues
/// (`notifications/<endpoint>/`) and garbage collection's coordination (`gc/`).
pub fn regctl_state() -> StoragePath {
    StoragePath::new([ROOT, "_regctl"])
}

/// The directory of every blob (`<alg>/<hex[..2]>/<hex>/data`).
pub fn blobs() -> StoragePath {
    StoragePath::new([ROOT, "blobs"])
}

/// The directory holding every repository.
pub fn repositories() -> StoragePath {
    StoragePath::new([ROOT, "repositories"])
}

/// The directory of one repository.
pub fn repository(name: &RepoName) -> StoragePath {
    repositories().join(name.as_str())
}

/// The bytes of a blob (layers, configs and manifests alike).
pub fn blob_data(digest: &Digest) -> StoragePath {
    let hex = digest.hex();
    StoragePath::new([ROOT, "blobs", digest.algorithm().as_str(), &hex[..2], hex, "data"])
}

/// The link that makes a blob readable in a repository.
pub fn layer_link(name: &RepoName, digest: &Digest) -> StoragePath {
    digest_link(repository(name).join("_layers"), digest)
}

/// The link that makes a manifest readable by digest in a repository.
pub fn revision_link(name: &RepoName, digest: &Digest) -> StoragePath {
    digest_link(manifests(name).join("revisions"), digest)
}

/// The directory of tags in a repository.
pub fn tags(name: &RepoName) -> StoragePath {
    manifests(name).join("tags")
}

/// The directory of one tag.
pub fn tag(name: &RepoName, tag: &Tag) -> StoragePath {
    tags(name).join(tag.as_str())
}

/// The link holding the digest a tag points at now.
pub fn tag_current_link(name: &RepoName, t: &Tag) -> StoragePath {
    tag(name, t).join("current/link")
}

/// The record that a tag once pointed at `digest` (kept by distribution for its history).
pub fn tag_index_link(name: &RepoName, t: &Tag, digest: &Digest) -> StoragePath {
    digest_link(tag(name, t).join("index"), digest)
}

/// The directory of an upload session.
pub fn upload(name: &RepoName, id: &str) -> StoragePath {
    repository(name).join("_uploads").join(id)
}

/// The bytes received so far by an upload session.
pub fn upload_data(name: &RepoName, id: &str) -> StoragePath {
    upload(name, id).join("data")
}

/// An upload's bytes moved into place to be hashed again (when no running hash fits).
pub fn upload_staged(name: &RepoName, id: &str) -> StoragePath {
    upload(name, id).join("staged")
}

/// When an upload session started (RFC 3339); its presence marks the session as existing.
pub fn upload_started_at(name: &RepoName, id: &str) -> StoragePath {
    upload(name, id).join("startedat")
}

/// The saved hash state of an upload's first `offset` bytes (distribution's path; our format).
pub fn upload_hash_state(name: &RepoName, id: &str, algorithm: Algorithm, offset: u64) -> StoragePath {
    upload(name, id).join("hashstates").join(algorithm.as_str()).join(&offset.to_string())
}

/// The directory of manifests whose `subject` is `subject`, one link per referrer.
pub fn referrers(name: &RepoName, subject: &Digest) -> StoragePath {
    let dir = repository(name).join("_referrers");
    dir.join(subject.algorithm().as_str()).join(subject.hex())
}

/// The link recording that `referrer` names `subject` as its subject.
pub fn referrer_link(name: &RepoName, subject: &Digest, referrer: &Digest) -> StoragePath {
    digest_link(referrers(name, subject), referrer)
}

fn manifests(name: &RepoName) -> StoragePath {
    repository(name).join("_manifests")
}

fn digest_link(dir: StoragePath, digest: &Digest) -> StoragePath {
    dir.join(digest.algorithm().as_str()).join(digest.hex()).join("link")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_distribution() {
        let name = RepoName::parse("library/app").expect("name");
        let digest: Digest = format!("sha256:ab{}", "0".repeat(62)).parse().expect("digest");
        let hex = digest.hex();
        assert_eq!(blob_data(&digest).as_str(), format!("docker/registry/v2/blobs/sha256/ab/{hex}/data"));
        assert_eq!(
            revision_link(&name, &digest).as_str(),
            format!("docker/registry/v2/repositories/library/app/_manifests/revisions/sha256/{hex}/link")
        );
        let tag = Tag::parse("v1").expect("tag");
        assert_eq!(
            tag_current_link(&name, &tag).as_str(),
            "docker/registry/v2/repositories/library/app/_manifests/tags/v1/current/link"
        );
        assert_eq!(
            layer_link(&name, &digest).as_str(),
            format!("docker/registry/v2/repositories/library/app/_layers/sha256/{hex}/link")
        );
    }
}
