//! Real container engines against `regctl serve` over verified HTTPS with htpasswd users:
//! docker (dockerd 20.10 from Debian's docker.io and the docker CLI on `PATH`), podman, and
//! containerd's `ctr`, each with state private to its test (see `util/engines.rs`, which also
//! explains the network namespace that makes docker verify the certificate). Images are built
//! offline: `docker import` / `podman import` of a small tarball made here, `COPY` layers on
//! top with the legacy builder, and an OCI archive for `ctr images import`.
//!
//! Tests that send wrong passwords run their own server: the server throttles a client after
//! about 10 failures a minute, and a test that pushes must not share that budget.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::auth::{htpasswd_available, htpasswd_set, write_authfile};
use crate::util::engines::{self, Containerd, Dockerd, Podman, PrivateNetwork, run_ok};
use crate::util::layout::{ImageBuilder, Prng};
use crate::util::tls::{self, TestCa};
use crate::util::{self, MANIFEST_ACCEPT, Server};

const USER: &str = "ci-pusher";
const PASSWORD: &str = "clients: test pa55word";
/// A second user of every rig, whose rule line grants pull only.
const READER: &str = "ci-reader";
const READER_PASSWORD: &str = "clients: reader pa55word";

/// The registry under test in the test's own network namespace, over HTTPS with a certificate
/// for [`engines::REGISTRY_IP`] from a test CA, with two htpasswd users: [`USER`] (full
/// access) and [`READER`] (pull only, by a rule line in regctl's format).
struct Rig {
    _server: Server,
    /// `ip:port`, as the clients name the registry.
    host: String,
    ca: TestCa,
    work: tempfile::TempDir,
    /// Last: the namespace is left after the server has stopped.
    _net: PrivateNetwork,
}

impl Rig {
    /// Enters a private network and starts the registry in it. `None` (the test skips) when an
    /// engine in `tools` is missing outside CI.
    fn start(tools: &[&str]) -> Option<Rig> {
        Rig::start_with(tools, &[])
    }

    /// [`Rig::start`] with extra `regctl serve` arguments.
    fn start_with(tools: &[&str], serve_args: &[&str]) -> Option<Rig> {
        if !engines::available(tools) || !htpasswd_available() {
            return None;
        }
        let net = PrivateNetwork::enter()?;
        let work = tempfile::tempdir().expect("temporary directory");
        let ca = TestCa::new(work.path(), "clients-ca");
        let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
        ca.issue(&[&engines::REGISTRY_IP.to_string()], &cert, &key);
        let htpasswd = work.path().join("htpasswd");
        htpasswd_set(&htpasswd, USER, PASSWORD, true);
        htpasswd_set(&htpasswd, READER, READER_PASSWORD, false);
        let mut file = std::fs::OpenOptions::new().append(true).open(&htpasswd).expect("the htpasswd file");
        writeln!(file, "#!regctl {READER} access=pull").expect("the reader's rule line");
        let addr = net.free_addr();
        let mut args = vec![
            "--tls-cert",
            path_str(&cert),
            "--tls-key",
            path_str(&key),
            "--htpasswd",
            path_str(&htpasswd),
        ];
        args.extend_from_slice(serve_args);
        let server = Server::start_at(addr, &work.path().join("data"), &args, &[]);
        Some(Rig { _server: server, host: addr.to_string(), ca, work, _net: net })
    }

