//! Issue 21, undo for the registry: immutable tags refused to skopeo (here) and docker
//! (tests/clients.rs).

use serde_json::Value;

use crate::util::layout::ImageBuilder;
use crate::util::{self, Server, skopeo};

/// The status and the first error (`code`, `message`) of a `DELETE` of `path`.
fn delete(server: &Server, path: &str) -> (u16, String, String) {
    let resp = util::http().delete(server.url(path)).send().expect("DELETE");
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap_or(Value::Null);
    let error = &body["errors"][0];
    let text = |key: &str| error[key].as_str().unwrap_or_default().to_string();
    (status, text("code"), text("message"))
}

/// The digest `repo:tag` resolves to.
fn digest_of(server: &Server, repo: &str, tag: &str) -> String {
    let resp = util::http()
        .head(server.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", util::MANIFEST_ACCEPT)
        .send()
        .expect("HEAD the manifest");
    assert_eq!(resp.status(), 200, "{repo}:{tag} resolves");
    resp.headers()["docker-content-digest"].to_str().expect("an ASCII digest").to_string()
}

/// `regctl serve --immutable-tag 'v*'`: skopeo re-pushes the same image to `v1` (allowed),
/// cannot push other content over it nor delete it (`skopeo delete` deletes by digest); an
/// HTTP `DELETE` of the tag answers 409 `DENIED` naming the rule; `latest` still moves.
#[test]
fn immutable_tags_refuse_overwrite_and_delete_with_skopeo() {
    if !skopeo::available() {
        return;
    }
    let server = Server::start_with(&["--immutable-tag", "v*"]);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let first = ImageBuilder::new(2101, &[3000]).write(&tmp.path().join("first"), "t");
    let second = ImageBuilder::new(2102, &[3000]).write(&tmp.path().join("second"), "t");
    let v1 = skopeo::docker_ref(&server.host(), "undo/app", "v1");

    skopeo::copy_exact(&first.oci_ref(), &v1, &[]);
    skopeo::copy_exact(&first.oci_ref(), &v1, &[]); // the same digest again: allowed
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    args.extend_from_slice(skopeo::EXACT);
    let (src, dest) = (second.oci_ref(), v1.clone());
    args.extend_from_slice(&[&src, &dest]);
    let over = skopeo::run(&args);
    let said = String::from_utf8_lossy(&over.stderr);
    assert!(!over.status.success(), "skopeo overwrote an immutable tag");
    assert!(said.contains("immutable") && said.contains("v*"), "skopeo's error names the rule: {said}");
    assert_eq!(digest_of(&server, "undo/app", "v1"), first.manifest.digest, "v1 did not move");

    let removed = skopeo::run(&["delete", "--tls-verify=false", &v1]);
    assert!(!removed.status.success(), "skopeo deleted the manifest of an immutable tag");
    let (status, code, message) = delete(&server, "/v2/undo/app/manifests/v1");
    assert_eq!((status, code.as_str()), (409, "DENIED"), "{message}");
    assert!(message.contains("\"v1\"") && message.contains("\"v*\""), "{message}");
    let (status, code, _) = delete(&server, &format!("/v2/undo/app/manifests/{}", first.manifest.digest));
    assert_eq!((status, code.as_str()), (409, "DENIED"), "a delete by digest would take v1 along");
    assert_eq!(digest_of(&server, "undo/app", "v1"), first.manifest.digest, "v1 is still there");

    let latest = skopeo::docker_ref(&server.host(), "undo/app", "latest");
    skopeo::copy_exact(&first.oci_ref(), &latest, &[]);
    skopeo::copy_exact(&second.oci_ref(), &latest, &[]);
    assert_eq!(digest_of(&server, "undo/app", "latest"), second.manifest.digest, "latest moves");
    let (status, _, message) = delete(&server, "/v2/undo/app/manifests/latest");
    assert_eq!(status, 202, "latest can be deleted: {message}");
}

/// "Every tag but latest", from the `REGISTRY_TAGS_*` variables.
#[test]
fn everything_but_latest_is_immutable_from_the_environment() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let env = [("REGISTRY_TAGS_IMMUTABLE", "*"), ("REGISTRY_TAGS_MUTABLE", "latest")];
    let server = Server::start_on_env(&tmp.path().join("data"), &[], &env);
    let first = ImageBuilder::new(2103, &[100]).write(&tmp.path().join("first"), "t");
    let second = ImageBuilder::new(2104, &[100]).write(&tmp.path().join("second"), "t");
    for tag in ["latest", "sha-1234"] {
        skopeo::copy_exact(&first.oci_ref(), &skopeo::docker_ref(&server.host(), "undo/env", tag), &[]);
    }
    skopeo::copy_exact(&second.oci_ref(), &skopeo::docker_ref(&server.host(), "undo/env", "latest"), &[]);
    let (status, code, message) = delete(&server, "/v2/undo/env/manifests/sha-1234");
    assert_eq!((status, code.as_str()), (409, "DENIED"), "{message}");
    assert!(message.contains("\"*\""), "the rule is named: {message}");
    assert_eq!(delete(&server, "/v2/undo/env/manifests/latest").0, 202);
}

