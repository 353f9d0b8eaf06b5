//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hasher that computes them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm registered by the OCI image spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the canonical algorithm.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest string and in storage paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// A fresh hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// Why a digest string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `algorithm:encoded` allowed by the grammar.
    #[error("malformed digest")]
    Malformed,
    /// Well-formed, but an algorithm this registry does not implement.
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
}

/// A validated content digest: a registered algorithm and its lowercase hex encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding of the hash.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Computes the digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = algorithm.hasher();
        hasher.update(data);
        hasher.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// Parses `algorithm:encoded` per the OCI digest grammar; only `sha256` and `sha512` with
    /// lowercase hex of the right length are accepted.
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .split(['+', '.', '_', '-'])
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let encoded_ok =
            !encoded.is_empty() && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
        if !algorithm_ok || !encoded_ok {
            return Err(DigestError::Malformed);
        }
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::Unsupported(other.to_string())),
        };
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(DigestError::Malformed);
        }
        Ok(Digest { algorithm, hex: encoded.to_string() })
    }
}

/// Prefixes of saved hasher states: ours, versioned, never confused with another format.
const STATE_MAGIC_SHA256: &[u8] = b"regctl-sha256-v1:";
const STATE_MAGIC_SHA512: &[u8] = b"regctl-sha512-v1:";

/// An incremental hasher for one of the registered algorithms.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm().as_str())
    }
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The hasher's internal state as bytes, so a hash can be continued later, elsewhere
    /// (an upload continued after a restart or on another server).
    pub fn to_state(&self) -> Vec<u8> {
        use sha2::digest::common::hazmat::SerializableState;
        let (magic, state) = match self {
            Hasher::Sha256(h) => (STATE_MAGIC_SHA256, h.serialize().to_vec()),
            Hasher::Sha512(h) => (STATE_MAGIC_SHA512, h.serialize().to_vec()),
        };
        [magic, &state].concat()
    }

    /// Restores a hasher saved by [`Hasher::to_state`]; `None` for anything else (such as
    /// distribution's own hash states, which use Go's format).
    pub fn from_state(bytes: &[u8]) -> Option<Hasher> {
        use sha2::digest::common::hazmat::SerializableState;
        if let Some(state) = bytes.strip_prefix(STATE_MAGIC_SHA256) {
            let state = state.try_into().ok()?;
            return sha2::Sha256::deserialize(state).ok().map(Hasher::Sha256);
        }
        let state = bytes.strip_prefix(STATE_MAGIC_SHA512)?.try_into().ok()?;
        sha2::Sha512::deserialize(state).ok().map(Hasher::Sha512)
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_registered_digests() {
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.to_string().parse::<Digest>(), Ok(d));
        let d512 = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(d512.to_string().parse::<Digest>(), Ok(d512));
    }

    #[test]
    fn hasher_state_round_trips() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = algorithm.hasher();
            h.update(&[7u8; 1000]);
            let mut restored = Hasher::from_state(&h.to_state()).expect("restore");
            h.update(b"more");
            restored.update(b"more");
            assert_eq!(restored.finish(), h.finish());
        }
        assert!(Hasher::from_state(b"sha\x03garbage").is_none());
        assert!(Hasher::from_state(b"regctl-sha256-v1:short").is_none());
    }

    #[test]
    fn rejects_malformed_and_unsupported() {
        for bad in ["", "sha256", "sha256:", ":abc", "sha256:XYZ", "sha256:abc", "SHA256:00"] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(upper.parse::<Digest>(), Err(DigestError::Malformed));
        assert!(matches!("md5:abcd".parse::<Digest>(), Err(DigestError::Unsupported(_))));
        let traversal = format!("sha256:../{}", "a".repeat(61));
        assert!(traversal.parse::<Digest>().is_err());
    }
}