    /// A directory for one engine or image, under the test's temporary directory.
    fn dir(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `host/repo:tag`.
    fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host)
    }

    /// GETs `path` over HTTPS (verified against the test CA) as the test user.
    fn get(&self, path: &str) -> reqwest::blocking::Response {
        let url = format!("https://{}{path}", self.host);
        tls::https_client(&self.ca.pem)
            .get(&url)
            .header("accept", MANIFEST_ACCEPT)
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// The manifest (or index) of `repo:reference` as JSON, and its digest.
    fn manifest(&self, repo: &str, reference: &str) -> (Value, String) {
        let resp = self.get(&format!("/v2/{repo}/manifests/{reference}"));
        assert_eq!(resp.status(), 200, "GET the manifest of {repo}:{reference}");
        let digest = resp.headers()["docker-content-digest"].to_str().expect("an ASCII digest").to_string();
        (resp.json().expect("a JSON manifest"), digest)
    }

    /// The server's metrics.
    fn metrics(&self) -> HashMap<String, f64> {
        let url = format!("https://{}/metrics", self.host);
        let (status, samples) =
            util::scrape_with(&tls::https_client(&self.ca.pem), &url, Some((USER, PASSWORD)));
        assert_eq!(status, 200, "GET /metrics");
        samples
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// stdout and stderr of a client, for assertions on its messages.
fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A small root filesystem tarball (two files derived from `seed`), for `docker import` and
/// `podman import`.
fn base_tarball(dir: &Path, seed: u64) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("create the root filesystem");
    std::fs::write(rootfs.join("etc/greeting"), format!("regctl client test image {seed}\n"))
        .expect("write a file");
    std::fs::write(rootfs.join("data.bin"), pseudo_random(seed, 4096)).expect("write a file");
    let tarball = dir.join("base.tar");
    run_ok(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg("."));
    tarball
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    Prng::new(seed).fill(&mut data);
    data
}

/// Builds `tag` with docker, offline: `docker import` of a tarball, then two `COPY` layers with
/// the legacy builder. Three layers in all; returns the image ID.
fn docker_build(docker: &Dockerd, dir: &Path, tag: &str, seed: u64) -> String {
    std::fs::create_dir_all(dir).expect("create the build directory");
    let base = format!("clients-base-{seed}:latest");
    docker.docker_ok(&["import", path_str(&base_tarball(dir, seed)), &base]);
    let context = dir.join("context");
    std::fs::create_dir_all(&context).expect("create the build context");
    std::fs::write(context.join("a.txt"), format!("layer two of image {seed}\n")).expect("write a file");
    std::fs::write(context.join("b.bin"), pseudo_random(seed + 1000, 8192)).expect("write a file");
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {base}\nCOPY a.txt /a.txt\nCOPY b.bin /b.bin\n"),
    )
    .expect("write the Dockerfile");
    docker.docker_ok(&["build", "-q", "-t", tag, path_str(&context)]);
    let layers = docker.docker_ok(&["image", "inspect", "--format", "{{len .RootFS.Layers}}", tag]);
    assert_eq!(layers.trim(), "3", "the image has three layers");
    docker.image_id(tag)
}

/// Starts containerd and dockerd under the rig, trusting the rig's CA, logged in.
fn docker_logged_in(rig: &Rig) -> (Dockerd, Containerd) {
    let containerd = Containerd::start(&rig.dir("containerd"));
    let docker = Dockerd::start(&rig.dir("docker"), &containerd);
    docker.trust(&rig.host, &rig.ca.pem);
    let out = docker.docker(&["login", "--username", USER, "--password-stdin", &rig.host], Some(PASSWORD));
    engines::assert_success("docker login", &out);
    (docker, containerd)
}

/// docker: a login before the CA is trusted fails on the certificate (so TLS really is
/// verified); then `login --password-stdin`, push of a three-layer image, `rmi`, pull: the
/// same image ID, and the registry serves the schema 2 manifest docker pushed.
#[test]
fn docker_login_push_rmi_pull_keeps_the_image_id() {
    let Some(rig) = Rig::start(&["dockerd", "docker", "containerd"]) else { return };
    let containerd = Containerd::start(&rig.dir("containerd"));
    let docker = Dockerd::start(&rig.dir("docker"), &containerd);

    let untrusted =
        docker.docker(&["login", "--username", USER, "--password-stdin", &rig.host], Some(PASSWORD));
    assert!(!untrusted.status.success(), "docker logged in without trusting the registry's CA");
    assert!(text(&untrusted).contains("x509"), "not a certificate error: {}", text(&untrusted));

    docker.trust(&rig.host, &rig.ca.pem);
    let login = docker.docker(&["login", "--username", USER, "--password-stdin", &rig.host], Some(PASSWORD));
    engines::assert_success("docker login", &login);
    assert!(text(&login).contains("Login Succeeded"), "{}", text(&login));

    let image = rig.image("clients/app", "v1");
    let id = docker_build(&docker, &rig.dir("build"), &image, 1);
    docker.docker_ok(&["push", &image]);
    let (manifest, _) = rig.manifest("clients/app", "v1");
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{manifest}");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3), "{manifest}");
    assert_eq!(manifest["config"]["digest"], id.as_str(), "the config is the image ID");

    docker.docker_ok(&["rmi", &image, "clients-base-1:latest"]);
    assert!(!docker.docker(&["image", "inspect", &image], None).status.success(), "rmi left the image");
    docker.docker_ok(&["pull", &image]);
    assert_eq!(docker.image_id(&image), id, "the pulled image has the pushed image's ID");
}

