//! Rule lines (`#!regctl NAME access=... repos=... expires=...`): any line either is refused
//! or gives a grant whose own rule line reads back as the same grant (expiry to the second),
//! and whose globs match any name quickly.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use regctl_registry::auth::access::parse_rule;

fuzz_target!(|line: &str| {
    let Ok((name, grant)) = parse_rule(line) else { return };
    assert!(!name.is_empty() && !name.contains('=') && !name.chars().any(char::is_whitespace), "{name:?}");
    assert!(!grant.repos.is_empty(), "{line:?}");
    let written = grant.rule_line(&name);
    let (again_name, again) = parse_rule(&written).unwrap_or_else(|e| panic!("{e}: {written:?} from {line:?}"));
    assert_eq!(again_name, name);
    assert_eq!((again.access, &again.repos), (grant.access, &grant.repos), "{written:?}");
    match (grant.expires, again.expires) {
        (None, None) => {}
        (Some(at), Some(back)) => {
            let lost = at.duration_since(back).unwrap_or_else(|_| panic!("{written:?} moved {line:?} later"));
            assert!(lost < Duration::from_secs(1), "{written:?} from {line:?}");
        }
        other => panic!("{other:?}: {written:?} from {line:?}"),
    }
    // Globs match in time proportional to glob and name, whatever they are.
    let long = format!("{}/{}", "a".repeat(200), line.get(..line.len().min(64)).unwrap_or_default());
    for glob in &grant.repos {
        let _ = glob.matches(&long);
        let _ = glob.matches("team/app");
    }
    let _ = grant.allows("team/app", grant.access, UNIX_EPOCH);
});
