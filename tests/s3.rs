//! The registry on S3 storage (moto server as the S3 endpoint): real images through skopeo,
//! uploads that survive a restart and move between servers, two servers on one bucket.

use crate::util::distribution::{self, DockerRegistry};
use crate::util::layout::{self, ImageBuilder, MIB};
use crate::util::moto::{Moto, Shim};
use crate::util::{self, Server, skopeo};

/// Starts `regctl serve` on `bucket` of `moto`.
fn server_on(moto: &Moto, bucket: &str, scratch: &std::path::Path) -> Server {
    let env = moto.registry_env(bucket);
    let env = crate::util::moto::borrowed(&env);
    Server::start_on_env(scratch, &[], &env)
}

#[test]
fn skopeo_round_trip_through_s3_with_a_big_layer() {
    if !skopeo::available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let server = server_on(&moto, &bucket, &tmp.path().join("unused"));
    let image = ImageBuilder::new(31, &[2000, 6 * MIB, 64 * MIB + 17]).write(&tmp.path().join("src"), "v1");
    let reference = skopeo::docker_ref(&server.host(), "s3/app", "v1");
    skopeo::copy_exact(&image.oci_ref(), &reference, &[]);
    let back = tmp.path().join("back");
    skopeo::copy_exact(&reference, &format!("oci:{}:v1", back.display()), &[]);
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    // Nothing was written to the local directory: S3 holds it all, under the root directory.
    assert!(!tmp.path().join("unused").exists());
    let keys = util::http()
        .get(format!(
            "{}/{bucket}?list-type=2&prefix=image-registry/docker/registry/v2/repositories/s3/app/",
            moto.endpoint
        ))
        .send()
        .expect("list bucket")
        .text()
        .expect("body");
    assert!(keys.contains("_manifests/tags/v1/current/link"), "{keys}");
}

#[test]
fn upload_survives_a_restart_and_finishes_on_another_server() {
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let content: Vec<u8> = (0..(12 * MIB as usize + 333)).map(|i| (i * 7 % 253) as u8).collect();
    let (first, second) = content.split_at(7 * MIB as usize + 1);
    let http = util::http();

    let a = server_on(&moto, &bucket, tmp.path());
    let started = http.post(a.url("/v2/moving/blobs/uploads/")).send().expect("POST");
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().expect("location").to_string();
    let patched = http
        .patch(a.url(&location))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .expect("PATCH");
    assert_eq!(patched.status(), 202);
    drop(a); // SIGKILL: nothing of the upload may live only in that process

    let b = server_on(&moto, &bucket, tmp.path());
    let status = http.get(b.url(&location)).send().expect("GET upload status");
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], format!("0-{}", first.len() - 1).as_str());
    let end = content.len() - 1;
    let patched = http
        .patch(b.url(&location))
        .header("Content-Range", format!("{}-{end}", first.len()))
        .body(second.to_vec())
        .send()
        .expect("PATCH on the second server");
    assert_eq!(patched.status(), 202);
    let digest = util::sha256(&content);
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = http.put(b.url(&format!("{location}{sep}digest={digest}"))).send().expect("PUT");
    assert_eq!(done.status(), 201, "{}", done.text().unwrap_or_default());
    let blob = http.get(b.url(&format!("/v2/moving/blobs/{digest}"))).send().expect("GET blob");
    assert_eq!(blob.status(), 200);
    assert_eq!(util::sha256(&blob.bytes().expect("bytes")), digest);
}

#[test]
fn two_servers_on_one_bucket_serve_the_same_content() {
    if !skopeo::available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let (a, b) = (server_on(&moto, &bucket, tmp.path()), server_on(&moto, &bucket, tmp.path()));
    let image = ImageBuilder::new(32, &[1000, 2 * MIB]).write(&tmp.path().join("src"), "v1");
    skopeo::copy_exact(&image.oci_ref(), &skopeo::docker_ref(&a.host(), "shared/app", "v1"), &[]);
    let back = tmp.path().join("back");
    skopeo::copy_exact(
        &skopeo::docker_ref(&b.host(), "shared/app", "v1"),
        &format!("oci:{}:v1", back.display()),
        &[],
    );
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    let (status, catalog) = util::get_json(&b.url("/v2/_catalog"));
    assert_eq!(status, 200);
    assert_eq!(catalog["repositories"], serde_json::json!(["shared/app"]));
}