/// The tags of a gc report (`repository:tag`).
fn swept_tags(report: &Value) -> Vec<String> {
    let tags = report["tags"].as_array().into_iter().flatten();
    tags.map(|t| format!("{}:{}", t["repository"].as_str().unwrap_or(""), t["tag"].as_str().unwrap_or("")))
        .collect()
}

/// The manifests of a gc report (`repository@digest`).
fn swept_manifests(report: &Value) -> Vec<String> {
    let manifests = report["manifests"].as_array().into_iter().flatten();
    manifests
        .map(|m| format!("{}@{}", m["repository"].as_str().unwrap_or(""), m["digest"].as_str().unwrap_or("")))
        .collect()
}

/// Retention (`[[gc.retention]]`) through `regctl gc`: keep the newest tag and the `v` tags of
/// `keep/*`, delete untagged manifests older than 1 s; other repositories keep everything. The
/// dry run lists what the real run deletes and deletes nothing; the real run runs while an image
/// sharing a layer with an expired one is pushed, which pulls intact afterwards.
#[test]
fn retention_dry_run_then_real_run_with_a_push_in_flight() {
    if !skopeo::available() {
        return;
    }
    let server = Server::start();
    let (host, root) = (server.host(), server.root.clone());
    let tmp = tempfile::tempdir().expect("temporary directory");
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        "[[gc.retention]]\nrepositories = \"keep/*\"\nkeeplast = 1\nkeeptags = \"^v\"\nuntaggedolderthan = \"1s\"\n",
    )
    .expect("write the config");
    let kib = 1024;
    let image = |seed: u64, sizes: &[u64], name: &str| {
        ImageBuilder::new(seed, sizes).write(&tmp.path().join(name), "t")
    };
    let old = image(2110, &[256 * kib], "old");
    let older = image(2111, &[100 * kib], "older");
    let release = image(2112, &[100 * kib], "release");
    let newest = image(2113, &[100 * kib], "newest");
    // Shares its first layer with `older`, whose tag expires and whose manifest goes.
    let in_flight = image(2111, &[100 * kib, 24 * 1024 * kib], "in-flight");
    assert_eq!(older.layers[0], in_flight.layers[0]);
    for (img, tag) in [(&older, "t1"), (&old, "t2"), (&release, "v1"), (&newest, "t3")] {
        skopeo::copy_exact(&img.oci_ref(), &skopeo::docker_ref(&host, "keep/app", tag), &[]);
    }
    skopeo::copy_exact(&old.oci_ref(), &skopeo::docker_ref(&host, "other/app", "t1"), &[]);
    std::thread::sleep(std::time::Duration::from_secs(3)); // past the grace period below
    let grace = ["--config", config.to_str().expect("UTF-8"), "--grace-period", "2s"];

    let dry = crate::ops::gc(&root, &[&["--dry-run"][..], &grace].concat());
    assert_eq!(swept_tags(&dry), ["keep/app:t1", "keep/app:t2"], "{dry:#}");
    let mut untagged =
        vec![format!("keep/app@{}", older.manifest.digest), format!("keep/app@{}", old.manifest.digest)];
    untagged.sort();
    assert_eq!(swept_manifests(&dry), untagged, "{dry:#}");
    assert_eq!(digest_of(&server, "keep/app", "t1"), older.manifest.digest, "a dry run deletes nothing");

    let push = {
        let (src, dest) = (in_flight.oci_ref(), skopeo::docker_ref(&host, "keep/new", "t1"));
        std::thread::spawn(move || {
            let mut args = vec!["copy", "--dest-tls-verify=false"];
            args.extend_from_slice(skopeo::EXACT);
            args.extend_from_slice(&[&src, &dest]);
            skopeo::run(&args)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let real = crate::ops::gc(&root, &[&["--settle", "3s"][..], &grace].concat());
    let pushed = push.join().expect("the push thread");
    assert!(
        pushed.status.success(),
        "push during the collection: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert_eq!(swept_tags(&real), ["keep/app:t1", "keep/app:t2"], "{real:#}");
    assert_eq!(swept_manifests(&real), untagged, "{real:#}");

    for gone in ["t1", "t2"] {
        let status = util::http()
            .head(server.url(&format!("/v2/keep/app/manifests/{gone}")))
            .send()
            .expect("HEAD")
            .status();
        assert_eq!(status, 404, "keep/app:{gone} was deleted");
    }
    assert_eq!(digest_of(&server, "keep/app", "v1"), release.manifest.digest, "keeptags");
    assert_eq!(digest_of(&server, "keep/app", "t3"), newest.manifest.digest, "keeplast");
    assert_eq!(digest_of(&server, "other/app", "t1"), old.manifest.digest, "no rule, no retention");
    // The image pushed during the collection pulls intact (skopeo checks every digest).
    let pulled = tmp.path().join("pulled");
    skopeo::copy(&skopeo::docker_ref(&host, "keep/new", "t1"), &skopeo::dir_ref(&pulled), &[]);
    assert!(pulled.join(in_flight.layers[0].hex()).exists(), "the shared layer came back");
}
