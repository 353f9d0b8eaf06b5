//! The TOML configuration: any text is a configuration or an error (never a panic), parsing is
//! deterministic, and an accepted configuration passes the server's own validation or fails it
//! with an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regctl_registry::config::Config;

fuzz_target!(|text: &str| {
    let Ok(config) = toml::from_str::<Config>(text) else { return };
    assert_eq!(toml::from_str::<Config>(text).ok().as_ref(), Some(&config));
    let _ = regctl_registry::tls::TlsSettings::from_config(&config.http.tls);
    let _ = regctl_registry::ops::OpsSettings::from_config(&config);
    let _ = regctl_registry::gc::GcOptions::from_config(&config.gc, &config.tags);
});
