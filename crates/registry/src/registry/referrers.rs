//! The referrers of a manifest, one bounded page at a time.
//!
//! A referrer's descriptor carries its manifest's `artifactType` and annotations, and a
//! manifest may be up to [`MAX_MANIFEST_SIZE`](crate::oci::manifest::MAX_MANIFEST_SIZE), nearly
//! all of it annotations. So the referrer manifests are read one at a time and dropped once
//! their descriptor is made; a descriptor keeps at most [`ANNOTATIONS_PER_DESCRIPTOR`] bytes of
//! annotations, and a page at most [`ANNOTATIONS_PER_PAGE`] and [`MAX_PAGE`] descriptors: the
//! rest follows on the next page (`Link`). Memory per request is then a manifest and a page,
//! whatever the number of referrers.

use std::fmt;
use std::io::Write;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};

use super::Registry;
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::manifest::{self, Descriptor};
use crate::oci::{Digest, Reference, RepoName};

/// Most descriptors in one page of referrers.
pub const MAX_PAGE: usize = 1000;

/// Most bytes of annotations (keys and values, as JSON text without quotes for strings) kept
/// in one referrer's descriptor. Annotations are kept in key order while they fit; the others
/// are left out (the referrer manifest itself still has them all).
pub const ANNOTATIONS_PER_DESCRIPTOR: usize = 64 << 10;

/// Most bytes of annotations and artifact types in one page of referrers; a page ends before
/// the descriptor that would take it past this (a page always holds at least one).
pub const ANNOTATIONS_PER_PAGE: usize = 1 << 20;

/// Longest `artifactType` kept in a descriptor: a media type's type and subtype are at most 127
/// characters each (RFC 6838); a longer one is no media type, and is left out of the
/// descriptor (a filter still compares it).
const MAX_ARTIFACT_TYPE: usize = 255;

/// Which referrers of a subject to list.
#[derive(Debug, Clone, Copy)]
pub struct ReferrersQuery<'a> {
    /// Only those of this artifact type (the `artifactType` filter).
    pub artifact_type: Option<&'a str>,
    /// Only those whose digest sorts after this one (the previous page's last).
    pub after: Option<&'a Digest>,
    /// At most this many descriptors (capped at [`MAX_PAGE`]).
    pub limit: usize,
}

/// One page of referrers, sorted by digest.
#[derive(Debug, Default)]
pub struct ReferrersPage {
    /// The referrers' descriptors.
    pub descriptors: Vec<Descriptor>,
    /// True when more referrers follow the last descriptor.
    pub more: bool,
}

/// What a referrer's descriptor needs from its manifest; everything else is skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerFields {
    artifact_type: Option<String>,
    config: Option<ConfigType>,
    annotations: Option<CappedAnnotations>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigType {
    media_type: String,
}

/// Annotations parsed one entry at a time, keeping those that fit in
/// [`ANNOTATIONS_PER_DESCRIPTOR`]: an entry too large is dropped as soon as it is parsed.
struct CappedAnnotations {
    kept: Map<String, Value>,
    bytes: usize,
}