/// Issue 21: docker re-pushes an image to an immutable tag (the same digest: allowed), and a
/// push of another image to that tag fails with the registry's message naming the rule; the
/// tag still points at the first image.
#[test]
fn docker_cannot_overwrite_an_immutable_tag() {
    let Some(rig) = Rig::start_with(&["dockerd", "docker", "containerd"], &["--immutable-tag", "v*"]) else {
        return;
    };
    let (docker, _containerd) = docker_logged_in(&rig);
    let image = rig.image("clients/pinned", "v1");
    docker_build(&docker, &rig.dir("first"), &image, 21);
    docker.docker_ok(&["push", &image]);
    let (_, first) = rig.manifest("clients/pinned", "v1");
    docker.docker_ok(&["push", &image]);

    docker_build(&docker, &rig.dir("second"), &image, 22);
    let over = docker.docker(&["push", &image], None);
    assert!(!over.status.success(), "docker overwrote an immutable tag");
    let said = text(&over);
    assert!(said.contains("immutable") && said.contains("v*"), "docker shows the rule: {said}");
    assert_eq!(rig.manifest("clients/pinned", "v1").1, first, "v1 did not move");
}

/// docker: a wrong password fails at login, and a push with wrong stored credentials fails,
/// each within 5 s (a check that docker gave up at once rather than retrying for a minute,
/// not a benchmark). Its own server: these failures count against the client's budget.
#[test]
fn docker_wrong_password_fails_fast_at_login_and_push() {
    let Some(rig) = Rig::start(&["dockerd", "docker", "containerd"]) else { return };
    let containerd = Containerd::start(&rig.dir("containerd"));
    let docker = Dockerd::start(&rig.dir("docker"), &containerd);
    docker.trust(&rig.host, &rig.ca.pem);

    let started = Instant::now();
    let login = docker.docker(&["login", "--username", USER, "--password-stdin", &rig.host], Some("wrong"));
    let login_time = started.elapsed();
    assert!(!login.status.success(), "docker logged in with a wrong password");
    assert!(text(&login).contains("401"), "not a 401: {}", text(&login));

    write_authfile(&docker.config, "config.json", &rig.host, USER, "also wrong");
    let image = rig.image("clients/denied", "v1");
    docker.docker_ok(&["import", path_str(&base_tarball(&rig.dir("build"), 2)), &image]);
    let started = Instant::now();
    let push = docker.docker(&["push", &image], None);
    let push_time = started.elapsed();
    assert!(!push.status.success(), "docker pushed with a wrong password");
    eprintln!("wrong password: login failed after {login_time:?}, push after {push_time:?}: {}", text(&push));
    assert!(login_time < Duration::from_secs(5), "the failed login took {login_time:?}");
    assert!(push_time < Duration::from_secs(5), "the failed push took {push_time:?}: {}", text(&push));
    assert!(text(&push).contains("unauthorized"), "not an unauthorized error: {}", text(&push));
    assert!(rig.get("/v2/_catalog").json::<Value>().expect("JSON")["repositories"] == serde_json::json!([]));
}

