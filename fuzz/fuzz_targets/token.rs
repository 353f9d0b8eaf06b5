//! Bearer tokens and `/token` scopes: any text is refused or verifies as a token this ring
//! signed (never a panic), and scopes parse into valid repository names and levels only.

#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use regctl_registry::auth::keys::KeyRing;
use regctl_registry::auth::token::{self, Kind, Requested};
use regctl_registry::oci::RepoName;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(KeyRing::generate)
}

fuzz_target!(|text: &str| {
    let now = SystemTime::now();
    for kind in [Kind::Access, Kind::Refresh] {
        // Nothing the fuzzer writes carries this ring's signature.
        assert!(token::verify(text, ring(), now, "regctl", kind).is_err(), "{text:?} verified");
    }
    for scope in token::parse_scopes(text) {
        if let Requested::Repository(name, _) = scope {
            assert!(RepoName::parse(&name).is_some(), "{name:?}");
        }
    }
});
