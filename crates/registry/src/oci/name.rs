//! Repository names, tags and manifest references, validated by the distribution spec's grammar.

use std::fmt;

use super::digest::{Digest, DigestError};

/// Longest repository name accepted (distribution's limit).
const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted by the grammar.
const MAX_TAG_LEN: usize = 128;

/// A repository name: `/`-separated components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates `s` as a repository name.
    pub fn parse(s: &str) -> Option<RepoName> {
        (!s.is_empty() && s.len() <= MAX_NAME_LEN && s.split('/').all(valid_component))
            .then(|| RepoName(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Validates `s` as a tag.
    pub fn parse(s: &str) -> Option<Tag> {
        let mut bytes = s.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        (first_ok && rest_ok && s.len() <= MAX_TAG_LEN).then(|| Tag(s.to_string()))
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest URL points at: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag.
    Tag(Tag),
    /// A content digest.
    Digest(Digest),
}

/// Why a reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// Neither a valid tag nor a digest.
    InvalidTag,
    /// Looks like a digest (has a `:`) but is not a valid one.
    InvalidDigest(DigestError),
}

impl Reference {
    /// The tag, when this reference is one.
    pub fn tag(&self) -> Option<&Tag> {
        match self {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        }
    }

    /// Parses a tag or, when it contains `:`, a digest.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            s.parse().map(Reference::Digest).map_err(ReferenceError::InvalidDigest)
        } else {
            Tag::parse(s).map(Reference::Tag).ok_or(ReferenceError::InvalidTag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grammar() {
        for good in ["a", "library/ubuntu", "a.b_c__d---e/f0", "x/y/z"] {
            assert!(RepoName::parse(good).is_some(), "{good}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a/../b", "..", "a b"] {
            assert!(RepoName::parse(bad).is_none(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_none());
    }

    #[test]
    fn tags_follow_the_grammar() {
        for good in ["latest", "v1.0.0", "_x", "A-b.c_d"] {
            assert!(Tag::parse(good).is_some(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "..", "a:b"] {
            assert!(Tag::parse(bad).is_none(), "{bad}");
        }
        assert!(Tag::parse(&"a".repeat(128)).is_some());
        assert!(Tag::parse(&"a".repeat(129)).is_none());
    }

    #[test]
    fn references_are_tags_or_digests() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let digest = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(Reference::parse(&digest), Ok(Reference::Digest(_))));
        assert!(matches!(Reference::parse("sha256:zz"), Err(ReferenceError::InvalidDigest(_))));
        assert_eq!(Reference::parse("bad/tag"), Err(ReferenceError::InvalidTag));
    }
}
