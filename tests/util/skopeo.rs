//! Drives the real `skopeo` client against registries on loopback (plain HTTP).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Whether skopeo is installed (see [`super::require_tool`]): tests return early when not.
pub fn available() -> bool {
    super::require_tool("skopeo", "apt-get install skopeo")
}

/// Runs `skopeo --insecure-policy <args>` with no stdin and returns its output, whatever its
/// exit status. `--insecure-policy` keeps the tests independent of `/etc/containers/policy.json`.
pub fn run(args: &[&str]) -> Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo")
}

/// Runs skopeo and panics with its stderr unless it succeeds; returns its stdout.
pub fn run_ok(args: &[&str]) -> Vec<u8> {
    let out = run(args);
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `skopeo copy` from `src` to `dest` (any transports) over plain HTTP, with `extra` options
/// (e.g. `--dest-authfile`, `--format v2s2`); panics unless it succeeds.
pub fn copy(src: &str, dest: &str, extra: &[&str]) {
    let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[src, dest]);
    run_ok(&args);
}

/// Options that make `skopeo copy` keep every blob and manifest byte for byte. Without them,
/// skopeo gzips uncompressed layers on their way to a registry or an OCI layout, and the
/// digests change.
pub const EXACT: &[&str] = &["--preserve-digests", "--dest-oci-accept-uncompressed-layers"];

/// `skopeo copy` with [`EXACT`]: fails unless every digest is preserved.
pub fn copy_exact(src: &str, dest: &str, extra: &[&str]) {
    let mut all = EXACT.to_vec();
    all.extend_from_slice(extra);
    copy(src, dest, &all);
}

/// `skopeo copy` that returns the digest of the manifest written to `dest`.
pub fn copy_digest(src: &str, dest: &str, extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let digestfile = tmp.path().join("digest");
    let digestfile_arg = format!("--digestfile={}", digestfile.display());
    let mut all = vec![digestfile_arg.as_str()];
    all.extend_from_slice(extra);
    copy(src, dest, &all);
    std::fs::read_to_string(&digestfile).expect("skopeo wrote the digest file").trim().to_string()
}

/// `skopeo inspect --raw`: the manifest bytes exactly as the registry serves them.
pub fn inspect_raw(image: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(image);
    run_ok(&args)
}

/// `skopeo inspect`: skopeo's JSON summary (Name, Digest, Layers, …) of an image.
pub fn inspect(image: &str, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(image);
    serde_json::from_slice(&run_ok(&args)).expect("skopeo inspect prints JSON")
}

/// The `docker://` reference of `repo:tag` on the registry at `host` (`127.0.0.1:port`).
pub fn docker_ref(host: &str, repo: &str, tag: &str) -> String {
    format!("docker://{host}/{repo}:{tag}")
}

/// The `dir:` reference of a directory, skopeo's format that keeps manifests byte for byte and
/// stores each blob under its hex digest.
pub fn dir_ref(dir: &Path) -> String {
    format!("dir:{}", dir.display())
}
