//! Retention ([`crate::config::RetentionRule`]): which tags of a repository a collection
//! deletes, and from when on its untagged manifests go.

use std::time::SystemTime;

use crate::config::{RetentionRule, TagsConfig};

/// The rule for repository `name`: the first that matches.
pub(super) fn rule_for<'a>(rules: &'a [RetentionRule], name: &str) -> Option<&'a RetentionRule> {
    rules.iter().find(|r| r.repositories.matches(name))
}

/// The tags `rule` deletes among `tags` (name, last push): beyond the `keeplast` most recent,
/// not matching `keeptags`, not immutable by `protected` (an immutable tag is never deleted,
/// by a user or by retention), and pushed at or before `cutoff` (the grace period's start).
pub(super) fn expired_tags(
    rule: &RetentionRule,
    protected: &TagsConfig,
    tags: &[(String, Option<SystemTime>)],
    cutoff: SystemTime,
) -> Vec<String> {
    let Some(keep) = rule.keeplast else { return Vec::new() };
    let mut newest_first: Vec<&(String, Option<SystemTime>)> = tags.iter().collect();
    // An unknown time sorts as the newest: never delete what cannot be dated.
    newest_first.sort_by(|a, b| b.1.unwrap_or(SystemTime::now()).cmp(&a.1.unwrap_or(SystemTime::now())));
    newest_first
        .into_iter()
        .skip(keep)
        .filter(|(tag, _)| !rule.keeptags.as_ref().is_some_and(|r| r.is_match(tag)))
        .filter(|(tag, _)| protected.immutable_rule(tag).is_none())
        .filter(|(_, pushed)| pushed.is_some_and(|t| t <= cutoff))
        .map(|(tag, _)| tag.clone())
        .collect()
}

/// Untagged manifests of a repository linked at or before the returned time are deleted:
/// the rule's `untaggedolderthan`, else `delete_untagged` with the grace period; `None`: none.
pub(super) fn untagged_before(
    rule: Option<&RetentionRule>,
    delete_untagged: bool,
    now: SystemTime,
    cutoff: SystemTime,
) -> Option<SystemTime> {
    match rule.and_then(|r| r.untaggedolderthan) {
        Some(age) => Some(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH).min(cutoff)),
        None => delete_untagged.then_some(cutoff),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keep_the_last_n_and_the_matching_and_the_recent() {
        let rule: RetentionRule =
            toml::from_str("repositories = \"*\"\nkeeplast = 2\nkeeptags = \"^v\"\n").expect("a rule");
        let now = SystemTime::now();
        let ago = |h: u64| Some(now - Duration::from_secs(h * 3600));
        let tags: Vec<(String, Option<SystemTime>)> = [
            ("old", ago(50)),
            ("v1", ago(40)),
            ("older", ago(60)),
            ("newest", ago(2)),
            ("second", ago(10)),
            ("third", ago(20)),
            ("undated", None),
        ]
        .into_iter()
        .map(|(t, at)| (t.to_string(), at))
        .collect();
        let cutoff = now - Duration::from_secs(3600);
        let none = TagsConfig::default();
        let mut gone = expired_tags(&rule, &none, &tags, cutoff);
        gone.sort();
        // undated and newest are the two most recent; v1 matches; the rest go.
        assert_eq!(gone, ["old", "older", "second", "third"]);
        let recent_grace = now - Duration::from_secs(15 * 3600);
        let mut gone = expired_tags(&rule, &none, &tags, recent_grace);
        gone.sort();
        assert_eq!(gone, ["old", "older", "third"], "a tag pushed within the grace period stays");
        let keep_all: RetentionRule = toml::from_str("repositories = \"*\"\n").expect("a rule");
        assert!(expired_tags(&keep_all, &none, &tags, cutoff).is_empty(), "without keeplast no tag goes");
        let immutable: TagsConfig = toml::from_str("immutable = [\"o*\"]\n").expect("tag rules");
        let mut gone = expired_tags(&rule, &immutable, &tags, cutoff);
        gone.sort();
        assert_eq!(gone, ["second", "third"], "immutable tags are never retention's to delete");
    }

    #[test]
    fn untagged_age_per_rule() {
        let now = SystemTime::now();
        let cutoff = now - Duration::from_secs(3600);
        let rule: RetentionRule =
            toml::from_str("repositories = \"*\"\nuntaggedolderthan = \"2d\"\n").expect("a rule");
        assert_eq!(
            untagged_before(Some(&rule), false, now, cutoff),
            Some(now - Duration::from_secs(2 * 86_400))
        );
        assert_eq!(untagged_before(None, true, now, cutoff), Some(cutoff));
        assert_eq!(untagged_before(None, false, now, cutoff), None);
    }
}
