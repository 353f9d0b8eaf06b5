//! htpasswd files: any text either fails with a line number or gives users that are
//! non-empty, colon-free, one per line, with bcrypt hashes, and that survive being written
//! back out and read again.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use regctl_registry::auth::{HtpasswdError, parse_htpasswd};

fuzz_target!(|text: &str| {
    let path = Path::new("htpasswd");
    let users = match parse_htpasswd(text, path) {
        Ok(users) => users,
        Err(HtpasswdError::Entry { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count(), "line {line}");
            return;
        }
        Err(e) => panic!("parsing text cannot fail with {e}"),
    };
    assert!(users.len() <= text.lines().count());
    let mut written = String::new();
    for (user, hash) in &users {
        assert!(!user.is_empty() && !user.contains(':') && !user.starts_with('#'), "{user:?}");
        assert!(["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)), "{hash:?}");
        assert!(!user.contains('\n') && !hash.contains('\n'));
        written.push_str(&format!("{user}:{hash}\n"));
    }
    assert_eq!(parse_htpasswd(&written, path).ok().as_ref(), Some(&users), "{written:?}");
});
