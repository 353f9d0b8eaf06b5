//! htpasswd files: any text either fails with a line number or gives entries that are
//! non-empty, colon-free names with a bcrypt hash or a token digest and a grant, and that
//! survive being written back out (with their rule lines) and read again.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use regctl_registry::auth::{HtpasswdError, Secret, TOKEN_SCHEME, parse_htpasswd};

fuzz_target!(|text: &str| {
    let path = Path::new("htpasswd");
    let lines = text.lines().count();
    let users = match parse_htpasswd(text, path) {
        Ok(users) => users,
        Err(HtpasswdError::Entry { line, .. } | HtpasswdError::Rule { line, .. }) => {
            assert!(line >= 1 && line <= lines, "line {line}");
            return;
        }
        Err(e) => panic!("parsing text cannot fail with {e}"),
    };
    assert!(users.len() <= lines);
    let mut written = String::new();
    for (user, entry) in &users {
        assert!(!user.is_empty() && !user.contains(':') && !user.starts_with('#'), "{user:?}");
        assert!(!user.contains('\n'));
        match &entry.secret {
            Secret::Bcrypt(hash) => {
                assert!(["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)), "{hash:?}");
                assert!(!hash.contains('\n'));
                written.push_str(&format!("{user}:{hash}\n"));
            }
            Secret::Token(digest) => {
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                written.push_str(&format!("{user}:{TOKEN_SCHEME}{hex}\n"));
            }
        }
        // A grant without repositories is a token's default: it has no rule line to write.
        if !entry.grant.repos.is_empty() {
            written.push_str(&entry.grant.rule_line(user));
            written.push('\n');
        }
    }
    let again = parse_htpasswd(&written, path).unwrap_or_else(|e| panic!("{e}: {written:?}"));
    assert_eq!(again.len(), users.len(), "{written:?}");
    for (user, entry) in &users {
        let back = &again[user];
        assert_eq!(back.secret, entry.secret);
        assert_eq!((back.grant.access, &back.grant.repos), (entry.grant.access, &entry.grant.repos), "{written:?}");
        assert_eq!(back.grant.expires.is_some(), entry.grant.expires.is_some(), "{written:?}");
    }
});
