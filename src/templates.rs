//! The files `regctl deploy` installs on the instance, and the boot script of a scaled
//! deployment's instances, from `templates/` (embedded at build time), rendered with explicit
//! variables.
//!
//! A template names each variable as `{{name}}`. Rendering is given every variable the template
//! may use, each with a value or `None`: a line that uses a variable without a value is left
//! out (that is how optional settings stay out of the config), and a name the caller did not
//! give is an error, as is an unclosed `{{`.

use anyhow::bail;

/// The systemd unit of the registry server.
pub const SERVICE_UNIT: &str = include_str!("../templates/regctl-registry.service");
/// The server configuration: listener, authentication, logs.
pub const CONFIG: &str = include_str!("../templates/config.toml");
/// Storage in an S3 bucket.
pub const STORAGE_S3: &str = include_str!("../templates/storage-s3.toml");
/// Storage on the instance's disk.
pub const STORAGE_FILESYSTEM: &str = include_str!("../templates/storage-filesystem.toml");
/// HTTPS by ACME.
pub const TLS_ACME: &str = include_str!("../templates/tls-acme.toml");
/// HTTPS with certificate files.
pub const TLS_FILES: &str = include_str!("../templates/tls-files.toml");
/// Immutable tags.
pub const TAGS: &str = include_str!("../templates/tags.toml");
/// The boot script of a scaled deployment's instances (their user data): installs the current
/// release from the bucket, at every boot.
pub const FETCH: &str = include_str!("../templates/regctl-fetch.sh");

/// Renders `template` with `vars` (name, value); see the module documentation.
pub fn render(template: &str, vars: &[(&str, Option<String>)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len());
    'lines: for line in template.split_inclusive('\n') {
        let mut rendered = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                bail!("template error: unclosed {{{{ in {line:?}");
            };
            let name = &rest[start + 2..start + 2 + len];
            let Some((_, value)) = vars.iter().find(|(n, _)| *n == name) else {
                bail!("template error: no value given for {{{{{name}}}}}");
            };
            let Some(value) = value else { continue 'lines };
            rendered.push_str(&rest[..start]);
            rendered.push_str(value);
            rest = &rest[start + 2 + len + 2..];
        }
        rendered.push_str(rest);
        out.push_str(&rendered);
    }
    Ok(out)
}

/// `value` as a TOML string literal (quoted and escaped).
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_drops_lines_of_unset_variables() {
        let out =
            render("a = {{a}}\nb = {{b}}\nc\n", &[("a", Some("1".into())), ("b", None)]).expect("render");
        assert_eq!(out, "a = 1\nc\n");
        assert!(render("x = {{nope}}\n", &[]).is_err());
        assert!(render("x = {{a\n", &[("a", None)]).is_err());
        for value in ["a\"b\\c", "it's", "line\nbreak"] {
            let doc: toml::Table =
                toml::from_str(&format!("v = {}", toml_string(value))).expect("valid TOML");
            assert_eq!(doc["v"].as_str(), Some(value));
        }
    }

    #[test]
    fn every_template_variable_is_known() {
        let all = [
            "service_user",
            "binary",
            "config",
            "state_dir",
            "listen",
            "realm",
            "htpasswd",
            "bucket",
            "region",
            "s3_endpoint",
            "s3_path_style",
            "data_dir",
            "http_addr",
            "acme_cache",
            "domain",
            "acme_email",
            "acme_directory",
            "acme_staging",
            "acme_ca_roots",
            "acme_challenges",
            "tls_cert",
            "tls_key",
            "anonymous",
            "immutable",
            "mutable",
            "instorage",
            "draintime",
            "headertimeout",
            "proxies",
            "state_directory",
            "stop_timeout",
            "pointer",
            "service",
            "fetch_script",
            "fetch_unit",
            "unit",
        ];
        let vars: Vec<(&str, Option<String>)> = all.iter().map(|n| (*n, Some("\"v\"".to_string()))).collect();
        for template in
            [SERVICE_UNIT, CONFIG, STORAGE_S3, STORAGE_FILESYSTEM, TLS_ACME, TLS_FILES, TAGS, FETCH]
        {
            let out = render(template, &vars).expect("renders");
            assert!(!out.contains("{{"), "{out}");
        }
    }
}
