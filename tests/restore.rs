//! Issue 21, undo for the registry: `regctl history` reads the object versions of a versioned
//! bucket (moto), with `regctl serve` on it and skopeo as the client. The filesystem has no
//! versions: it refuses.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::layout::{ImageBuilder, MIB, OciImage};
use crate::util::moto::{self, Moto, Shim};
use crate::util::{self, Server, skopeo};

/// A registry on a versioned bucket of its own moto.
struct Setup {
    moto: Moto,
    /// In front of moto for regctl's own commands: it mends moto's answer to
    /// GetBucketVersioning, which the Rust SDK cannot read (see tests/moto_shim.py).
    shim: Shim,
    bucket: String,
    server: Server,
    tmp: tempfile::TempDir,
}

impl Setup {
    /// Starts moto, a versioned bucket and `regctl serve` on it; `None` when a tool is missing
    /// (skipped locally, a failure in CI).
    fn start() -> Option<Setup> {
        if !skopeo::available() {
            return None;
        }
        let moto = Moto::start()?;
        let bucket = moto.create_bucket();
        moto.enable_versioning(&bucket);
        let tmp = tempfile::tempdir().expect("temporary directory");
        let env = moto.registry_env(&bucket);
        let server = Server::start_on_env(&tmp.path().join("unused"), &[], &moto::borrowed(&env));
        let shim = Shim::start(&moto.endpoint, &[]);
        Some(Setup { moto, shim, bucket, server, tmp })
    }

    /// Writes the image of `seed` with `layers`, pushes it to `repo:tag`, and returns it.
    fn push(&self, seed: u64, layers: &[u64], repo: &str, tag: &str) -> OciImage {
        let image = ImageBuilder::new(seed, layers).write(&self.tmp.path().join(format!("src-{seed}")), tag);
        skopeo::copy_exact(&image.oci_ref(), &skopeo::docker_ref(&self.server.host(), repo, tag), &[]);
        image
    }

    /// Runs `regctl ARGS` with the server's S3 settings in its environment (as `regctl gc` on
    /// the server's machine reads them).
    fn regctl(&self, args: &[&str]) -> Output {
        let mut env = self.moto.registry_env(&self.bucket);
        for (key, value) in &mut env {
            if key == "REGISTRY_STORAGE_S3_REGIONENDPOINT" {
                value.clone_from(&self.shim.endpoint);
            }
        }
        regctl(args, &env, self.tmp.path())
    }

    /// `regctl ARGS --output json`, which must succeed, and its JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.regctl(&[args, &["--output", "json"]].concat());
        assert!(out.status.success(), "regctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("regctl {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Deletes `repo:tag` through the registry API.
    fn delete_tag(&self, repo: &str, tag: &str) {
        let url = self.server.url(&format!("/v2/{repo}/manifests/{tag}"));
        let status = util::http().delete(url).send().expect("DELETE").status();
        assert_eq!(status, 202, "delete {repo}:{tag}");
    }
}

/// Runs `regctl ARGS` in `dir` with `env` and none of the test's own `REGISTRY_*` variables,
/// stdin closed (no terminal).
fn regctl(args: &[&str], env: &[(String, String)], dir: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regctl"));
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRY_") || k.starts_with("AWS_")) {
        cmd.env_remove(name);
    }
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).current_dir(dir).stdin(Stdio::null());
    cmd.output().expect("run regctl")
}

/// The digests of a tag's history events, oldest first (`-` for a deletion).
fn events(history: &Value, tag: &str) -> Vec<String> {
    let tags = history["tags"].as_array().expect("tags");
    let entry = tags.iter().find(|t| t["tag"] == tag).unwrap_or_else(|| panic!("no {tag} in {history:#}"));
    let events = entry["events"].as_array().expect("events");
    events.iter().map(|e| e["digest"].as_str().unwrap_or("-").to_string()).collect()
}

/// Push v1, push v2 over the tag: `history` lists both digests, from the server's settings and
/// from `--bucket`.
#[test]
fn history_lists_an_overwritten_tag() {
    let Some(s) = Setup::start() else { return };
    // A layer over the 5 MiB part size: committed through a forward, copied into place.
    let v1 = s.push(2121, &[3000, 6 * MIB + 5], "undo/app", "v1");
    std::thread::sleep(Duration::from_millis(1100)); // S3 times have one-second resolution
    let v2 = s.push(2122, &[2000], "undo/app", "v1");
    let (d1, d2) = (v1.manifest.digest.clone(), v2.manifest.digest.clone());

    let history = s.json(&["history", "undo/app:v1"]);
    assert_eq!(events(&history, "v1"), [d1.clone(), d2.clone()], "{history:#}");
    assert_eq!(history["tags"][0]["current"], d2.as_str());
    // The same from the bucket's name alone, as an operator without the server's config has it.
    let creds: Vec<(String, String)> =
        [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let args = ["history", "undo/app", "--bucket", &s.bucket, "--endpoint-url", &s.shim.endpoint];
    let args = [
        &args[..],
        &["--region", "us-east-1", "--s3-root-directory", "/image-registry"],
        &["--output", "json"],
    ];
    let out = regctl(&args.concat(), &creds, s.tmp.path());
    assert!(out.status.success(), "history --bucket: {}", String::from_utf8_lossy(&out.stderr));
    let by_name: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(events(&by_name, "v1"), [d1, d2], "{by_name:#}");
}

/// Deleted tags keep their history: each push, then the deletion.
#[test]
fn history_shows_deleted_tags() {
    let Some(s) = Setup::start() else { return };
    let a = s.push(2131, &[4000], "gone/app", "a");
    s.delete_tag("gone/app", "a");
    let history = s.json(&["history", "gone/app"]);
    assert_eq!(events(&history, "a"), [a.manifest.digest.clone(), "-".to_string()], "{history:#}");
    assert!(history["tags"][0]["current"].is_null());
}

/// Filesystem storage keeps no versions: history says so, with the usage exit status.
#[test]
fn history_on_the_filesystem_says_there_are_no_versions() {
    let server = Server::start();
    let root = server.root.to_str().expect("UTF-8").to_string();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let out = regctl(&["history", "any/repo", "--root", &root], &[], tmp.path());
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("filesystem storage, which keeps no earlier versions"), "{said}");
}
