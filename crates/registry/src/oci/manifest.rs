//! Manifest media types, parsing and validation (OCI image manifest and index, Docker schema 2
//! manifest and manifest list, artifacts).

use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Whether a manifest lists blobs (an image) or other manifests (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest or artifact: a config and layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// The kind of manifest a media type names, if it is one we serve.
pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// A content descriptor as it appears in manifests and in the referrers response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    #[serde(with = "digest_string")]
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Where the content can be fetched from instead (non-distributable layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The artifact type of the referenced manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    /// Platform of a child manifest in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

impl Descriptor {
    /// True for layers the registry may not hold (foreign / non-distributable).
    pub fn is_foreign(&self) -> bool {
        self.media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
            || self.media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            || !self.urls.is_empty()
    }
}

mod digest_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::oci::Digest;

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| D::Error::custom(format!("digest {s:?}: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<Map<String, Value>>,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The media type it is served with.
    pub media_type: String,
    /// Image or index.
    pub kind: Kind,
    /// The config blob (images).
    pub config: Option<Descriptor>,
    /// The layers (images).
    pub layers: Vec<Descriptor>,
    /// The child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to, for the referrers API.
    pub subject: Option<Descriptor>,
    /// The artifact type, as the referrers API reports it.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: Option<Map<String, Value>>,
}

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    /// The body is not a manifest we accept; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A recognised but unsupported format (Docker schema 1).
    #[error("{0}")]
    Unsupported(String),
}

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}

impl Manifest {
    /// Parses and validates `body` pushed with the `Content-Type` header `content_type`.
    ///
    /// The manifest is read as [`Manifest::read`] reads it back from storage (so nothing is
    /// accepted that garbage collection could not read), then the header, when it names a type,
    /// must be the type the bytes name or (without `mediaType`) the one their shape implies.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let header = content_type
            .map(|ct| ct.split(';').next().unwrap_or(ct).trim())
            .filter(|ct| !ct.is_empty() && *ct != "application/json");
        if let Some(ct) = header
            && ct.starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(ManifestError::Unsupported("Docker schema 1 manifests are not supported".into()));
        }
        let (manifest, named) = Manifest::from_body(body)?;
        match header {
            Some(ct) if ct != manifest.media_type => Err(invalid(if named {
                format!("Content-Type {ct} does not match the manifest's mediaType {}", manifest.media_type)
            } else if ct == DOCKER_MANIFEST || ct == DOCKER_MANIFEST_LIST {
                // A manifest is served later with the type its bytes name (`stored_media_type`);
                // Docker's types are not the default, so the bytes must name them (as
                // distribution requires), or the manifest would come back as an OCI one.
                format!("a {ct} manifest must name its mediaType")
            } else {
                format!(
                    "Content-Type {ct} does not match the manifest, which names no mediaType and has the \
                     shape of a {}",
                    manifest.media_type
                )
            })),
            _ => Ok(manifest),
        }
    }

    /// Parses and validates a manifest from its bytes alone, as stored: the media type is the
    /// body's `mediaType`, else the shape decides (index if it has `manifests`). Garbage
    /// collection reads manifests with this, and a push is validated with it.
    pub fn read(body: &[u8]) -> Result<Manifest, ManifestError> {
        Manifest::from_body(body).map(|(manifest, _)| manifest)
    }

    /// [`Manifest::read`], and whether the body names its media type.
    fn from_body(body: &[u8]) -> Result<(Manifest, bool), ManifestError> {
        check_json(body)?;
        let raw: Raw = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("manifest is not of the expected shape: {e}")))?;
        if raw.schema_version != Some(2) {
            return Err(invalid("schemaVersion must be 2"));
        }
        let named = raw.media_type.is_some();
        let media_type = match raw.media_type {
            Some(body) => body,
            None if raw.manifests.is_some() => OCI_INDEX.to_string(),
            None => OCI_MANIFEST.to_string(),
        };
        let kind = kind_of(&media_type)
            .ok_or_else(|| invalid(format!("unsupported manifest media type {media_type}")))?;
        match kind {
            Kind::Image => {
                if raw.config.is_none() {
                    return Err(invalid("an image manifest needs a config descriptor"));
                }
                if raw.layers.is_none() {
                    return Err(invalid("an image manifest needs a layers array"));
                }
                if raw.manifests.is_some() {
                    return Err(invalid("an image manifest cannot list manifests"));
                }
            }
            Kind::Index => {
                if raw.manifests.is_none() {
                    return Err(invalid("an index needs a manifests array"));
                }
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(invalid("an index cannot have a config or layers"));
                }
            }
        }
        let manifest = Manifest {
            media_type,
            kind,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        };
        Ok((manifest, named))
    }

    /// The digests this manifest names.
    pub fn references(&self) -> References {
        References {
            blobs: self.config.iter().chain(&self.layers).map(|d| d.digest.clone()).collect(),
            children: self.manifests.iter().map(|d| d.digest.clone()).collect(),
        }
    }

    /// Blobs that must exist in the repository for this manifest to be accepted.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|l| !l.is_foreign()))
    }

    /// The artifact type the referrers API reports: `artifactType`, else the config's type.
    pub fn referrer_artifact_type(&self) -> Option<String> {
        self.artifact_type.clone().or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }
}