/// docker: pushing the same image to a second repository mounts every layer from the first
/// (docker says "Mounted from", the server counts mounts) instead of uploading it again.
#[test]
fn docker_push_to_a_second_repository_mounts_the_layers() {
    let Some(rig) = Rig::start(&["dockerd", "docker", "containerd"]) else { return };
    let (docker, _containerd) = docker_logged_in(&rig);
    let first = rig.image("mount/first", "v1");
    docker_build(&docker, &rig.dir("build"), &first, 3);
    docker.docker_ok(&["push", &first]);

    let mounts = |m: &HashMap<String, f64>| {
        util::sum(
            m,
            "regctl_http_requests_total",
            &["route=\"blob_upload\"", "method=\"POST\"", "status=\"201\""],
        )
    };
    let before = rig.metrics();
    let second = rig.image("mount/second", "v1");
    docker.docker_ok(&["tag", &first, &second]);
    let out = docker.docker_ok(&["push", &second]);
    let after = rig.metrics();
    assert_eq!(out.matches("Mounted from mount/first").count(), 3, "docker push said:\n{out}");
    assert_eq!(mounts(&after) - mounts(&before), 3.0, "three layers mounted");
    let (layers, _) = rig.manifest("mount/first", "v1");
    let (mounted, _) = rig.manifest("mount/second", "v1");
    assert_eq!(layers["layers"], mounted["layers"]);
    let completed = |m: &HashMap<String, f64>| util::sum(m, "regctl_upload_sessions_completed_total", &[]);
    assert!(
        completed(&after) - completed(&before) <= 1.0,
        "layers were uploaded again (only the config may be): {} uploads",
        completed(&after) - completed(&before)
    );
}

