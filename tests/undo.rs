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
