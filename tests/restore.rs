//! Issue 21, undo for the registry: `regctl history` and `regctl restore` read the object
//! versions of a versioned bucket (moto), with `regctl serve` on it and skopeo as the client;
//! garbage collection (`regctl gc`) deletes what a restore brings back; a lifecycle expiry is
//! simulated by deleting versions (boto3). The filesystem has no versions: both refuse.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::layout::{self, ImageBuilder, MIB, OciImage};
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

    /// A real garbage collection with no grace period, deleting untagged manifests; the digests
    /// of the blobs it deleted.
    fn collect(&self) -> BTreeSet<String> {
        // The server pins what it confirmed to clients within the grace period before the
        // collection and since (the tag deletions just made): let that pass.
        std::thread::sleep(Duration::from_secs(3));
        let report = self.json(&["gc", "--delete-untagged", "--grace-period", "0s", "--settle", "3s"]);
        let blobs = report["blobs"].as_array().into_iter().flatten();
        blobs.filter_map(|b| b["digest"].as_str().map(str::to_string)).collect()
    }

    /// Pulls `repo:tag` with skopeo into a fresh OCI layout and checks it is `image`, byte for
    /// byte: the manifest digest, and every blob.
    fn assert_pulls_as(&self, repo: &str, tag: &str, image: &OciImage) {
        let back = self.tmp.path().join(format!("back-{}-{tag}", repo.replace('/', "-")));
        let _ = std::fs::remove_dir_all(&back);
        let reference = skopeo::docker_ref(&self.server.host(), repo, tag);
        skopeo::copy_exact(&reference, &format!("oci:{}:{tag}", back.display()), &[]);
        assert_eq!(layout::layout_manifest_digest(&back, tag), image.manifest.digest, "{repo}:{tag}");
        layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    }

    /// The status of a `HEAD` of `repo:tag`'s manifest.
    fn head(&self, repo: &str, tag: &str) -> u16 {
        let url = self.server.url(&format!("/v2/{repo}/manifests/{tag}"));
        let resp = util::http().head(url).header("accept", util::MANIFEST_ACCEPT).send().expect("HEAD");
        resp.status().as_u16()
    }

    /// Deletes `repo:tag` through the registry API.
    fn delete_tag(&self, repo: &str, tag: &str) {
        let url = self.server.url(&format!("/v2/{repo}/manifests/{tag}"));
        let status = util::http().delete(url).send().expect("DELETE").status();
        assert_eq!(status, 202, "delete {repo}:{tag}");
    }

    /// Deletes every version and delete marker of `key` (under the server's root directory),
    /// as the bucket's noncurrent-version lifecycle does once they expire; how many went.
    fn expire(&self, key: &str) -> usize {
        let python = util::python_with("boto3").expect("boto3 (tests/run-all installs it)");
        let script = r#"
import sys, boto3
endpoint, bucket, key = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
gone = 0
for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
    if v["Key"] == key:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
        gone += 1
print(gone)
"#;
        let key = format!("image-registry/docker/registry/v2/{key}");
        let out = Command::new(python)
            .args(["-c", script, &self.moto.endpoint, &self.bucket, &key])
            .output()
            .expect("run python");
        assert!(out.status.success(), "expire {key}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a count")
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

/// The blob digests a restore report restored from earlier versions.
fn restored_blobs(report: &Value) -> BTreeSet<String> {
    let steps = report["steps"].as_array().into_iter().flatten();
    let blobs = steps.filter(|s| s["action"] == "restore").filter_map(|s| s["what"].as_str());
    blobs.filter_map(|w| w.split(' ').nth(1).map(str::to_string)).collect()
}

/// Push v1, push v2 over the tag, collect v1's blobs away; `history` lists both digests (from
/// the server's settings and from `--bucket`); `restore --to v1` asks, then with `--yes`
/// restores exactly v1's blobs and the tag, and skopeo pulls v1 bit for bit.
#[test]
fn history_lists_an_overwritten_tag_and_restore_brings_it_back_bit_identical() {
    let Some(s) = Setup::start() else { return };
    // A layer over the 5 MiB part size: committed through a forward, copied into place.
    let v1 = s.push(2121, &[3000, 6 * MIB + 5], "undo/app", "v1");
    std::thread::sleep(Duration::from_millis(1100)); // S3 times have one-second resolution
    let v2 = s.push(2122, &[2000], "undo/app", "v1");
    let (d1, d2) = (v1.manifest.digest.clone(), v2.manifest.digest.clone());

    let history = s.json(&["history", "undo/app:v1"]);
    assert_eq!(events(&history, "v1"), [d1.clone(), d2.clone()], "{history:#}");
    assert_eq!(history["tags"][0]["current"], d2.as_str());
    // The same as an operator without the server's config has it: from the bucket's name, and
    // from the deployment's settings recorded in regctl.toml (as provision records them).
    let creds: Vec<(String, String)> =
        [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let recorded = format!("[deployments.registry]\nregion = \"us-east-1\"\nbucket = \"{}\"\n", s.bucket);
    std::fs::write(s.tmp.path().join("regctl.toml"), recorded).expect("write regctl.toml");
    let common =
        ["--endpoint-url", &s.shim.endpoint, "--s3-root-directory", "/image-registry", "--output", "json"];
    for how in [&["--bucket", &s.bucket, "--region", "us-east-1"][..], &[]] {
        let out = regctl(&[&["history", "undo/app"][..], how, &common].concat(), &creds, s.tmp.path());
        assert!(out.status.success(), "history {how:?}: {}", String::from_utf8_lossy(&out.stderr));
        let found: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(events(&found, "v1"), [d1.clone(), d2.clone()], "{how:?}: {found:#}");
        assert_eq!(found["bucket"], s.bucket.as_str());
    }

    let swept = s.collect();
    let v1_blobs: BTreeSet<String> = v1.blobs().iter().map(|d| d.digest.clone()).collect();
    assert_eq!(swept, v1_blobs, "the collection deleted v1's manifest, config and layers");

    // No terminal and no --yes: refused, nothing written.
    let asked = s.regctl(&["restore", "undo/app:v1", "--to", &d1]);
    let said = String::from_utf8_lossy(&asked.stderr);
    assert!(!asked.status.success() && said.contains("--yes"), "{said}");
    assert!(String::from_utf8_lossy(&asked.stdout).contains(&format!("-> {d1}")), "the plan is shown");
    assert_eq!(s.head("undo/app", &d1), 404, "nothing restored without confirmation");

    // --at the time of the first push names v1 too.
    let at = history["tags"][0]["events"][0]["at"].as_str().expect("a time").to_string();
    let dry = s.json(&["restore", "undo/app:v1", "--at", &at, "--dry-run"]);
    assert_eq!((dry["restored"].as_bool(), dry["tags"][0]["to"].as_str()), (Some(false), Some(d1.as_str())));

    let report = s.json(&["restore", "undo/app:v1", "--to", &d1, "--yes"]);
    assert_eq!(report["restored"], true, "{report:#}");
    assert_eq!(restored_blobs(&report), v1_blobs, "exactly what the collection took: {report:#}");
    assert_eq!(report["tags"][0]["from"], d2.as_str());
    s.assert_pulls_as("undo/app", "v1", &v1);
    let history = s.json(&["history", "undo/app:v1"]);
    assert_eq!(events(&history, "v1"), [d1.clone(), d2, d1], "the restore is a move of the tag");
}

/// Delete a repository's tags through the API and collect its blobs away; `history` shows the
/// deletions, `restore REPO --yes` brings each tag back, and both pull whole.
#[test]
fn a_deleted_and_collected_repository_is_restored() {
    let Some(s) = Setup::start() else { return };
    let a = s.push(2131, &[4000, 2 * MIB], "gone/app", "a");
    let b = s.push(2132, &[5000], "gone/app", "b");
    let kept = s.push(2133, &[1000], "kept/app", "v1");
    s.delete_tag("gone/app", "a");
    s.delete_tag("gone/app", "b");
    let swept = s.collect();
    for blob in a.blobs().into_iter().chain(b.blobs()) {
        assert!(swept.contains(&blob.digest), "{} was collected: {swept:?}", blob.digest);
    }
    assert_eq!(s.head("gone/app", "a"), 404);

    let history = s.json(&["history", "gone/app"]);
    assert_eq!(events(&history, "a"), [a.manifest.digest.clone(), "-".to_string()], "{history:#}");
    assert_eq!(events(&history, "b"), [b.manifest.digest.clone(), "-".to_string()], "{history:#}");
    assert!(history["tags"][0]["current"].is_null());

    let out = s.regctl(&["restore", "gone/app", "--yes"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "restore gone/app: {}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("restored: 2 tags of gone/app"), "{said}");
    s.assert_pulls_as("gone/app", "a", &a);
    s.assert_pulls_as("gone/app", "b", &b);
    s.assert_pulls_as("kept/app", "v1", &kept);
    let again = s.regctl(&["restore", "gone/app", "--yes"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to restore"), "a second run is a no-op");
}

/// When the noncurrent versions of a layer have expired, `restore` refuses, names the layer
/// and writes nothing; when the tag's own versions are gone, `history` says so.
#[test]
fn restore_refuses_clearly_once_the_versions_have_expired() {
    let Some(s) = Setup::start() else { return };
    let image = s.push(2141, &[3000, 4000], "exp/app", "v1");
    s.delete_tag("exp/app", "v1");
    assert!(s.collect().contains(&image.layers[1].digest));
    let hex = image.layers[1].hex();
    assert!(
        s.expire(&format!("blobs/sha256/{}/{hex}/data", &hex[..2])) >= 2,
        "a version and a delete marker"
    );

    let out = s.regctl(&["restore", "exp/app:v1", "--yes"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restored with a layer gone");
    assert!(said.contains(&image.layers[1].digest) && said.contains("no version left"), "{said}");
    assert!(!said.contains(&image.layers[0].digest), "only what is gone is named: {said}");
    assert_eq!(s.head("exp/app", "v1"), 404, "nothing was written");
    let config = s.server.url(&format!("/v2/exp/app/blobs/{}", image.config.digest));
    assert_eq!(util::http().head(config).send().expect("HEAD").status(), 404, "no blob either");

    assert!(s.expire("repositories/exp/app/_manifests/tags/v1/current/link") >= 2);
    let out = s.regctl(&["history", "exp/app:v1"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("no version of tag exp/app:v1"), "{said}");
}

/// Filesystem storage keeps no versions: both commands say so, with the usage exit status.
#[test]
fn history_and_restore_on_the_filesystem_say_there_are_no_versions() {
    let server = Server::start();
    let root = server.root.to_str().expect("UTF-8").to_string();
    let tmp = tempfile::tempdir().expect("temporary directory");
    for args in
        [&["history", "any/repo", "--root", &root][..], &["restore", "any/repo:v1", "--root", &root, "--yes"]]
    {
        let out = regctl(args, &[], tmp.path());
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains("filesystem storage, which keeps no earlier versions"), "{said}");
    }
}
