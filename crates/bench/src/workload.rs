//! The workload: deterministic pseudo-random blobs and the OCI images made of them.
//!
//! Every byte comes from a seeded generator, so two runs push the same content, and random
//! bytes keep anything from compressing or deduplicating them. Blobs are lists of `Bytes`
//! slices of one buffer, so sending them copies nothing and a blob made of other blobs (the
//! 1 GiB one, from the large image's layers) costs no memory.

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// Size of one body frame sent by the client.
const FRAME: usize = 1 << 20;

/// Media type of the manifests the workload pushes.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One blob: its bytes in frames, its size and its `sha256:` digest.
#[derive(Clone)]
pub struct Blob {
    /// The content, in frames of at most 1 MiB (zero-copy slices).
    pub frames: Vec<Bytes>,
    /// Total size in bytes.
    pub len: u64,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Blob {
    /// A blob of `bytes`, hashed here.
    pub fn new(bytes: Bytes) -> Blob {
        Blob::concat(&[&Blob::unhashed(bytes)])
    }

    fn unhashed(bytes: Bytes) -> Blob {
        let frames =
            (0..bytes.len()).step_by(FRAME).map(|i| bytes.slice(i..(i + FRAME).min(bytes.len()))).collect();
        Blob { frames, len: bytes.len() as u64, digest: String::new() }
    }

    /// The blob whose content is the parts one after the other (their frames are shared).
    pub fn concat(parts: &[&Blob]) -> Blob {
        let frames: Vec<Bytes> = parts.iter().flat_map(|p| p.frames.iter().cloned()).collect();
        let mut hasher = Sha256::new();
        for frame in &frames {
            hasher.update(frame);
        }
        let len = frames.iter().map(|f| f.len() as u64).sum();
        Blob { frames, len, digest: format!("sha256:{}", hex::encode(hasher.finalize())) }
    }
}

/// An image: a config, layers and the OCI manifest that lists them.
pub struct Image {
    /// Repository name.
    pub repo: String,
    /// Tag the manifest is pushed under.
    pub tag: String,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs.
    pub layers: Vec<Blob>,
    /// The manifest's bytes.
    pub manifest: Bytes,
    /// The manifest's digest.
    pub manifest_digest: String,
}

impl Image {
    /// The image of `layers` in `repo`, tagged `v1`, with a config that names its layers.
    pub fn new(repo: String, layers: Vec<Blob>) -> Image {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>() },
            "history": [{ "created_by": format!("regctl-bench {repo}") }],
        });
        let config = Blob::new(Bytes::from(config.to_string()));
        let descriptor =
            |media: &str, blob: &Blob| json!({ "mediaType": media, "digest": blob.digest, "size": blob.len });
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptor(CONFIG_TYPE, &config),
            "layers": layers.iter().map(|l| descriptor(LAYER_TYPE, l)).collect::<Vec<_>>(),
        });
        let manifest = Bytes::from(manifest.to_string());
        let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        Image { repo, tag: "v1".into(), config, layers, manifest, manifest_digest }
    }

    /// The same image under another tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Image {
        self.tag = tag.into();
        self
    }

    /// The image without the bytes of its blobs: all a pull needs to check what it reads.
    pub fn skeleton(&self) -> Image {
        let hollow = |b: &Blob| Blob { frames: Vec::new(), len: b.len, digest: b.digest.clone() };
        Image {
            repo: self.repo.clone(),
            tag: self.tag.clone(),
            config: hollow(&self.config),
            layers: self.layers.iter().map(hollow).collect(),
            manifest: self.manifest.clone(),
            manifest_digest: self.manifest_digest.clone(),
        }
    }

    /// Bytes moved by a push or a pull of this image: its blobs and its manifest.
    pub fn bytes(&self) -> u64 {
        self.config.len + self.layers.iter().map(|l| l.len).sum::<u64>() + self.manifest.len() as u64
    }
}

