//! OCI types, validated at the edge: digests, names, tags, references and manifests, and the
//! patterns the configuration matches tags and names with.

mod digest;
mod glob;
pub mod manifest;
mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use glob::Glob;
pub use manifest::{Manifest, ManifestError};
pub use name::{Reference, ReferenceError, RepoName, Tag};