/// docker: `docker manifest create/annotate/push` makes a two-platform index of two pushed
/// images (the CLI talks to the registry itself here, trusting the same certs.d).
#[test]
fn docker_manifest_push_makes_a_two_platform_index() {
    let Some(rig) = Rig::start(&["dockerd", "docker", "containerd"]) else { return };
    let (docker, _containerd) = docker_logged_in(&rig);
    let (amd64, arm64) = (rig.image("multi/amd64", "v1"), rig.image("multi/arm64", "v1"));
    docker_build(&docker, &rig.dir("build-amd64"), &amd64, 4);
    docker_build(&docker, &rig.dir("build-arm64"), &arm64, 5);
    docker.docker_ok(&["push", &amd64]);
    docker.docker_ok(&["push", &arm64]);
    let index = rig.image("multi/app", "v1");
    docker.docker_ok(&["manifest", "create", &index, &amd64, &arm64]);
    docker.docker_ok(&["manifest", "annotate", "--arch", "arm64", &index, &arm64]);
    docker.docker_ok(&["manifest", "push", &index]);

    let (list, _) = rig.manifest("multi/app", "v1");
    assert_eq!(list["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json", "{list}");
    let platforms: Vec<(String, String)> = list["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| (m["platform"]["architecture"].to_string(), m["digest"].to_string()))
        .collect();
    let (_, amd64_digest) = rig.manifest("multi/amd64", "v1");
    let (_, arm64_digest) = rig.manifest("multi/arm64", "v1");
    assert_eq!(
        platforms,
        [
            ("\"amd64\"".to_string(), format!("\"{amd64_digest}\"")),
            ("\"arm64\"".to_string(), format!("\"{arm64_digest}\""))
        ]
    );
}

/// podman: login, push, `rmi`, pull (same image ID), `podman search HOST:PORT/` lists the
/// repository from the catalog, and `manifest push --all` pushes a two-platform index with
/// both images.
#[test]
fn podman_login_push_pull_search_and_manifest_push_all() {
    let Some(rig) = Rig::start(&["podman"]) else { return };
    let podman = Podman::new(&rig.dir("podman"), &rig.ca.pem);
    let cert_dir = format!("--cert-dir={}", podman.cert_dir.display());
    let login = podman
        .podman(&["login", &cert_dir, "--username", USER, "--password-stdin", &rig.host], Some(PASSWORD));
    engines::assert_success("podman login", &login);

    let image = rig.image("podman/app", "v1");
    podman.podman_ok(&["import", path_str(&base_tarball(&rig.dir("build"), 6)), &image]);
    let id = podman.image_id(&image);
    podman.podman_ok(&["push", &cert_dir, &image]);
    podman.podman_ok(&["rmi", &image]);
    podman.podman_ok(&["pull", &cert_dir, &image]);
    assert_eq!(podman.image_id(&image), id, "the pulled image has the pushed image's ID");

    let found = podman.podman_ok(&["search", "--format", "{{.Name}}", &format!("{}/", rig.host)]);
    assert!(
        found.lines().any(|l| l.trim() == image.trim_end_matches(":v1")),
        "podman search found:\n{found}"
    );

    let other = rig.image("podman/other", "v1");
    podman.podman_ok(&["import", path_str(&base_tarball(&rig.dir("build-other"), 7)), &other]);
    let list = rig.image("podman/multi", "v1");
    podman.podman_ok(&["manifest", "create", &list]);
    podman.podman_ok(&["manifest", "add", "--arch", "amd64", &list, &format!("containers-storage:{image}")]);
    podman.podman_ok(&["manifest", "add", "--arch", "arm64", &list, &format!("containers-storage:{other}")]);
    podman.podman_ok(&["manifest", "push", "--all", &cert_dir, &list, &format!("docker://{list}")]);
    let (index, _) = rig.manifest("podman/multi", "v1");
    let arches: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"], "{index}");
    for entry in index["manifests"].as_array().expect("manifests") {
        let digest = entry["digest"].as_str().expect("a digest");
        assert_eq!(
            rig.get(&format!("/v2/podman/multi/manifests/{digest}")).status(),
            200,
            "--all pushed {digest}"
        );
    }
}

/// ctr: an image imported from an OCI archive is pushed with `--user` and pulled back through
/// `--hosts-dir` with a `hosts.toml` naming the CA; without the CA, the pull fails on the
/// certificate.
#[test]
fn ctr_push_and_pull_with_hosts_toml() {
    let Some(rig) = Rig::start(&["containerd", "ctr"]) else { return };
    let containerd = Containerd::start(&rig.dir("containerd"));
    let hosts = Containerd::hosts_dir(&rig.dir("hosts"), &rig.host, &rig.ca.path);
    let (hosts, user) = (path_str(&hosts).to_string(), format!("{USER}:{PASSWORD}"));
    let image = rig.image("ctr/app", "v1");
    let oci = ctr_import(&containerd, &rig, 8, "ctr/app");
    containerd.ctr_ok(&["images", "push", "--hosts-dir", &hosts, "--user", &user, &image]);
    let (_, digest) = rig.manifest("ctr/app", "v1");
    assert_eq!(digest, oci.manifest.digest, "ctr pushed the manifest byte for byte");

    containerd.ctr_ok(&["images", "rm", &image]);
    let untrusted = containerd.ctr(&["images", "pull", "--user", &user, &image]);
    assert!(!untrusted.status.success(), "ctr pulled without trusting the registry's CA");
    assert!(text(&untrusted).contains("x509"), "not a certificate error: {}", text(&untrusted));
    ctr_pull(&containerd, &hosts, Some(&user), &image);
    assert_eq!(ctr_digest(&containerd, &image), oci.manifest.digest);
}

/// `ctr images pull` of `image` as `user` (`USER:PASSWORD`; anonymously without one),
/// trusting the registry through the `hosts.toml` files under `hosts`.
fn ctr_pull(containerd: &Containerd, hosts: &str, user: Option<&str>, image: &str) {
    let mut args = vec!["images", "pull", "--snapshotter", "native", "--hosts-dir", hosts];
    if let Some(user) = user {
        args.extend(["--user", user]);
    }
    args.push(image);
    containerd.ctr_ok(&args);
}

/// Writes an OCI image layout (uncompressed tar layers) as an archive and imports it into
/// containerd as `host/repo:v1`.
fn ctr_import(containerd: &Containerd, rig: &Rig, seed: u64, repo: &str) -> crate::util::layout::OciImage {
    let layout = rig.dir(&format!("oci-{seed}"));
    let oci = ImageBuilder::new(seed, &[6000, 3000]).write(&layout, "v1");
    let archive = rig.dir(&format!("oci-{seed}.tar"));
    run_ok(Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).arg("."));
    let base = format!("{}/{repo}", rig.host);
    containerd.ctr_ok(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        "--base-name",
        &base,
        path_str(&archive),
    ]);
    oci
}

/// The manifest digest of a containerd image.
fn ctr_digest(containerd: &Containerd, image: &str) -> String {
    let list = containerd.ctr_ok(&["images", "ls"]);
    let line = list.lines().find(|l| l.split_whitespace().next() == Some(image));
    let line = line.unwrap_or_else(|| panic!("{image} is not in ctr images ls:\n{list}"));
    line.split_whitespace().nth(2).expect("a digest column").to_string()
}