/// The digests a manifest names: what must stay while the manifest is kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct References {
    /// Blobs: the config and the layers.
    pub blobs: Vec<Digest>,
    /// Child manifests (an index's entries).
    pub children: Vec<Digest>,
}

impl References {
    /// What a stored manifest names, read with the parser a push is validated with
    /// ([`Manifest::read`]); a Docker schema 1 manifest, which pushes are refused but older
    /// registries stored, names its layers in `fsLayers`. An error means the manifest cannot
    /// be read, so what it names is unknown.
    pub fn of_stored(body: &[u8]) -> Result<References, ManifestError> {
        match Manifest::read(body) {
            Ok(manifest) => Ok(manifest.references()),
            Err(e) => schema1_layers(body).map(|blobs| References { blobs, children: Vec::new() }).ok_or(e),
        }
    }
}

/// The layers of a Docker schema 1 manifest, if `body` is one.
fn schema1_layers(body: &[u8]) -> Option<Vec<Digest>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Schema1 {
        schema_version: i64,
        fs_layers: Vec<FsLayer>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct FsLayer {
        #[serde(with = "digest_string")]
        blob_sum: Digest,
    }
    check_json(body).ok()?;
    let schema1: Schema1 = serde_json::from_slice(body).ok()?;
    (schema1.schema_version == 1).then(|| schema1.fs_layers.into_iter().map(|l| l.blob_sum).collect())
}

/// Refuses bytes that are not strict JSON: invalid UTF-8, a lone surrogate escape, a number
/// beyond `f64`, nesting deeper than serde_json's limit (128), trailing bytes. The typed parse
/// skips the values of unknown fields without these checks, so without this a manifest could be
/// accepted that no full JSON parser (or client) reads.
fn check_json(body: &[u8]) -> Result<(), ManifestError> {
    serde_json::from_slice::<StrictJson>(body)
        .map(|_| ())
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))
}

/// Any JSON value, visited entirely (so the parser checks every string, number and nesting
/// level, as a full parse does) without being built.
struct StrictJson;

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StrictJson, D::Error> {
        d.deserialize_any(StrictJson)
    }
}

