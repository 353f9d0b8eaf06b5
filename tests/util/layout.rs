//! Real OCI image layouts on disk, generated for the tests.
//!
//! [`ImageBuilder`] writes an `oci-layout`, an `index.json` and `blobs/sha256/…`: an OCI image
//! config, an OCI image manifest and layers that are genuine uncompressed tar archives
//! (`application/vnd.oci.image.layer.v1.tar`) filled with deterministic pseudo-random bytes.
//! Layers are streamed to disk while they are hashed, so a 100 MiB layer never sits in memory.
//! [`assert_same_blobs`] then checks that a layout copied back from a registry is bit-identical.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::Digest as _;

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One MiB, for layer sizes.
pub const MIB: u64 = 1024 * 1024;

/// A content descriptor: what a manifest says about a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Length in bytes.
    pub size: u64,
}

impl Descriptor {
    /// The descriptor as OCI JSON.
    pub fn to_json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }

    /// The hex part of the digest (the blob's file name in a layout).
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").expect("a sha256 digest")
    }
}

/// An image written to an OCI layout by [`ImageBuilder::write`].
#[derive(Debug)]
pub struct OciImage {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag it carries in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// The image manifest.
    pub manifest: Descriptor,
    /// The image config.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

impl OciImage {
    /// The skopeo/containers-image reference of this image: `oci:<dir>:<tag>`.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// The manifest's bytes as written (the ones its digest covers).
    pub fn manifest_bytes(&self) -> Vec<u8> {
        fs::read(blob_path(&self.dir, &self.manifest.digest)).expect("read the manifest blob")
    }

    /// Every blob of the image: manifest, config, then the layers.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        [&self.manifest, &self.config].into_iter().chain(&self.layers).collect()
    }
}

/// Describes an image to generate: its layers' payload sizes and a seed for their content.
///
/// The same builder always writes byte-for-byte the same image, so digests are stable across
/// runs; two builders with different seeds share no layer.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    layer_sizes: Vec<u64>,
    seed: u64,
}

impl ImageBuilder {
    /// An image whose layers carry `layer_sizes` bytes of file content each (the tar framing
    /// adds a few KiB), with content derived from `seed`.
    pub fn new(seed: u64, layer_sizes: &[u64]) -> ImageBuilder {
        ImageBuilder { layer_sizes: layer_sizes.to_vec(), seed }
    }

    /// Writes the image as a fresh OCI layout in `dir` (created if missing), tagged `tag`.
    pub fn write(&self, dir: &Path, tag: &str) -> OciImage {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("create the layout directory");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");

        let layers: Vec<Descriptor> = self
            .layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let seed = self.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                write_blob(dir, OCI_LAYER_TAR, |out| write_layer_tar(out, i, size, seed))
            })
            .collect();

        // Uncompressed layers: each diff_id is the layer's own digest.
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let history: Vec<Value> = (0..layers.len())
            .map(|i| json!({ "created": "2026-01-01T00:00:00Z", "created_by": format!("regctl test layer {i}") }))
            .collect();
        let config = json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": { "org.example.seed": self.seed.to_string() },
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        let config = write_json_blob(dir, OCI_CONFIG, &config);

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
            "annotations": { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
        });
        let manifest = write_json_blob(dir, OCI_MANIFEST, &manifest);

        let mut entry = manifest.to_json();
        entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
        fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index).expect("JSON"))
            .expect("write index.json");

        OciImage { dir: dir.to_path_buf(), tag: tag.to_string(), manifest, config, layers }
    }
}

/// The path of the blob `digest` (`sha256:<hex>`) in the layout `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("a digest is <algorithm>:<hex>");
    dir.join("blobs").join(algorithm).join(hex)
}

/// The digest of the manifest tagged `tag` in the layout `dir`'s `index.json`.
pub fn layout_manifest_digest(dir: &Path, tag: &str) -> String {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index.json"))
        .expect("index.json is JSON");
    let entries = index["manifests"].as_array().expect("index.json has manifests");
    let entry = entries
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {}: {index}", dir.display()));
    entry["digest"].as_str().expect("a digest string").to_string()
}