/// Each client's push is pulled by each other client: docker's by podman and ctr, podman's by
/// docker and ctr, ctr's by docker and podman, and every pull yields the pusher's config.
#[test]
fn images_pushed_by_each_client_are_pulled_by_the_others() {
    let Some(rig) = Rig::start(&["dockerd", "docker", "containerd", "ctr", "podman"]) else { return };
    let (docker, containerd) = docker_logged_in(&rig);
    let podman = Podman::new(&rig.dir("podman"), &rig.ca.pem);
    let cert_dir = format!("--cert-dir={}", podman.cert_dir.display());
    let login = podman
        .podman(&["login", &cert_dir, "--username", USER, "--password-stdin", &rig.host], Some(PASSWORD));
    engines::assert_success("podman login", &login);
    let hosts = Containerd::hosts_dir(&rig.dir("hosts"), &rig.host, &rig.ca.path);
    let (hosts, user) = (path_str(&hosts).to_string(), format!("{USER}:{PASSWORD}"));

    let from_docker = rig.image("cross/docker", "v1");
    let docker_config = docker_build(&docker, &rig.dir("build-docker"), &from_docker, 9);
    docker.docker_ok(&["push", &from_docker]);

    let from_podman = rig.image("cross/podman", "v1");
    podman.podman_ok(&["import", path_str(&base_tarball(&rig.dir("build-podman"), 10)), &from_podman]);
    let podman_config = format!("sha256:{}", podman.image_id(&from_podman));
    podman.podman_ok(&["push", &cert_dir, &from_podman]);

    let from_ctr = rig.image("cross/ctr", "v1");
    let oci = ctr_import(&containerd, &rig, 11, "cross/ctr");
    containerd.ctr_ok(&["images", "push", "--hosts-dir", &hosts, "--user", &user, &from_ctr]);

    for (image, repo, config, pusher) in [
        (&from_docker, "cross/docker", &docker_config, "docker"),
        (&from_podman, "cross/podman", &podman_config, "podman"),
        (&from_ctr, "cross/ctr", &oci.config.digest, "ctr"),
    ] {
        let (_, digest) = rig.manifest(repo, "v1");
        if pusher != "docker" {
            docker.docker_ok(&["pull", image]);
            assert_eq!(&docker.image_id(image), config, "docker pulled {pusher}'s image");
        }
        if pusher != "podman" {
            podman.podman_ok(&["pull", &cert_dir, image]);
            assert_eq!(
                &format!("sha256:{}", podman.image_id(image)),
                config,
                "podman pulled {pusher}'s image"
            );
        }
        if pusher != "ctr" {
            ctr_pull(&containerd, &hosts, Some(&user), image);
            assert_eq!(ctr_digest(&containerd, image), digest, "ctr pulled {pusher}'s image");
        }
    }
}

/// The Bearer token flow with docker (`serve --bearer`): `docker login` trades the password
/// for a refresh token at `/token` and keeps that, not the password, in its config; push, `rmi`
/// and pull then go through Bearer access tokens, which the server counts.
#[test]
fn docker_login_push_pull_through_the_bearer_flow() {
    let Some(rig) = Rig::start_with(&["dockerd", "docker", "containerd"], &["--bearer"]) else { return };
    let (docker, _containerd) = docker_logged_in(&rig);
    let config = std::fs::read_to_string(docker.config.join("config.json")).expect("docker's config.json");
    let config: Value = serde_json::from_str(&config).expect("JSON");
    let entry = &config["auths"][&rig.host];
    assert!(entry["identitytoken"].is_string(), "docker kept no refresh token: {config}");
    assert!(!config.to_string().contains(PASSWORD));
    let stored = entry["auth"].as_str().map(|a| a.to_string()).unwrap_or_default();
    assert!(!stored.contains(&b64(&format!("{USER}:{PASSWORD}"))), "docker stored the password: {config}");

    let before = rig.metrics();
    let image = rig.image("bearer/app", "v1");
    let id = docker_build(&docker, &rig.dir("build"), &image, 12);
    docker.docker_ok(&["push", &image]);
    docker.docker_ok(&["rmi", &image, "clients-base-12:latest"]);
    docker.docker_ok(&["pull", &image]);
    assert_eq!(docker.image_id(&image), id, "the pulled image has the pushed image's ID");
    let after = rig.metrics();
    let bearer = |m: &HashMap<String, f64>| util::sum(m, "regctl_auth_bearer_verified_total", &[]);
    let issued = |m: &HashMap<String, f64>| util::sum(m, "regctl_auth_tokens_issued_total", &[]);
    assert!(bearer(&after) - bearer(&before) >= 4.0, "docker did not use Bearer tokens: {}", bearer(&after));
    assert!(issued(&after) > issued(&before), "docker got no token from /token");
}

