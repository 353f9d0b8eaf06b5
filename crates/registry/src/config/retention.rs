//! `[[gc.retention]]`: what a collection (`regctl gc`, or the server's scheduled runs) removes
//! beyond unreferenced blobs, per repository pattern. The first rule whose `repositories`
//! matches a repository applies to it; a repository no rule matches keeps every tag.
//!
//! ```toml
//! [[gc.retention]]
//! repositories = "team/*"        # pattern (`*`, `?`) of repository names
//! keeplast = 5                   # the 5 most recently pushed tags stay …
//! keeptags = "^v[0-9]"           # … and every tag this regular expression matches;
//!                                # other tags are deleted (without keeplast, none are)
//! untaggedolderthan = "30d"      # untagged manifests last pushed longer ago are deleted
//! ```
//!
//! A tag written within the grace period (`[gc] graceperiod`) is never deleted, whatever the
//! rules: it belongs to a push that may still be running.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::oci::Glob;

/// One retention rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// The repositories it applies to.
    pub repositories: Glob,
    /// Keep this many tags, the most recently pushed first; `None` keeps every tag.
    #[serde(default)]
    pub keeplast: Option<usize>,
    /// Tags matching this are always kept.
    #[serde(default)]
    pub keeptags: Option<TagRegex>,
    /// Delete manifests no tag reaches once their last push is older than this.
    #[serde(default, deserialize_with = "super::ops::optional_duration")]
    pub untaggedolderthan: Option<Duration>,
}

/// A regular expression over tag names (regex-lite: linear time, whatever the pattern).
#[derive(Debug, Clone)]
pub struct TagRegex(regex_lite::Regex);

impl TagRegex {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<TagRegex, String> {
        regex_lite::Regex::new(pattern)
            .map(TagRegex)
            .map_err(|e| format!("invalid keeptags {pattern:?}: {e}"))
    }

    /// True when the expression matches somewhere in `tag` (anchor it with `^…$` for the whole).
    pub fn is_match(&self, tag: &str) -> bool {
        self.0.is_match(tag)
    }
}

impl PartialEq for TagRegex {
    fn eq(&self, other: &TagRegex) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for TagRegex {}

impl<'de> Deserialize<'de> for TagRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TagRegex, D::Error> {
        TagRegex::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_from_toml() {
        let rule: RetentionRule = toml::from_str(
            "repositories = \"team/*\"\nkeeplast = 2\nkeeptags = \"^v[0-9]\"\nuntaggedolderthan = \"30d\"\n",
        )
        .expect("a valid rule");
        assert!(rule.repositories.matches("team/app"));
        assert_eq!(rule.keeplast, Some(2));
        assert!(rule.keeptags.as_ref().is_some_and(|r| r.is_match("v1.0") && !r.is_match("dev-v1")));
        assert_eq!(rule.untaggedolderthan, Some(Duration::from_secs(30 * 86_400)));
        assert!(toml::from_str::<RetentionRule>("repositories = \"*\"\nkeeptags = \"(\"\n").is_err());
        assert!(toml::from_str::<RetentionRule>("keeplast = 1\n").is_err(), "repositories is required");
    }
}