#[test]
fn blob_pulls_redirect_to_presigned_s3_urls_when_enabled() {
    if !skopeo::available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut env = moto.registry_env(&bucket);
    env.push(("REGISTRY_STORAGE_S3_REDIRECT".into(), "true".into()));
    env.push(("REGISTRY_STORAGE_S3_REDIRECTEXPIRY".into(), "5m".into()));
    let env = crate::util::moto::borrowed(&env);
    let server = Server::start_on_env(tmp.path(), &[], &env);
    let image = ImageBuilder::new(33, &[3000, 6 * MIB + 5]).write(&tmp.path().join("src"), "v1");
    let reference = skopeo::docker_ref(&server.host(), "redirected/app", "v1");
    skopeo::copy_exact(&image.oci_ref(), &reference, &[]);

    // skopeo follows the redirects to S3 and gets every byte.
    let back = tmp.path().join("back");
    skopeo::copy_exact(&reference, &format!("oci:{}:v1", back.display()), &[]);
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));

    let no_follow =
        util::client_builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for blob in image.blobs().into_iter().skip(1) {
        let url = server.url(&format!("/v2/redirected/app/blobs/{}", blob.digest));
        let head = no_follow.head(&url).send().expect("HEAD");
        assert_eq!(head.status(), 200, "HEAD is answered by the registry itself");
        let get = no_follow.get(&url).send().expect("GET");
        assert_eq!(get.status(), 307);
        let location = get.headers()["location"].to_str().expect("location").to_string();
        assert!(location.starts_with(&moto.endpoint) && location.contains("X-Amz-Expires=300"), "{location}");
        let bytes = util::http().get(&location).send().expect("GET presigned").bytes().expect("body");
        assert_eq!(util::sha256(&bytes), blob.digest);
    }
    let missing = no_follow.get(server.url(&format!("/v2/redirected/app/blobs/{}", util::sha256(b"none"))));
    assert_eq!(missing.send().expect("GET").status(), 404);
}

/// Keys under `prefix` of `bucket` on moto (a path-style ListObjectsV2, first 1000).
fn bucket_keys(moto: &Moto, bucket: &str, prefix: &str) -> String {
    let url = format!("{}/{bucket}?list-type=2&prefix={prefix}", moto.endpoint);
    util::http().get(url).send().expect("list bucket").text().expect("body")
}

#[test]
fn distribution_and_regctl_serve_each_others_s3_bucket() {
    if !skopeo::available() || !distribution::available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let theirs = DockerRegistry::start_on_s3(&moto.endpoint, &bucket, "/image-registry");
    let ours = server_on(&moto, &bucket, tmp.path());

    // Pushed to distribution, pulled from us.
    let first = ImageBuilder::new(34, &[4000, 6 * MIB + 1]).write(&tmp.path().join("first"), "v1");
    skopeo::copy_exact(&first.oci_ref(), &skopeo::docker_ref(&theirs.host(), "interop/first", "v1"), &[]);
    let back = tmp.path().join("first-back");
    skopeo::copy_exact(
        &skopeo::docker_ref(&ours.host(), "interop/first", "v1"),
        &format!("oci:{}:v1", back.display()),
        &[],
    );
    layout::assert_same_blobs(&first.dir.join("blobs/sha256"), &back.join("blobs/sha256"));

    // Pushed to us (a layer bigger than a part: committed through a forward), pulled from
    // distribution once the background copies have put every blob at its key.
    let second = ImageBuilder::new(35, &[5000, 11 * MIB + 3]).write(&tmp.path().join("second"), "v1");
    skopeo::copy_exact(&second.oci_ref(), &skopeo::docker_ref(&ours.host(), "interop/second", "v1"), &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while bucket_keys(&moto, &bucket, "image-registry/docker/registry/v2/blobs/").contains(".s3link") {
        assert!(std::time::Instant::now() < deadline, "blobs were never copied into place");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let back = tmp.path().join("second-back");
    skopeo::copy_exact(
        &skopeo::docker_ref(&theirs.host(), "interop/second", "v1"),
        &format!("oci:{}:v1", back.display()),
        &[],
    );
    layout::assert_same_blobs(&second.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
}

#[test]
fn objects_s3_does_not_show_yet_right_after_the_server_wrote_them_are_read_again() {
    if !skopeo::available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    // The first read of every object after each write of it is a NoSuchKey, as while versioning,
    // first enabled on the bucket, propagates: upload states, tails, links, the blobs themselves.
    let mut shim = Shim::start(&moto.endpoint, &["--not-found-after-put", "1"]);
    let mut env = moto.registry_env(&bucket);
    for (key, value) in &mut env {
        if key == "REGISTRY_STORAGE_S3_REGIONENDPOINT" {
            value.clone_from(&shim.endpoint);
        }
    }
    let env = crate::util::moto::borrowed(&env);
    let server = Server::start_on_env(&tmp.path().join("unused"), &[], &env);
    // A layer of more than one part: an append reads the state (and tail) the one before wrote.
    let image = ImageBuilder::new(47, &[1500, 6 * MIB + 5]).write(&tmp.path().join("src"), "v1");
    let reference = skopeo::docker_ref(&server.host(), "fresh/app", "v1");
    skopeo::copy_exact(&image.oci_ref(), &reference, &[]);
    let back = tmp.path().join("back");
    skopeo::copy_exact(&reference, &format!("oci:{}:v1", back.display()), &[]);
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    let hidden = std::iter::from_fn(|| shim.try_line(std::time::Duration::from_millis(500)))
        .filter(|l| l.starts_with("NOTFOUND "))
        .count();
    assert!(hidden > 0, "the shim hid no fresh object: the test tests nothing");
}