/// Anonymous pull and a logged-in push on one registry (`serve --anonymous-pull`): docker
/// logged in pushes; docker logged out pulls it, and so does containerd's `ctr` without
/// credentials, both through anonymous tokens.
#[test]
fn anonymous_pull_and_logged_in_push_on_one_registry() {
    let tools = ["dockerd", "docker", "containerd", "ctr"];
    let Some(rig) = Rig::start_with(&tools, &["--anonymous-pull"]) else { return };
    let (docker, containerd) = docker_logged_in(&rig);
    let image = rig.image("open/app", "v1");
    let id = docker_build(&docker, &rig.dir("build"), &image, 13);
    docker.docker_ok(&["push", &image]);

    docker.docker_ok(&["logout", &rig.host]);
    docker.docker_ok(&["rmi", &image, "clients-base-13:latest"]);
    docker.docker_ok(&["pull", &image]);
    assert_eq!(docker.image_id(&image), id, "docker pulled anonymously");

    let hosts = Containerd::hosts_dir(&rig.dir("hosts"), &rig.host, &rig.ca.path);
    ctr_pull(&containerd, path_str(&hosts), None, &image);
    let (_, digest) = rig.manifest("open/app", "v1");
    assert_eq!(ctr_digest(&containerd, &image), digest, "ctr pulled anonymously");

    // Logged out, a push is asked to log in (401 and the challenge), not refused as if the
    // anonymous puller were a user without push (403 "denied").
    let again = rig.image("open/app", "v2");
    docker.docker_ok(&["tag", &image, &again]);
    let push = docker.docker(&["push", &again], None);
    assert!(!push.status.success(), "docker pushed without credentials");
    let said = text(&push);
    assert!(said.contains("unauthorized") && !said.contains("denied"), "not a challenge to log in: {said}");
}

/// A pull-only user with docker, through Basic and through the Bearer flow: it pulls what
/// the full user pushed, and a push (to that repository or another) is refused with the
/// registry's `denied`; nothing of the refused pushes is stored.
#[test]
fn docker_pull_only_user_pulls_and_is_refused_push() {
    for bearer in [false, true] {
        let serve: &[&str] = if bearer { &["--bearer"] } else { &[] };
        let Some(rig) = Rig::start_with(&["dockerd", "docker", "containerd"], serve) else { return };
        let (docker, _containerd) = docker_logged_in(&rig);
        let image = rig.image("readers/app", "v1");
        let seed = 30 + u64::from(bearer);
        let id = docker_build(&docker, &rig.dir("build"), &image, seed);
        docker.docker_ok(&["push", &image]);

        let login = docker
            .docker(&["login", "--username", READER, "--password-stdin", &rig.host], Some(READER_PASSWORD));
        engines::assert_success("docker login as the reader", &login);
        docker.docker_ok(&["rmi", &image, &format!("clients-base-{seed}:latest")]);
        docker.docker_ok(&["pull", &image]);
        assert_eq!(docker.image_id(&image), id, "the reader pulled the image (bearer: {bearer})");

        for target in [rig.image("readers/app", "v2"), rig.image("readers/other", "v1")] {
            docker.docker_ok(&["tag", &image, &target]);
            let push = docker.docker(&["push", &target], None);
            assert!(!push.status.success(), "the pull-only user pushed {target} (bearer: {bearer})");
            assert!(text(&push).contains("denied"), "not the registry's denied: {}", text(&push));
        }
        let catalog = rig.get("/v2/_catalog").json::<Value>().expect("JSON");
        assert_eq!(catalog["repositories"], serde_json::json!(["readers/app"]), "bearer: {bearer}");
        let tags = rig.get("/v2/readers/app/tags/list").json::<Value>().expect("JSON");
        assert_eq!(tags["tags"], serde_json::json!(["v1"]), "bearer: {bearer}");
    }
}

/// Standard base64 of `text` (docker's `auth` field).
fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
