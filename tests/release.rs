//! The release of a scaled deployment: `regctl release publish` to a moto bucket (each part
//! once, content-addressed, the pointer last), then the instances' boot script from `regctl
//! release user-data`, run for real with the AWS CLI against moto and the install root and
//! systemctl injected: the right bytes and modes land, and a corrupted part installs nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::moto::Moto;
use crate::util::require_tool;

/// `regctl ARGS` against moto, with test credentials and no local AWS configuration.
fn regctl(dir: &Path, moto: &Moto, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regctl"))
        .args(["--endpoint-url", &moto.endpoint, "--region", "us-east-1"])
        .args(args)
        .args(["--state-file", &dir.join("regctl.toml").display().to_string()])
        .current_dir(dir)
        .envs(aws_env(dir))
        .output()
        .expect("run regctl")
}

/// The environment of an AWS client of the tests: test credentials, no profile, no IMDS.
fn aws_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", dir.join("no-aws-config").display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-aws-credentials").display().to_string()),
    ]
}

fn ok(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "failed: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Publishes `binary` to `bucket`; the JSON summary.
fn publish(dir: &Path, moto: &Moto, bucket: &str, binary: &Path) -> Value {
    let out = regctl(
        dir,
        moto,
        &[
            "--output",
            "json",
            "release",
            "publish",
            "--bucket",
            bucket,
            "--binary",
            &binary.display().to_string(),
        ],
    );
    serde_json::from_str(&ok(&out)).expect("a JSON summary")
}

/// The AWS CLI against moto (moto answers unsigned reads of these objects with 403).
fn aws(dir: &Path, moto: &Moto, args: &[&str]) -> Vec<u8> {
    let out = Command::new("aws")
        .args(args)
        .envs(aws_env(dir))
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("run aws");
    assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The key of every object version in `bucket`.
fn versions(dir: &Path, moto: &Moto, bucket: &str) -> Vec<String> {
    let listing: Value = serde_json::from_slice(&aws(
        dir,
        moto,
        &["s3api", "list-object-versions", "--bucket", bucket, "--output", "json"],
    ))
    .expect("JSON");
    listing["Versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["Key"].as_str().map(str::to_string))
        .collect()
}

/// The SHA-256 of `bytes`, hex (as the release names its parts).
fn sha256(bytes: &[u8]) -> String {
    crate::util::sha256(bytes).trim_start_matches("sha256:").to_string()
}

fn get(dir: &Path, moto: &Moto, bucket: &str, key: &str) -> Vec<u8> {
    aws(dir, moto, &["s3", "cp", "--only-show-errors", &format!("s3://{bucket}/{key}"), "-"])
}

/// A copy of a small system executable (a real ELF file) as the "server" of a release.
fn executable(dir: &Path, name: &str, from: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(from, &path).expect("copy an executable");
    path
}

#[test]
fn publish_uploads_each_part_once_under_its_sha256_and_the_pointer_last() {
    if !require_tool("aws", "pip install awscli (tests/run-all does)") {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    moto.enable_versioning(&bucket);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = executable(dir.path(), "server-1", "/usr/bin/true");

    let summary = publish(dir.path(), &moto, &bucket, &first);
    let pointer: Value = serde_json::from_slice(&get(dir.path(), &moto, &bucket, "regctl-releases/current"))
        .expect("JSON pointer");
    assert_eq!(pointer, summary["release"], "{summary:#}");
    let binary = std::fs::read(&first).expect("read");
    assert_eq!(pointer["binary"]["key"], format!("regctl-releases/{}/regctl-registry", sha256(&binary)));
    for part in ["binary", "config", "unit"] {
        let key = pointer[part]["key"].as_str().expect("a key");
        let bytes = get(dir.path(), &moto, &bucket, key);
        assert_eq!(pointer[part]["sha256"], sha256(&bytes), "{part}");
        assert!(key.starts_with(&format!("regctl-releases/{}/", sha256(&bytes))), "{key}");
        assert_eq!(pointer[part]["size"], bytes.len(), "{part}");
    }
    assert_eq!(get(dir.path(), &moto, &bucket, pointer["binary"]["key"].as_str().expect("key")), binary);
    let config =
        String::from_utf8(get(dir.path(), &moto, &bucket, pointer["config"]["key"].as_str().expect("key")))
            .expect("text");
    for line in ["addr = \"0.0.0.0:80\"", "instorage = true", &format!("bucket = \"{bucket}\"")] {
        assert!(config.contains(line), "{line} missing:\n{config}");
    }
    assert!(!config.contains("[http.tls"), "TLS is the load balancer's:\n{config}");
    let unit =
        String::from_utf8(get(dir.path(), &moto, &bucket, pointer["unit"]["key"].as_str().expect("key")))
            .expect("text");
    for line in ["KillSignal=SIGTERM\n", "TimeoutStopSec=110s\n", "StateDirectory=regctl\n"] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }
    // Four objects, the pointer written last.
    let keys = versions(dir.path(), &moto, &bucket);
    assert_eq!(keys.len(), 4, "{keys:?}");
    let uploaded: Vec<&str> =
        summary["uploaded"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    assert_eq!(uploaded.len(), 4, "{summary:#}");
    assert_eq!(uploaded.last(), Some(&"regctl-releases/current"));

    // The same release again: nothing uploaded, no new object version.
    let again = publish(dir.path(), &moto, &bucket, &first);
    assert_eq!(again["uploaded"], serde_json::json!([]), "{again:#}");
    assert_eq!(versions(dir.path(), &moto, &bucket).len(), 4);
    let out = regctl(
        dir.path(),
        &moto,
        &["release", "publish", "--bucket", &bucket, "--binary", &first.display().to_string()],
    );
    assert!(ok(&out).contains("Nothing to publish"), "{}", ok(&out));

    // Another binary: only it and the pointer.
    let second = executable(dir.path(), "server-2", "/usr/bin/false");
    let next = publish(dir.path(), &moto, &bucket, &second);
    let second_key =
        format!("regctl-releases/{}/regctl-registry", sha256(&std::fs::read(&second).expect("read")));
    assert_eq!(next["uploaded"], serde_json::json!([second_key, "regctl-releases/current"]), "{next:#}");
    assert_eq!(versions(dir.path(), &moto, &bucket).len(), 6);
}

/// What the boot-script tests start from: moto with a versioned bucket, stand-ins for
/// `systemctl` and `useradd` recording their calls, an empty install root, and the boot script
/// `release user-data` renders. `None` (locally) without the AWS CLI or moto.
struct Instance {
    moto: Moto,
    bucket: String,
    dir: tempfile::TempDir,
    stubs: PathBuf,
    calls: PathBuf,
    root: PathBuf,
    script: PathBuf,
}

fn instance() -> Option<Instance> {
    if !require_tool("aws", "pip install awscli (tests/run-all does)") {
        return None;
    }
    let moto = Moto::start()?;
    let bucket = moto.create_bucket();
    moto.enable_versioning(&bucket);
    let dir = tempfile::tempdir().expect("tempdir");
    let stubs = dir.path().join("stubs");
    std::fs::create_dir(&stubs).expect("mkdir");
    let calls = stubs.join("calls");
    recorder(&stubs, "systemctl", &calls);
    recorder(&stubs, "useradd", &calls);
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let script = dir.path().join("user-data.sh");
    let out = regctl(dir.path(), &moto, &["release", "user-data", "--bucket", &bucket]);
    std::fs::write(&script, ok(&out)).expect("write the script");
    Some(Instance { moto, bucket, dir, stubs, calls, root, script })
}

/// A stand-in for a command (`systemctl`, `useradd`) that records its arguments in `calls`.
fn recorder(dir: &Path, name: &str, calls: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n", calls.display()))
        .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Runs the boot script `script` with `args`, installing below `root`.
fn boot(script: &Path, args: &[&str], root: &Path, moto: &Moto, stubs: &Path) -> Output {
    Command::new("bash")
        .arg(script)
        .args(args)
        .envs(aws_env(stubs))
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("REGCTL_ROOT", root)
        .env("SYSTEMCTL", stubs.join("systemctl"))
        .env("USERADD", stubs.join("useradd"))
        .env("REGCTL_CONSOLE", stubs.join("console"))
        .output()
        .expect("run the boot script")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode()
        & 0o7777
}

fn take_calls(calls: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(calls).unwrap_or_default();
    let _ = std::fs::remove_file(calls);
    text.lines().map(str::to_string).collect()
}

#[test]
fn the_boot_script_installs_the_current_release_and_a_corrupted_one_replaces_nothing() {
    let Some(Instance { moto, bucket, dir, stubs, calls, root, script }) = instance() else { return };

    // No release yet: the script fails, and says so on the console.
    let out = boot(&script, &[], &root, &moto, &stubs);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let console = std::fs::read_to_string(stubs.join("console")).expect("the console got the failure");
    assert!(
        console.contains(&format!("FAILED: cannot read s3://{bucket}/regctl-releases/current")),
        "{console}"
    );
    assert!(!root.join("usr/local/bin/regctl-registry").exists());
    take_calls(&calls);

    // The first release: every part, with its mode; the script and its unit for later boots;
    // the units enabled and the server restarted.
    let first = executable(dir.path(), "server-1", "/usr/bin/true");
    let release = publish(dir.path(), &moto, &bucket, &first)["release"].clone();
    let out = boot(&script, &[], &root, &moto, &stubs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let installed = [
        ("binary", "usr/local/bin/regctl-registry", 0o755),
        ("config", "etc/regctl/config.toml", 0o644),
        ("unit", "etc/systemd/system/regctl-registry.service", 0o644),
    ];
    for (part, path, want) in installed {
        let path = root.join(path);
        let key = release[part]["key"].as_str().expect("key");
        assert_eq!(std::fs::read(&path).expect("installed"), get(dir.path(), &moto, &bucket, key), "{part}");
        assert_eq!(mode(&path), want, "{part}: {:o}", mode(&path));
    }
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/regctl-registry")).expect("read"),
        std::fs::read(&first).expect("read")
    );
    assert_eq!(
        std::fs::read(root.join("usr/local/sbin/regctl-fetch")).expect("read"),
        std::fs::read(&script).expect("read")
    );
    assert_eq!(mode(&root.join("usr/local/sbin/regctl-fetch")), 0o755);
    let fetch_unit =
        std::fs::read_to_string(root.join("etc/systemd/system/regctl-fetch.service")).expect("read");
    for line in [
        "Before=regctl-registry.service\n",
        "Type=oneshot\n",
        "ExecStart=/usr/local/sbin/regctl-fetch --boot\n",
    ] {
        assert!(fetch_unit.contains(line), "{line} missing:\n{fetch_unit}");
    }
    let mut systemctl: Vec<String> = take_calls(&calls);
    let user_created = systemctl.iter().any(|c| c.starts_with("useradd --system") && c.ends_with(" regctl"));
    let user_exists = Command::new("id").args(["-u", "regctl"]).output().is_ok_and(|o| o.status.success());
    assert!(user_created != user_exists, "useradd: {systemctl:?}");
    systemctl.retain(|c| c.starts_with("systemctl"));
    assert_eq!(
        systemctl,
        [
            "systemctl daemon-reload",
            "systemctl enable regctl-fetch.service regctl-registry.service",
            "systemctl restart regctl-registry.service"
        ]
    );

    // Again, unchanged: nothing replaced (same inode), the server started if it is not running.
    let inode =
        |p: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root.join(p)).expect("stat"));
    let before = inode("usr/local/bin/regctl-registry");
    let out = boot(&root.join("usr/local/sbin/regctl-fetch"), &["--boot"], &root, &moto, &stubs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(inode("usr/local/bin/regctl-registry"), before);
    assert!(take_calls(&calls).iter().all(|c| !c.starts_with("systemctl")), "a boot run starts nothing");
    let out = boot(&script, &[], &root, &moto, &stubs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(take_calls(&calls).contains(&"systemctl start regctl-registry.service".to_string()));

    // A new release whose binary was corrupted in the bucket: the script fails before it
    // replaces anything, and says why on the console.
    let second = executable(dir.path(), "server-2", "/usr/bin/false");
    let release = publish(dir.path(), &moto, &bucket, &second)["release"].clone();
    let key = release["binary"]["key"].as_str().expect("key");
    let damaged = dir.path().join("damaged");
    std::fs::write(&damaged, b"not the server").expect("write");
    aws(
        dir.path(),
        &moto,
        &["s3", "cp", "--only-show-errors", &damaged.display().to_string(), &format!("s3://{bucket}/{key}")],
    );
    let console_before = std::fs::read_to_string(stubs.join("console")).expect("console").len();
    let out = boot(&root.join("usr/local/sbin/regctl-fetch"), &["--boot"], &root, &moto, &stubs);
    assert!(!out.status.success(), "a corrupted binary was accepted");
    let console =
        std::fs::read_to_string(stubs.join("console")).expect("console")[console_before..].to_string();
    assert!(console.contains(&format!("FAILED: checksum mismatch for s3://{bucket}/{key}")), "{console}");
    assert!(console.contains("NOT installed"), "{console}");
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/regctl-registry")).expect("read"),
        std::fs::read(&first).expect("read")
    );
    assert_eq!(inode("usr/local/bin/regctl-registry"), before);
    assert!(!root.join("usr/local/bin/regctl-registry.regctl-new").exists(), "a temporary file was left");
    assert!(take_calls(&calls).is_empty(), "nothing restarted");

    // Published again: the damaged part (its size differs from what its key names) is
    // uploaded again; then the release installs, and the server restarts.
    let again = publish(dir.path(), &moto, &bucket, &second);
    assert_eq!(again["uploaded"], serde_json::json!([key]), "{again:#}");
    let out = boot(&script, &[], &root, &moto, &stubs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/regctl-registry")).expect("read"),
        std::fs::read(&second).expect("read")
    );
    assert!(take_calls(&calls).contains(&"systemctl restart regctl-registry.service".to_string()));
}

/// A process killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status of `GET url` with `creds`.
fn status(url: &str, creds: Option<(&str, &str)>) -> u16 {
    let request = crate::util::http().get(url);
    let request = match creds {
        Some((user, password)) => request.basic_auth(user, Some(password)),
        None => request,
    };
    request.send().map(|r| r.status().as_u16()).unwrap_or(0)
}

#[test]
fn an_installed_release_serves_from_the_bucket_with_the_users_kept_there() {
    let Some(Instance { moto, bucket, dir, stubs, root, script, .. }) = instance() else { return };

    // The real server (regctl's `serve` is the same server as regctl-registry's).
    publish(dir.path(), &moto, &bucket, Path::new(env!("CARGO_BIN_EXE_regctl")));
    let out = boot(&script, &[], &root, &moto, &stubs);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Run as the unit would, but on a loopback port and with moto as S3 (the config's
    // 0.0.0.0:80 and AWS's endpoint are an instance's).
    let addr = crate::util::free_addr();
    let _server = Running(
        Command::new(root.join("usr/local/bin/regctl-registry"))
            .args(["serve", "--config"])
            .arg(root.join("etc/regctl/config.toml"))
            .envs(aws_env(dir.path()))
            .env("REGISTRY_HTTP_ADDR", addr.to_string())
            .env("REGISTRY_STORAGE_S3_REGIONENDPOINT", &moto.endpoint)
            .env("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the installed server"),
    );
    crate::util::wait_for_port(addr, std::time::Duration::from_secs(30));
    assert_eq!(status(&format!("http://{addr}/health"), None), 200, "the load balancer's health check");
    let v2 = format!("http://{addr}/v2/");
    assert_eq!(status(&v2, Some(("alice", "alice-pw"))), 401, "no users yet");

    // A user added to the bucket, as for every instance: accepted without any restart.
    let env: Vec<(String, String)> =
        aws_env(dir.path()).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let args =
        ["add-user", "alice", "--bucket", &bucket, "--region", "us-east-1", "--endpoint-url", &moto.endpoint];
    let added = crate::util::spawn_regctl(&[&args[..], &["--password-stdin"]].concat(), "alice-pw\n", &env)
        .wait_with_output()
        .expect("add-user");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while status(&v2, Some(("alice", "alice-pw"))) != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never accepted the user added to the bucket"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status(&v2, Some(("alice", "wrong"))), 401);
}