impl<'de> Deserialize<'de> for CappedAnnotations {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = CappedAnnotations;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an annotations object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<CappedAnnotations, A::Error> {
                let mut capped = CappedAnnotations { kept: Map::new(), bytes: 0 };
                while let Some(key) = entries.next_key::<String>()? {
                    let value: Value = entries.next_value()?;
                    let cost = key.len() + json_len(&value);
                    if capped.bytes + cost <= ANNOTATIONS_PER_DESCRIPTOR {
                        capped.bytes += cost;
                        capped.kept.insert(key, value);
                    }
                }
                Ok(capped)
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// The length of a value as annotations are counted: a string's own bytes, anything else's
/// JSON text (counted, not written out).
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    match value {
        Value::String(s) => s.len(),
        other => {
            let mut count = Count(0);
            // Writing to a counter cannot fail.
            let _ = serde_json::to_writer(&mut count, other);
            count.0
        }
    }
}

/// A referrer's descriptor, and the bytes of annotations it kept; `None` when the bytes are
/// not a manifest.
fn descriptor_of(digest: Digest, body: &[u8]) -> Option<(Descriptor, usize)> {
    let fields: ReferrerFields = serde_json::from_slice(body).ok()?;
    let (annotations, bytes) = fields.annotations.map_or((None, 0), |a| (Some(a.kept), a.bytes));
    let descriptor = Descriptor {
        media_type: manifest::stored_media_type(body),
        digest,
        size: body.len() as u64,
        urls: Vec::new(),
        artifact_type: fields.artifact_type.or_else(|| fields.config.map(|c| c.media_type)),
        annotations,
        platform: None,
    };
    Some((descriptor, bytes))
}

impl Registry {
    /// One page of the descriptors of the manifests in `name` whose subject is `subject`, sorted
    /// by digest. Each referrer manifest is read whole, one at a time, and filtered before its
    /// descriptor is kept.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        query: ReferrersQuery<'_>,
    ) -> Result<ReferrersPage> {
        let dir = layout::referrers(name, subject);
        let limit = query.limit.min(MAX_PAGE);
        let mut page = ReferrersPage::default();
        let mut spent = 0;
        let mut algorithms = self.storage.list(&dir).await?;
        algorithms.sort_unstable();
        for algorithm in algorithms {
            // Digests sort by algorithm, then hex: resume at `after` within its algorithm.
            let mut after = match query.after {
                Some(a) if a.algorithm().as_str() == algorithm => Some(a.hex().to_string()),
                Some(a) if algorithm.as_str() < a.algorithm().as_str() => continue,
                _ => None,
            };
            loop {
                // Links are listed a page at a time (one more than still fits, to know whether
                // more follow): what is skipped below asks for the next chunk.
                let want = limit - page.descriptors.len() + 1;
                let chunk = self.storage.list_page(&dir.join(&algorithm), after.as_deref(), want).await?;
                let last_chunk = chunk.len() < want;
                for hex in chunk {
                    let digest = format!("{algorithm}:{hex}").parse::<Digest>();
                    after = Some(hex);
                    let Ok(digest) = digest else { continue };
                    let Some((descriptor, cost)) = self.referrer(name, digest, query).await? else {
                        continue;
                    };
                    let full = page.descriptors.len() >= limit
                        || (!page.descriptors.is_empty() && spent + cost > ANNOTATIONS_PER_PAGE);
                    if full {
                        page.more = true;
                        return Ok(page);
                    }
                    spent += cost;
                    page.descriptors.push(descriptor);
                }
                if last_chunk {
                    break;
                }
            }
        }
        Ok(page)
    }

    /// The descriptor of referrer `digest` and its cost against [`ANNOTATIONS_PER_PAGE`];
    /// `None` when it is gone, not a manifest, or filtered out by `query`.
    async fn referrer(
        &self,
        name: &RepoName,
        digest: Digest,
        query: ReferrersQuery<'_>,
    ) -> Result<Option<(Descriptor, usize)>> {
        let stored = match self.get_manifest(name, &Reference::Digest(digest)).await {
            Ok(stored) => stored,
            Err(Error::ManifestUnknown) => return Ok(None), // deleted since it was linked
            Err(e) => return Err(e),
        };
        let Some((mut descriptor, annotations)) = descriptor_of(stored.digest, &stored.body) else {
            return Ok(None); // not a manifest: the link outlived what it named
        };
        if query.artifact_type.is_some_and(|wanted| descriptor.artifact_type.as_deref() != Some(wanted)) {
            return Ok(None);
        }
        if descriptor.artifact_type.as_ref().is_some_and(|t| t.len() > MAX_ARTIFACT_TYPE) {
            descriptor.artifact_type = None;
        }
        let cost = annotations + descriptor.artifact_type.as_ref().map_or(0, String::len);
        Ok(Some((descriptor, cost)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        format!("sha256:{}", "b".repeat(64)).parse().expect("a digest")
    }

    #[test]
    fn annotations_are_kept_in_order_while_they_fit() {
        let big = "x".repeat(ANNOTATIONS_PER_DESCRIPTOR);
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.example.config", "digest": digest().to_string(), "size": 2},
            "layers": [],
            "annotations": {"a": "1", "b": big, "c": {"n": 2}},
        });
        let body = serde_json::to_vec(&body).expect("JSON");
        let (descriptor, bytes) = descriptor_of(digest(), &body).expect("a descriptor");
        assert_eq!(descriptor.artifact_type.as_deref(), Some("application/vnd.example.config"));
        assert_eq!(descriptor.size, body.len() as u64);
        let annotations = descriptor.annotations.expect("annotations");
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["a", "c"], "the one over the budget is dropped");
        assert_eq!(bytes, 2 + 1 + r#"{"n":2}"#.len());
    }

    #[test]
    fn an_index_without_artifact_type_has_none_and_empty_annotations_stay() {
        let body = br#"{"schemaVersion":2,"manifests":[],"annotations":{}}"#;
        let (descriptor, bytes) = descriptor_of(digest(), body).expect("a descriptor");
        assert_eq!(descriptor.media_type, manifest::OCI_INDEX);
        assert_eq!((descriptor.artifact_type, bytes), (None, 0));
        assert_eq!(descriptor.annotations, Some(Map::new()));
        assert!(descriptor_of(digest(), b"not json").is_none());
    }
}