/// Asserts that the layout (or skopeo `dir:` directory) `actual` holds exactly the blobs
/// `expected` holds, byte for byte, and that every blob's content matches its name.
///
/// Both directories may be OCI layouts (`blobs/sha256/<hex>`); for other directories pass the
/// folder that holds the blob files.
pub fn assert_same_blobs(expected: &Path, actual: &Path) {
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        names.sort();
        names
    };
    let (expected_names, actual_names) = (names(expected), names(actual));
    assert!(!expected_names.is_empty(), "no blobs in {}", expected.display());
    assert_eq!(
        expected_names,
        actual_names,
        "the blob sets of {} and {} differ",
        expected.display(),
        actual.display()
    );
    for name in &actual_names {
        let (a, b) = (expected.join(name), actual.join(name));
        assert_eq!(format!("sha256:{name}"), sha256_file(&b), "{} does not hash to its name", b.display());
        assert!(files_equal(&a, &b), "{} and {} differ", a.display(), b.display());
    }
}

/// The `sha256:<hex>` digest of a file's content, read in a streaming way.
pub fn sha256_file(path: &Path) -> String {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Whether two files have the same bytes, compared in 1 MiB chunks.
fn files_equal(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).expect("open"), File::open(b).expect("open"));
    if fa.metadata().expect("metadata").len() != fb.metadata().expect("metadata").len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).expect("read") {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

/// SplitMix64: a tiny, fast, seedable generator. Its output does not compress, which is what a
/// layer of "real" binary content looks like to a registry.
pub struct Prng(u64);

impl Prng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// A writer that hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a blob produced by `fill` into the layout `dir`, naming it by its digest.
fn write_blob(
    dir: &Path,
    media_type: &str,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Descriptor {
    let blobs = dir.join("blobs/sha256");
    let tmp = tempfile::NamedTempFile::new_in(&blobs).expect("temporary blob file");
    let file = tmp.reopen().expect("reopen the temporary blob file");
    let mut out =
        HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: sha2::Sha256::new(), len: 0 };
    fill(&mut out).expect("write a blob");
    out.flush().expect("flush a blob");
    let hex = hex::encode(out.hasher.finalize());
    tmp.persist(blobs.join(&hex)).expect("name the blob by its digest");
    Descriptor { media_type: media_type.to_string(), digest: format!("sha256:{hex}"), size: out.len }
}

/// Writes `value` as a compact JSON blob.
fn write_json_blob(dir: &Path, media_type: &str, value: &Value) -> Descriptor {
    let bytes = serde_json::to_vec(value).expect("JSON");
    write_blob(dir, media_type, |out| out.write_all(&bytes))
}

/// Writes layer number `index` as a tar archive: a directory, a small text file and a binary
/// file of `size` pseudo-random bytes.
fn write_layer_tar(out: &mut dyn Write, index: usize, size: u64, seed: u64) -> io::Result<()> {
    let dir = format!("opt/layer-{index}/");
    tar_header(out, &dir, b'5', 0o755, 0)?;

    let text = format!("layer {index}, seed {seed}, {size} bytes of data\n");
    tar_header(out, &format!("{dir}README"), b'0', 0o644, text.len() as u64)?;
    out.write_all(text.as_bytes())?;
    tar_pad(out, text.len() as u64)?;

    tar_header(out, &format!("{dir}data.bin"), b'0', 0o644, size)?;
    let mut prng = Prng::new(seed);
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        prng.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    tar_pad(out, size)?;

    // The end of an archive: two zero blocks.
    out.write_all(&[0u8; 1024])
}

/// Writes a POSIX ustar header block (names under 100 bytes, sizes under 8 GiB).
fn tar_header(out: &mut dyn Write, name: &str, kind: u8, mode: u32, size: u64) -> io::Result<()> {
    assert!(name.len() < 100, "tar name too long: {name}");
    let mut h = [0u8; 512];
    let octal = |field: &mut [u8], value: u64| {
        let digits = format!("{value:0width$o}", width = field.len() - 1);
        field[..digits.len()].copy_from_slice(digits.as_bytes());
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_767_225_600); // mtime: 2026-01-01
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // The checksum is computed with its own field as spaces, then stored as 6 octal digits,
    // a NUL and a space.
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    out.write_all(&h)
}

/// Pads a member of `size` bytes to the next 512-byte boundary.
fn tar_pad(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let pad = (512 - size % 512) % 512;
    out.write_all(&[0u8; 512][..pad as usize])
}
