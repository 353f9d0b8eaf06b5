//! Who may do what: access levels, repository globs, and the rule lines that carry them in
//! the htpasswd file.
//!
//! A rule is a comment line, so `htpasswd -B` (which copies comment lines when it edits a
//! file) and `registry:2` (which skips them) keep working on a file that has rules:
//!
//! ```text
//! #!regctl NAME access=pull|push|delete [repos=GLOB[,GLOB...]] [expires=RFC3339]
//! ```
//!
//! A user entry without a rule line has `delete` on every repository, as every user had
//! before rules existed; a token entry without one has no access at all. `expires` ends the
//! entry's access at that instant (tokens get it from `regctl add-token --expires`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// The marker that starts a rule line.
pub const RULE_PREFIX: &str = "#!regctl ";

/// What a caller may do to a repository; each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Pull, and upload blobs and manifests (which may move a tag).
    Push,
    /// Push, and delete manifests, tags and blobs.
    Delete,
}

impl Access {
    /// The level's name, as written in rule lines and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "push",
            Access::Delete => "delete",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Access {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Access, RuleError> {
        match s {
            "pull" => Ok(Access::Pull),
            "push" => Ok(Access::Push),
            "delete" => Ok(Access::Delete),
            _ => Err(RuleError::Access(s.to_string())),
        }
    }
}

/// A repository name pattern: `*` matches any run of characters within one path component,
/// `**` any run including `/`. `team/*` matches `team/app` but not `team/a/b`; `team/**`
/// matches both; `**` matches every repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoGlob(String);

impl RepoGlob {
    /// The glob that matches every repository.
    pub fn everything() -> RepoGlob {
        RepoGlob("**".to_string())
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for RepoGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoGlob {
    type Err = RuleError;

    /// Accepts the characters of repository names (`a-z0-9._-/`) and `*`; nothing else, so a
    /// glob cannot carry a separator of the rule line or match by surprise.
    fn from_str(s: &str) -> Result<RepoGlob, RuleError> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*".contains(c);
        if s.is_empty() || s.len() > 255 || !s.chars().all(allowed) || s.contains("***") {
            return Err(RuleError::Glob(s.to_string()));
        }
        Ok(RepoGlob(s.to_string()))
    }
}

/// Matches `pattern` against `text`: `**` is any run, `*` any run without `/`. One pass per
/// pattern element over a row of "the pattern so far matches this prefix" flags, so any glob
/// costs O(pattern × name), with no backtracking to exploit.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    let mut p = 0;
    while p < pattern.len() {
        match pattern[p] {
            b'*' => {
                let crosses = pattern.get(p + 1) == Some(&b'*');
                p += if crosses { 2 } else { 1 };
                for j in 1..row.len() {
                    row[j] = row[j] || (row[j - 1] && (crosses || text[j - 1] != b'/'));
                }
            }
            c => {
                p += 1;
                for j in (1..row.len()).rev() {
                    row[j] = row[j - 1] && text[j - 1] == c;
                }
                row[0] = false;
            }
        }
    }
    row[text.len()]
}

/// What one user or token may do: a level on the repositories its globs match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The level granted on matching repositories.
    pub access: Access,
    /// The repositories it applies to; the level is granted on a repository any of them
    /// matches, and nothing on others.
    pub repos: Vec<RepoGlob>,
    /// When the grant stops working, if ever.
    pub expires: Option<SystemTime>,
}

impl Grant {
    /// `delete` on every repository, forever: what a user without a rule line has.
    pub fn full() -> Grant {
        Grant { access: Access::Delete, repos: vec![RepoGlob::everything()], expires: None }
    }

    /// Nothing anywhere: what a token without a rule line has.
    pub fn nothing() -> Grant {
        Grant { access: Access::Pull, repos: Vec::new(), expires: None }
    }

    /// The level granted on `repository` at `now`, if any.
    pub fn on(&self, repository: &str, now: SystemTime) -> Option<Access> {
        if self.expired(now) {
            return None;
        }
        self.repos.iter().any(|glob| glob.matches(repository)).then_some(self.access)
    }

