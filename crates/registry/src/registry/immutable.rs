//! Immutable tags (`[tags]` in the configuration): a tag matching a rule keeps the digest it was
//! first pushed with. Pushing that same digest again is allowed (docker and skopeo re-push
//! whole images); moving the tag to other content, or deleting it (alone, or with the
//! manifest it points at), is refused with `DENIED`, naming the rule.
//!
//! The check reads the tag's `current` link before writing it: two *first* pushes of one tag
//! racing each other can both pass it (storage has no conditional write to close that gap);
//! once a tag exists, it stays.

use super::Registry;
use crate::error::{Error, Result};
use crate::layout;
use crate::oci::{Digest, RepoName, Tag};

/// What a request would do to a tag.
#[derive(Debug, Clone, Copy)]
pub(super) enum TagChange<'a> {
    /// Point it at this digest.
    Point(&'a Digest),
    /// Delete it.
    Delete,
}

impl Registry {
    /// Refuses `change` to `tag` in `name` when a rule makes the tag immutable and the tag
    /// exists (and, for a push, points at other content).
    pub(super) async fn check_tag_change(
        &self,
        name: &RepoName,
        tag: &Tag,
        change: TagChange<'_>,
    ) -> Result<()> {
        let Some(rule) = self.tag_rules.immutable_rule(tag.as_str()) else { return Ok(()) };
        let Some(current) = self.read_link(&layout::tag_current_link(name, tag)).await? else {
            return Ok(());
        };
        let what = match change {
            TagChange::Point(digest) if *digest == current => return Ok(()),
            TagChange::Point(_) => format!("cannot be moved from {current}"),
            TagChange::Delete => "cannot be deleted".to_string(),
        };
        Err(Error::TagImmutable(format!(
            "tag \"{tag}\" of {name} is immutable (rule {:?} of [tags] immutable) and {what}: push a new tag instead",
            rule.as_str()
        )))
    }
}
