//! Shell-style patterns for tags and repository names in the configuration: `*` matches any
//! run of characters (including none, and `/` in a repository name), `?` exactly one; every
//! other character matches itself. No classes or escapes: tags and names never contain `*`
//! or `?`, so nothing needs escaping.

/// A pattern such as `v*`, `release-?` or `team/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// The pattern `pattern` (any text is a pattern).
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    /// The pattern as written, for messages naming the rule.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        // Iterative matching with one backtrack point (the last `*`): linear in practice and
        // never exponential, whatever the pattern, unlike the naive recursion.
        let (p, t) = (self.0.as_bytes(), text.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(&c) if c == b'?' || c == t[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

impl<'de> serde::Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Glob, D::Error> {
        let pattern = String::deserialize(d)?;
        if pattern.is_empty() {
            return Err(serde::de::Error::custom(
                "an empty pattern matches nothing: use \"*\" for everything",
            ));
        }
        Ok(Glob(pattern))
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn stars_and_question_marks() {
        let cases = [
            ("v*", "v1.2.3", true),
            ("v*", "v", true),
            ("v*", "latest", false),
            ("v*", "av1", false),
            ("*", "", true),
            ("*", "anything", true),
            ("latest", "latest", true),
            ("latest", "latest2", false),
            ("release-?", "release-1", true),
            ("release-?", "release-10", false),
            ("*-rc*", "v1-rc2", true),
            ("*-rc*", "v1-rc", true),
            ("*-rc*", "v1-r", false),
            ("team/*", "team/app/web", true),
            ("team/*", "teams/app", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Glob::new(pattern).matches(text), want, "{pattern:?} against {text:?}");
        }
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        let pattern = Glob::new(&"*a".repeat(50));
        let text = "a".repeat(10_000) + "b";
        assert!(!pattern.matches(&text));
    }
}