    /// Whether `need` is granted on `repository` at `now`.
    pub fn allows(&self, repository: &str, need: Access, now: SystemTime) -> bool {
        self.on(repository, now).is_some_and(|level| level >= need)
    }

    /// Whether the grant has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }

    /// Whether it covers every repository (the catalog and registry-wide views need no
    /// filtering).
    pub fn everywhere(&self) -> bool {
        self.repos.iter().any(|glob| glob.as_str() == "**")
    }

    /// The rule line for `name` that carries this grant.
    pub fn rule_line(&self, name: &str) -> String {
        let mut line = format!("{RULE_PREFIX}{name} access={}", self.access);
        if !(self.repos.len() == 1 && self.everywhere()) {
            let repos: Vec<&str> = self.repos.iter().map(RepoGlob::as_str).collect();
            line.push_str(&format!(" repos={}", repos.join(",")));
        }
        if let Some(at) = self.expires {
            line.push_str(&format!(" expires={}", humantime::format_rfc3339_seconds(at)));
        }
        line
    }
}

/// Why a rule line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not one of `pull`, `push`, `delete`.
    #[error("unknown access level {0:?} (pull, push or delete)")]
    Access(String),
    /// A glob with characters repository names cannot have.
    #[error("invalid repository glob {0:?} (lower-case letters, digits, `._-/` and `*`)")]
    Glob(String),
    /// `expires=` is not an RFC 3339 time.
    #[error("invalid expiry {0:?} (an RFC 3339 time such as 2027-01-31T12:00:00Z)")]
    Expires(String),
    /// A field this version does not know, or a field twice.
    #[error("unknown or repeated field {0:?}")]
    Field(String),
    /// No name, or no `access=`.
    #[error("a rule line is `#!regctl NAME access=LEVEL [repos=GLOB,...] [expires=TIME]`")]
    Shape,
    /// A second rule line for the same name.
    #[error("a second rule line for {0:?}")]
    Repeated(String),
}

/// Parses one rule line (with its `#!regctl ` prefix) into the name it is for and its grant.
pub fn parse_rule(line: &str) -> Result<(String, Grant), RuleError> {
    let name = rule_name(line).ok_or(RuleError::Shape)?;
    let fields = line[RULE_PREFIX.len()..].split_whitespace().skip(1);
    let (mut access, mut repos, mut expires) = (None, None, None);
    for field in fields {
        let (key, value) = field.split_once('=').ok_or_else(|| RuleError::Field(field.to_string()))?;
        let repeated = || RuleError::Field(key.to_string());
        match key {
            "access" if access.is_none() => access = Some(value.parse::<Access>()?),
            "repos" if repos.is_none() => {
                repos = Some(value.split(',').map(str::parse).collect::<Result<Vec<RepoGlob>, _>>()?);
            }
            "expires" if expires.is_none() => {
                let at = humantime::parse_rfc3339_weak(value)
                    .map_err(|_| RuleError::Expires(value.to_string()))?;
                expires = Some(at);
            }
            "access" | "repos" | "expires" => return Err(repeated()),
            _ => return Err(RuleError::Field(key.to_string())),
        }
    }
    let access = access.ok_or(RuleError::Shape)?;
    let repos = repos.unwrap_or_else(|| vec![RepoGlob::everything()]);
    Ok((name.to_string(), Grant { access, repos, expires }))
}

/// Whether `name` can be an entry's name: no `:` (the htpasswd separator), `=`, whitespace or
/// control character, so that it can carry a rule line that reads back the same.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c == ':' || c == '=' || c.is_whitespace() || c.is_control())
}

/// The name a rule line (with its `#!regctl ` prefix) is for, if it names a valid one: what
/// [`parse_rule`] reads, for editors of the file that only need to find a name's rule.
pub fn rule_name(line: &str) -> Option<&str> {
    line.strip_prefix(RULE_PREFIX)?.split_whitespace().next().filter(|n| valid_name(n))
}

