//! `[tags]`: tags that cannot be moved or deleted once pushed.
//!
//! ```toml
//! [tags]
//! immutable = ["v*"]        # patterns (`*`, `?`) of tags that cannot be overwritten or deleted
//! mutable = ["latest"]      # exceptions: immutable = ["*"], mutable = ["latest"] is
//!                           # "every tag but latest"
//! ```
//!
//! `REGISTRY_TAGS_IMMUTABLE` and `REGISTRY_TAGS_MUTABLE` set the lists, comma-separated.
//! Pushing the digest a tag already points at again is allowed (docker re-pushes whole images):
//! only moving the tag to other content, or deleting it, is refused.

use serde::Deserialize;

use crate::oci::Glob;

/// The tag rules.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TagsConfig {
    /// Tags matching one of these cannot be moved or deleted …
    pub immutable: Vec<Glob>,
    /// … unless they match one of these.
    pub mutable: Vec<Glob>,
}

impl TagsConfig {
    /// The `immutable` pattern that makes `tag` immutable, if any; `None` for a tag that an
    /// exception or no rule leaves mutable.
    pub fn immutable_rule(&self, tag: &str) -> Option<&Glob> {
        if self.mutable.iter().any(|g| g.matches(tag)) {
            return None;
        }
        self.immutable.iter().find(|g| g.matches(tag))
    }

    /// Applies `REGISTRY_TAGS_IMMUTABLE` or `REGISTRY_TAGS_MUTABLE`; false for other names.
    pub fn apply_env(&mut self, name: &str, value: &str) -> bool {
        let list = match name {
            "REGISTRY_TAGS_IMMUTABLE" => &mut self.immutable,
            "REGISTRY_TAGS_MUTABLE" => &mut self.mutable,
            _ => return false,
        };
        *list = value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(Glob::new).collect();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> TagsConfig {
        toml::from_str(text).expect("valid [tags]")
    }

    #[test]
    fn versions_are_immutable_and_latest_moves() {
        let tags = rules("immutable = [\"v*\"]");
        assert_eq!(tags.immutable_rule("v1.0").map(Glob::as_str), Some("v*"));
        assert_eq!(tags.immutable_rule("latest"), None);
        assert_eq!(TagsConfig::default().immutable_rule("v1.0"), None, "no rule, no immutability");
    }

    #[test]
    fn everything_but_latest() {
        let tags = rules("immutable = [\"*\"]\nmutable = [\"latest\", \"dev-*\"]");
        assert_eq!(tags.immutable_rule("v1").map(Glob::as_str), Some("*"));
        assert_eq!(tags.immutable_rule("sha-1234").map(Glob::as_str), Some("*"));
        assert_eq!(tags.immutable_rule("latest"), None);
        assert_eq!(tags.immutable_rule("dev-42"), None);
    }

    #[test]
    fn from_the_environment_and_bad_patterns() {
        let mut tags = TagsConfig::default();
        assert!(tags.apply_env("REGISTRY_TAGS_IMMUTABLE", "v*, release-*"));
        assert!(tags.apply_env("REGISTRY_TAGS_MUTABLE", "latest"));
        assert!(!tags.apply_env("REGISTRY_TAGS_OTHER", "x"));
        assert_eq!(tags.immutable_rule("release-2").map(Glob::as_str), Some("release-*"));
        assert_eq!(tags.mutable, vec![Glob::new("latest")]);
        assert!(toml::from_str::<TagsConfig>("immutable = [\"\"]").is_err(), "an empty pattern is a mistake");
        assert!(toml::from_str::<TagsConfig>("immutible = [\"v*\"]").is_err(), "unknown keys are errors");
    }
}
