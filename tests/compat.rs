//! On-disk layout compatibility with CNCF distribution 2.8 (Debian's `docker-registry`), both
//! ways: one registry takes pushes into a directory, stops, and the other serves that same
//! directory, which must give back exactly what was pushed.

use std::path::Path;

use crate::util::distribution::{self, DockerRegistry};
use crate::util::layout::{self, ImageBuilder, MIB, OciImage};
use crate::util::{self, Server, skopeo};

/// Media type of a Docker schema 2 manifest.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Either registry, running on a storage root.
enum Running {
    Regctl(Server),
    Distribution(DockerRegistry),
}

impl Running {
    fn host(&self) -> String {
        match self {
            Running::Regctl(s) => s.host(),
            Running::Distribution(d) => d.host(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host())
    }

    /// Stops the registry; returns false when `regctl serve` did not exit cleanly on SIGTERM.
    fn stop(self) -> bool {
        match self {
            Running::Regctl(s) => s.stop(),
            Running::Distribution(d) => {
                d.stop();
                true
            }
        }
    }
}

/// What the first registry was given, to check against what the second one serves.
struct Pushed {
    /// The OCI image, pushed as-is to `compat/oci:v1` and `compat/oci:also`.
    oci: OciImage,
    /// A `dir:` copy of `compat/docker:v1` (the image converted to Docker schema 2), pulled
    /// from the first registry.
    docker_dir: tempfile::TempDir,
}

/// Pushes the test images into `first` and pulls the Docker one back into a `dir:` copy.
fn push_images(first: &Running, work: &Path) -> Pushed {
    let oci = ImageBuilder::new(41, &[1000, 2 * MIB, 300_000]).write(&work.join("src"), "v1");
    for tag in ["v1", "also"] {
        let pushed = skopeo::copy_digest(
            &oci.oci_ref(),
            &skopeo::docker_ref(&first.host(), "compat/oci", tag),
            skopeo::EXACT,
        );
        assert_eq!(pushed, oci.manifest.digest);
    }
    let docker = skopeo::docker_ref(&first.host(), "compat/docker", "v1");
    skopeo::copy(&oci.oci_ref(), &docker, &["--format", "v2s2"]);
    let docker_dir = tempfile::tempdir().expect("temporary directory");
    skopeo::copy(&docker, &skopeo::dir_ref(docker_dir.path()), &[]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(docker_dir.path().join("manifest.json")).expect("manifest.json"),
    )
    .expect("JSON manifest");
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "skopeo pushed a Docker schema 2 manifest");
    Pushed { oci, docker_dir }
}

/// Checks that `second` serves exactly what was pushed into the first registry.
fn check_served(second: &Running, pushed: &Pushed, work: &Path) {
    let base = format!("http://{}", second.host());
    assert_eq!(util::get_all_pages(&base, "/v2/_catalog", "repositories"), ["compat/docker", "compat/oci"]);
    // distribution 2.8 lists tags in storage order, not sorted: compare them as a set.
    let (status, list) = util::get_json(&second.url("/v2/compat/oci/tags/list"));
    assert_eq!(status, 200);
    assert_eq!(list["name"], "compat/oci");
    let mut tags: Vec<&str> =
        list["tags"].as_array().expect("tags").iter().filter_map(|t| t.as_str()).collect();
    tags.sort_unstable();
    assert_eq!(tags, ["also", "v1"], "{list}");

    // The OCI image, pulled back into a fresh layout, is bit-identical to the generated one.
    let back = work.join("back");
    let oci_ref = skopeo::docker_ref(&second.host(), "compat/oci", "also");
    skopeo::copy_exact(&oci_ref, &format!("oci:{}:also", back.display()), &[]);
    layout::assert_same_blobs(&pushed.oci.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    assert_eq!(layout::layout_manifest_digest(&back, "also"), pushed.oci.manifest.digest);

    // The Docker schema 2 image: same manifest bytes, same blobs as the first registry served.
    let docker = skopeo::docker_ref(&second.host(), "compat/docker", "v1");
    let again = tempfile::tempdir().expect("temporary directory");
    skopeo::copy(&docker, &skopeo::dir_ref(again.path()), &[]);
    let manifest = |dir: &Path| std::fs::read(dir.join("manifest.json")).expect("manifest.json");
    assert_eq!(manifest(pushed.docker_dir.path()), manifest(again.path()));
    layout::assert_same_blobs(pushed.docker_dir.path(), again.path());
    let head = util::http()
        .head(second.url("/v2/compat/docker/manifests/v1"))
        .header("Accept", util::MANIFEST_ACCEPT)
        .send()
        .expect("HEAD the Docker manifest");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], DOCKER_MANIFEST);
    assert_eq!(
        head.headers()["docker-content-digest"].to_str().expect("ASCII"),
        util::sha256(&manifest(again.path()))
    );
}

/// Asserts that `root` holds `image` in distribution's layout, as `repo:tag`.
fn assert_distribution_layout(root: &Path, repo: &str, tag: &str, image: &OciImage) {
    let v2 = root.join("docker/registry/v2");
    for blob in image.blobs() {
        let hex = blob.hex();
        let data = v2.join("blobs/sha256").join(&hex[..2]).join(hex).join("data");
        assert_eq!(layout::sha256_file(&data), blob.digest, "{}", data.display());
    }
    let manifests = v2.join("repositories").join(repo).join("_manifests");
    let link =
        |path: &Path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let current = manifests.join("tags").join(tag).join("current/link");
    assert_eq!(link(&current), image.manifest.digest);
    let index = manifests.join("tags").join(tag).join("index/sha256").join(image.manifest.hex()).join("link");
    assert_eq!(link(&index), image.manifest.digest);
    let revision = manifests.join("revisions/sha256").join(image.manifest.hex()).join("link");
    assert_eq!(link(&revision), image.manifest.digest);
    for layer in image.blobs().into_iter().skip(1) {
        let path = v2.join("repositories").join(repo).join("_layers/sha256").join(layer.hex()).join("link");
        assert_eq!(link(&path), layer.digest);
    }
}

#[test]
fn distribution_serves_what_regctl_stored() {
    if !skopeo::available() || !distribution::available() {
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let root = work.path().join("data");

    let first = Running::Regctl(Server::start_on(&root, &[]));
    let pushed = push_images(&first, work.path());
    let clean_exit = first.stop();
    assert_distribution_layout(&root, "compat/oci", "v1", &pushed.oci);

    let second = Running::Distribution(DockerRegistry::start_on(&root));
    check_served(&second, &pushed, work.path());
    second.stop();
    assert!(clean_exit, "regctl serve did not exit cleanly on SIGTERM");
}

#[test]
fn regctl_serves_what_distribution_stored() {
    if !skopeo::available() || !distribution::available() {
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let root = work.path().join("data");

    let first = Running::Distribution(DockerRegistry::start_on(&root));
    let pushed = push_images(&first, work.path());
    first.stop();
    // Make sure the fixture is what distribution really writes, so the test means something.
    assert_distribution_layout(&root, "compat/oci", "v1", &pushed.oci);

    let second = Running::Regctl(Server::start_on(&root, &[]));
    check_served(&second, &pushed, work.path());
    assert!(second.stop(), "regctl serve did not exit cleanly on SIGTERM");
}