/// Sizes of the workload (see `--help` of the binary).
pub struct Sizes {
    /// Total size of the large image's layers, in MiB (split into 4 layers).
    pub large_mib: u64,
    /// Number of small images (3 layers each).
    pub small_images: usize,
    /// Number of concurrent pushers, each with its own blob.
    pub pushers: usize,
    /// Size of each concurrent pusher's blob, in MiB.
    pub pusher_mib: u64,
}

/// Everything the benchmark pushes and pulls.
pub struct Workload {
    /// One large image of 4 layers.
    pub large: Image,
    /// The single blob made of the large image's layers, pushed as one blob.
    pub big_blob: Blob,
    /// Many small images.
    pub small: Vec<Image>,
    /// One blob per concurrent pusher.
    pub parallel: Vec<Blob>,
}

impl Workload {
    /// Generates the workload (deterministic for given sizes).
    pub fn generate(sizes: &Sizes) -> Workload {
        let layer = sizes.large_mib * (1 << 20) / 4;
        let large_layers = (0..4).map(|i| random_blob(1000 + i, layer)).collect::<Vec<_>>();
        let big_blob = Blob::concat(&large_layers.iter().collect::<Vec<_>>());
        let large = Image::new("bench/large".into(), large_layers);

        let mut sizes_rng = Rng::new(7);
        let small = (0..sizes.small_images)
            .map(|i| {
                let layers = (0..3)
                    .map(|j| {
                        // 16 KiB to 512 KiB: the long tail of small layers real images have.
                        let len = 16 * 1024 + sizes_rng.next_u64() % (496 * 1024);
                        random_blob(10_000 + 3 * i as u64 + j, len)
                    })
                    .collect();
                Image::new(format!("bench/small-{i:03}"), layers)
            })
            .collect();

        let parallel =
            (0..sizes.pushers).map(|i| random_blob(20_000 + i as u64, sizes.pusher_mib << 20)).collect();
        Workload { large, big_blob, small, parallel }
    }
}

/// `len` pseudo-random bytes from `seed`, as a hashed blob.
pub fn random_blob(seed: u64, len: u64) -> Blob {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; len as usize];
    for chunk in buf.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    Blob::new(Bytes::from(buf))
}

/// SplitMix64: tiny, fast, and good enough that the bytes do not compress.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// This machine's single-core SHA-256 rate in bytes per second: the best of a few passes over
/// `data` (the per-core ceiling for a server that verifies every pushed byte).
pub fn sha256_rate(data: &Blob) -> f64 {
    (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            let mut hasher = Sha256::new();
            for frame in &data.frames {
                hasher.update(frame);
            }
            std::hint::black_box(hasher.finalize());
            data.len as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_deterministic_and_frames_cover_them() {
        let a = random_blob(1, 3 * FRAME as u64 + 5);
        let b = random_blob(1, 3 * FRAME as u64 + 5);
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.frames.len(), 4);
        assert_eq!(a.frames.iter().map(|f| f.len() as u64).sum::<u64>(), a.len);
        assert_ne!(a.digest, random_blob(2, 3 * FRAME as u64 + 5).digest);
    }

    #[test]
    fn concat_hashes_the_joined_bytes() {
        let (a, b) = (random_blob(1, 100), random_blob(2, 50));
        let mut joined = a.frames.concat();
        joined.extend_from_slice(&b.frames.concat());
        assert_eq!(Blob::concat(&[&a, &b]).digest, Blob::new(Bytes::from(joined)).digest);
    }

    #[test]
    fn manifests_list_their_blobs() {
        let image = Image::new("r".into(), vec![random_blob(1, 10)]);
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).expect("JSON");
        assert_eq!(manifest["layers"][0]["digest"], image.layers[0].digest.as_str());
        assert_eq!(manifest["config"]["size"], image.config.len);
        assert_eq!(image.manifest_digest, format!("sha256:{}", hex::encode(Sha256::digest(&image.manifest))));
    }
}
