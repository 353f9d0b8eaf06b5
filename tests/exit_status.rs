//! The exit status says what kind of failure happened (README, "Exit status").

use std::process::Command;

use crate::util::free_addr;

/// `regctl deploy` with these arguments, against an empty state file: its exit status and stderr.
fn deploy(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new(env!("CARGO_BIN_EXE_regctl"))
        .arg("deploy")
        .args(["--state-file", &dir.path().join("state.toml").display().to_string()])
        .args(["--known-hosts", &dir.path().join("known_hosts").display().to_string()])
        .args(["--binary", env!("CARGO_BIN_EXE_regctl")])
        .args(args)
        .output()
        .expect("run regctl deploy");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// An option that does not fit the others is a usage error (2), found before any connection.
#[test]
fn a_usage_error_exits_2() {
    let (code, stderr) =
        deploy(&["--host", "127.0.0.1", "--domain", "r.test", "--storage", "filesystem", "--bucket", "b"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--bucket and --s3-endpoint are for --storage s3"), "{stderr}");
}

/// An instance that does not answer SSH is a remote failure (4).
#[test]
fn an_unreachable_instance_exits_4() {
    let port = free_addr().port().to_string();
    let (code, stderr) = deploy(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--connect-wait",
        "0",
        "--domain",
        "r.test",
        "--storage",
        "filesystem",
    ]);
    assert_eq!(code, Some(4), "{stderr}");
}