/// Every rule line of an htpasswd file's text, by name, with the 1-based line number of a
/// refused line.
pub fn parse_rules(text: &str) -> Result<HashMap<String, Grant>, (usize, RuleError)> {
    let mut rules = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with(RULE_PREFIX.trim_end()) {
            continue;
        }
        let (name, grant) = parse_rule(line).map_err(|e| (i + 1, e))?;
        if rules.contains_key(&name) {
            return Err((i + 1, RuleError::Repeated(name)));
        }
        rules.insert(name, grant);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn glob(s: &str) -> RepoGlob {
        s.parse().expect("glob")
    }

    #[test]
    fn globs_match_within_or_across_components() {
        assert!(glob("team/*").matches("team/app"));
        assert!(!glob("team/*").matches("team/a/b"));
        assert!(glob("team/**").matches("team/a/b"));
        assert!(!glob("team/*").matches("teams/app"));
        assert!(glob("app").matches("app") && !glob("app").matches("app2"));
        assert!(glob("**").matches("a/b/c"));
        assert!(glob("*/base").matches("lib/base") && !glob("*/base").matches("a/lib/base"));
        assert!(glob("a*b*c").matches("axxbyyc") && !glob("a*b*c").matches("axxbyy"));
        assert!(!glob("*").matches("a/b"));
        assert!(glob("**b*c").matches("b/xbc"), "`**` takes the `/` a later `*` cannot");
        assert!(glob("team/**/base").matches("team/a/b/base") && !glob("team/**/base").matches("team/base"));
        for bad in ["", "Team/*", "a b", "a,b", "***", "a:b"] {
            assert!(bad.parse::<RepoGlob>().is_err(), "{bad:?}");
        }
        // A hostile glob against a long name ends quickly (no exponential backtracking).
        let long = "a".repeat(200);
        assert!(!glob(&"*a".repeat(60)).matches(&format!("{long}/b")));
    }

    #[test]
    fn rule_lines_round_trip_and_refuse_what_they_do_not_know() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let grant =
            Grant { access: Access::Pull, repos: vec![glob("team/*"), glob("app")], expires: Some(at) };
        let line = grant.rule_line("ci");
        assert_eq!(line, "#!regctl ci access=pull repos=team/*,app expires=2030-03-17T17:46:40Z");
        assert_eq!(parse_rule(&line), Ok(("ci".to_string(), grant)));
        assert_eq!(parse_rule("#!regctl admin access=delete"), Ok(("admin".to_string(), Grant::full())));
        assert_eq!(Grant::full().rule_line("admin"), "#!regctl admin access=delete");
        for bad in [
            "#!regctl ci",
            "#!regctl access=pull",
            "#!regctl ci access=admin",
            "#!regctl ci access=pull access=push",
            "#!regctl ci access=pull role=x",
            "#!regctl ci access=pull expires=tomorrow",
            "#!regctl ci access=pull repos=",
            "#!regctl \u{1}\0\u{b}x access=push",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_rules("a:x\n#!regctl a access=pull\n# other\n#!regctl a access=push\n"),
            Err((4, RuleError::Repeated("a".to_string())))
        );
    }

    #[test]
    fn grants_cover_their_repositories_and_levels_until_they_expire() {
        let now = SystemTime::now();
        let grant = Grant {
            access: Access::Push,
            repos: vec![glob("team/*")],
            expires: Some(now + Duration::from_secs(60)),
        };
        assert!(grant.allows("team/app", Access::Pull, now));
        assert!(grant.allows("team/app", Access::Push, now));
        assert!(!grant.allows("team/app", Access::Delete, now));
        assert!(!grant.allows("other", Access::Pull, now));
        assert!(!grant.allows("team/app", Access::Pull, now + Duration::from_secs(60)));
        assert!(!Grant::nothing().allows("x", Access::Pull, now));
        assert!(Grant::full().allows("a/b/c", Access::Delete, now));
    }
}