impl<'de> Visitor<'de> for StrictJson {
    type Value = StrictJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<StrictJson, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<StrictJson, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<StrictJson, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<StrictJson, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<StrictJson, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<StrictJson, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictJson, A::Error> {
        while seq.next_element::<StrictJson>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictJson, A::Error> {
        while map.next_entry::<StrictJson, StrictJson>()?.is_some() {}
        Ok(self)
    }
}

/// The media type of a stored manifest, read cheaply from its bytes.
pub fn stored_media_type(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Peek>(body) {
        Ok(Peek { media_type: Some(mt), .. }) => mt,
        Ok(Peek { manifests: Some(_), .. }) => OCI_INDEX.to_string(),
        _ => OCI_MANIFEST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(mt: &str) -> Value {
        serde_json::json!({"mediaType": mt, "digest": format!("sha256:{}", "a".repeat(64)), "size": 3})
    }

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "config": desc("application/vnd.oci.image.config.v1+json"),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar")],
        });
        if let Some(mt) = media_type {
            m["mediaType"] = mt.into();
        }
        serde_json::to_vec(&m).expect("json")
    }

    #[test]
    fn media_type_comes_from_body_or_header() {
        let m = Manifest::parse(&image(Some(OCI_MANIFEST)), Some(OCI_MANIFEST)).expect("ok");
        assert_eq!((m.media_type.as_str(), m.kind), (OCI_MANIFEST, Kind::Image));
        let m = Manifest::parse(&image(Some(DOCKER_MANIFEST)), Some(DOCKER_MANIFEST)).expect("ok");
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        let m = Manifest::parse(&image(None), Some(OCI_MANIFEST)).expect("ok");
        assert_eq!(m.media_type, OCI_MANIFEST);
        let m = Manifest::parse(&image(None), None).expect("ok");
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.required_blobs().count(), 2);
    }

    #[test]
    fn rejects_mismatch_and_bad_shapes() {
        assert!(Manifest::parse(&image(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST)).is_err());
        assert!(Manifest::parse(b"{", Some(OCI_MANIFEST)).is_err());
        assert!(Manifest::parse(br#"{"schemaVersion":1}"#, None).is_err());
        let index_with_layers = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"layers":[]}"#;
        assert!(Manifest::parse(index_with_layers, None).is_err());
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(Manifest::parse(bad_digest, None).is_err());
        assert!(matches!(
            Manifest::parse(b"{}", Some("application/vnd.docker.distribution.manifest.v1+prettyjws")),
            Err(ManifestError::Unsupported(_))
        ));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/manifest.rs): a Docker manifest or manifest list
    /// without `mediaType` in its bytes was accepted by its `Content-Type`, then served as an
    /// OCI one, since the served type is read from the stored bytes.
    #[test]
    fn docker_types_must_be_named_in_the_body() {
        let list = br#"{"schemaVersion":2,"manifests":[]}"#;
        for (body, ct) in [(image(None), DOCKER_MANIFEST), (list.to_vec(), DOCKER_MANIFEST_LIST)] {
            assert!(matches!(Manifest::parse(&body, Some(ct)), Err(ManifestError::Invalid(_))), "{ct}");
        }
        for (body, ct) in [(image(None), OCI_MANIFEST), (list.to_vec(), OCI_INDEX)] {
            let m = Manifest::parse(&body, Some(ct)).expect(ct);
            assert_eq!(stored_media_type(&body), m.media_type);
        }
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let mut m = Manifest::parse(&image(None), None).expect("ok");
        m.layers[0].media_type = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into();
        assert_eq!(m.required_blobs().count(), 1);
    }

    /// Issue 23: a value only a lenient parser skips, in a field the typed parse ignores, made
    /// a manifest that was accepted and that garbage collection could not read.
    #[test]
    fn bytes_that_are_not_strict_json_are_refused_everywhere() {
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        let cases: [(&[u8], &str); 6] = [
            (br#""\ud800""#, "escape"),
            (br#""\udc00\ud800""#, "escape"),
            (b"\"\xff\"", "invalid unicode"),
            (b"1e400", "number out of range"),
            (b"-1e400", "number out of range"),
            (deep.as_bytes(), "recursion limit"),
        ];
        let sane = image(Some(OCI_MANIFEST));
        for (value, why) in cases {
            let mut body = sane[..sane.len() - 1].to_vec();
            body.extend_from_slice(b",\"x\":");
            body.extend_from_slice(value);
            body.push(b'}');
            let shown = String::from_utf8_lossy(value);
            let Err(ManifestError::Invalid(message)) = Manifest::parse(&body, Some(OCI_MANIFEST)) else {
                panic!("{shown} was accepted");
            };
            assert!(message.starts_with("manifest is not valid JSON") && message.contains(why), "{message}");
            assert_eq!(Manifest::read(&body).map(|_| ()), Err(ManifestError::Invalid(message.clone())));
            assert!(References::of_stored(&body).is_err(), "{shown}");
        }
        let mut body = sane.clone();
        body.extend_from_slice(b" x");
        assert!(Manifest::parse(&body, None).is_err(), "trailing bytes");
        let deepest = format!("{}{}", "[".repeat(126), "]".repeat(126));
        let mut body = sane[..sane.len() - 1].to_vec();
        body.extend_from_slice(format!(",\"x\":{deepest},\"y\":1e300,\"z\":\"\\ud83d\\ude00\"}}").as_bytes());
        assert!(Manifest::parse(&body, None).is_ok(), "within the limits");
    }

    /// What a push accepts, garbage collection reads back the same: the media type and the
    /// digests named.
    #[test]
    fn what_a_push_accepts_reads_back_the_same() {
        let list = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
        let cases = [
            (image(Some(DOCKER_MANIFEST)), Some(DOCKER_MANIFEST)),
            (image(Some(OCI_MANIFEST)), None),
            (image(None), Some(OCI_MANIFEST)),
            (image(None), Some("application/json")),
            (list.clone(), Some(OCI_INDEX)),
            (list, None),
        ];
        for (body, ct) in cases {
            let pushed = Manifest::parse(&body, ct).expect("accepted");
            let read = Manifest::read(&body).expect("read back");
            assert_eq!((&read.media_type, read.kind), (&pushed.media_type, pushed.kind));
            assert_eq!(References::of_stored(&body), Ok(pushed.references()));
        }
        assert!(Manifest::parse(&image(None), Some(OCI_INDEX)).is_err());
        assert!(Manifest::parse(&image(None), Some("text/plain")).is_err());
    }

    #[test]
    fn stored_schema1_manifests_name_their_layers() {
        let d = format!("sha256:{}", "a".repeat(64));
        let schema1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{d}"}}],"history":[]}}"#);
        let refs = References::of_stored(schema1.as_bytes()).expect("schema 1");
        assert_eq!((refs.blobs.len(), refs.children.len()), (1, 0));
        assert!(Manifest::parse(schema1.as_bytes(), None).is_err(), "pushes are still refused");
        let bad = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{d}"}}],"x":1e400}}"#);
        assert!(References::of_stored(bad.as_bytes()).is_err());
        assert!(References::of_stored(b"not json").is_err());
    }

    #[test]
    fn stored_media_type_is_inferred() {
        assert_eq!(stored_media_type(&image(Some(DOCKER_MANIFEST))), DOCKER_MANIFEST);
        assert_eq!(stored_media_type(br#"{"manifests":[]}"#), OCI_INDEX);
        assert_eq!(stored_media_type(&image(None)), OCI_MANIFEST);
    }
}
