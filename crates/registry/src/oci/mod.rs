//! OCI types, validated at the edge: digests, names, tags, references and manifests.

mod digest;
pub mod manifest;
mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Manifest, ManifestError};
pub use name::{Reference, ReferenceError, RepoName, Tag};
