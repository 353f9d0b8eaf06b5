//! Load: many clients pushing and pulling at once, through the benchmark's client
//! (`regctl-bench`'s library, which checks every byte it reads against its digest), with
//! bcrypt Basic auth on every request, on the filesystem and on S3 (moto); then concurrent
//! pushes of one blob and of one tag, which must end in a consistent state.
//!
//! Bounded: `REGCTL_SOAK_SECONDS` (default 60, at most 900) sets the filesystem soak's length,
//! a quarter of it the S3 one's (moto is slow). Run with `--nocapture` to see the figures.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use regctl_bench::client::Registry;
use regctl_bench::soak::{self, Options};
use regctl_bench::workload::{Image, random_blob};

use crate::util::moto::Moto;
use crate::util::{self, Server, scrape, sum};

const USER: &str = "soak";
const PASSWORD: &str = "soak-test-password";

/// Writes an htpasswd file with [`USER`] (bcrypt, the default cost) and returns its path.
fn htpasswd(dir: &Path) -> String {
    let hash = bcrypt::hash(PASSWORD, bcrypt::DEFAULT_COST).expect("bcrypt");
    let file = dir.join("htpasswd");
    std::fs::write(&file, format!("{USER}:{hash}\n")).expect("write htpasswd");
    file.to_str().expect("a UTF-8 path").to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server is running");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of KiB")
}

/// Length of the filesystem soak's main phase (the warm-up is a sixth of it).
fn soak_length() -> Duration {
    let seconds = std::env::var("REGCTL_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60u64);
    Duration::from_secs(seconds.clamp(5, 900))
}

/// Soaks `server` with `clients` clients: a warm-up of `length / 6`, then `length` while its
/// memory is sampled; then pulls every image pushed once more. Asserts that nothing failed,
/// that the server answered no request with a 5xx, and that its memory after the soak is
/// within a generous bound of its memory after the warm-up. Prints the figures.
fn soak_and_check(server: &Server, label: &str, clients: usize, length: Duration, large_layer: u64) {
    let rt = runtime();
    let registry = Registry::new(&server.base(), USER, PASSWORD);
    let options = |seed, duration| Options { clients, duration, ops_per_client: 100_000, seed, large_layer };
    let started = Instant::now();

    let warmup = rt.block_on(soak::run(&registry, &options(1, length / 6), &[]));
    assert_eq!(warmup.failures, 0, "{label} warm-up failures: {:#?}", warmup.errors);
    std::thread::sleep(Duration::from_secs(2));
    let warm = rss_kib(server.pid());

    let (pid, peak) = (server.pid(), Arc::new(AtomicU64::new(0)));
    let main = rt.block_on(async {
        let sampled = peak.clone();
        let sampler = tokio::spawn(async move {
            loop {
                sampled.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let report = soak::run(&registry, &options(2, length), &warmup.images).await;
        sampler.abort();
        report
    });
    assert_eq!(main.failures, 0, "{label} soak failures: {:#?}", main.errors);
    assert!(
        main.pushes > 0 && main.pulls > main.pushes,
        "{label}: a soak that did little: {} pushes, {} pulls",
        main.pushes,
        main.pulls
    );

    let all: Vec<Image> = warmup.images.iter().chain(&main.images).map(Image::skeleton).collect();
    let errors = rt.block_on(soak::verify_all(&registry, &all, 16));
    assert!(errors.is_empty(), "{label}: images lost or corrupt after the soak: {errors:#?}");

    std::thread::sleep(Duration::from_secs(2));
    let end = rss_kib(server.pid());
    let (status, metrics) = scrape(&server.url("/metrics"), Some((USER, PASSWORD)));
    assert_eq!(status, 200, "{label}: /metrics");
    let served = sum(&metrics, "regctl_http_requests_total", &[]);
    let server_errors = sum(&metrics, "regctl_http_requests_total", &["status=\"5"]);
    assert_eq!(server_errors, 0.0, "{label}: the server answered 5xx");
    eprintln!(
        "soak {label}: {clients} clients, {:.0} s: {} requests sent, {served} served, 0 errors; \
         {} images pushed, {} pulled during the soak and {} re-pulled after it; {:.1} MB verified \
         against digests; server RSS {} MiB after warm-up, {} MiB at most during the soak, {} MiB at the end",
        started.elapsed().as_secs_f64(),
        registry.requests(),
        warmup.pushes + main.pushes,
        warmup.pulls + main.pulls,
        all.len(),
        registry.verified_bytes() as f64 / 1e6,
        warm / 1024,
        peak.load(Ordering::Relaxed) / 1024,
        end / 1024,
    );
    // Flat memory: not a timing or tuning figure, a leak detector. A leak per request would
    // grow with the main phase, which is six times the warm-up.
    let bound = warm + (warm / 2).max(64 << 10);
    assert!(end <= bound, "{label}: server RSS grew from {warm} KiB after warm-up to {end} KiB");
}

#[test]
fn soak_64_clients_on_the_filesystem_lose_and_corrupt_nothing_in_flat_memory() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let server = Server::start_with(&["--htpasswd", &htpasswd(tmp.path())]);
    soak_and_check(&server, "fs", 64, soak_length(), 3 << 20);
}

#[test]
fn soak_on_s3_loses_and_corrupts_nothing_and_same_tag_races_end_consistent() {
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let env = moto.registry_env(&bucket);
    let env = crate::util::moto::borrowed(&env);
    let server =
        Server::start_on_env(&tmp.path().join("unused"), &["--htpasswd", &htpasswd(tmp.path())], &env);
    // Layers above the 5 MiB chunk size go to S3 as multipart uploads.
    soak_and_check(&server, "s3", 16, soak_length() / 4, 6 << 20);
    same_tag_race(&server, 16);
}

#[test]
fn same_blob_and_same_tag_from_32_clients_end_consistent() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let server = Server::start_with(&["--htpasswd", &htpasswd(tmp.path())]);
    same_blob_race(&server, 32);
    same_tag_race(&server, 32);
}

/// `clients` clients push one 8 MiB blob to one repository at the same moment, and to one
/// repository each: every push succeeds, the blob reads back whole in every repository, and
/// no upload session is left behind.
fn same_blob_race(server: &Server, clients: usize) {
    let rt = runtime();
    let registry = Registry::new(&server.base(), USER, PASSWORD);
    let blob = random_blob(4242, 8 << 20);
    rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(2 * clients));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..2 * clients {
            let (registry, blob, barrier) = (registry.clone(), blob.clone(), barrier.clone());
            let repo = if i < clients { "race/blob".to_string() } else { format!("race/blob-{i}") };
            tasks.spawn(async move {
                barrier.wait().await;
                registry.push_blob(&repo, &blob).await.map_err(|e| format!("push to {repo}: {e:#}"))?;
                registry.pull_blob(&repo, &blob).await.map_err(|e| format!("pull from {repo}: {e:#}"))
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a client task").unwrap_or_else(|e| panic!("same-blob race: {e}"));
        }
    });
    let uploads = server.root.join("docker/registry/v2/repositories/race/blob/_uploads");
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "upload sessions left in {}", uploads.display());
    // The one stored copy is the blob, whole.
    let hex = blob.digest.trim_start_matches("sha256:");
    let data = server.root.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    assert_eq!(util::sha256(&std::fs::read(&data).expect("the stored blob")), blob.digest);
}

/// `clients` clients push different manifests to one tag at the same moment: every push
/// succeeds, the tag then names one of them (fully pullable), every one of them is still
/// there by digest, and the tag is listed once.
fn same_tag_race(server: &Server, clients: usize) {
    let rt = runtime();
    let registry = Registry::new(&server.base(), USER, PASSWORD);
    let base = random_blob(77, 300 << 10);
    let images: Vec<Arc<Image>> = (0..clients)
        .map(|i| {
            let own = random_blob(7000 + i as u64, 1024 + i as u64);
            Arc::new(Image::new("race/tag".into(), vec![base.clone(), own]).with_tag("latest"))
        })
        .collect();
    rt.block_on(async {
        for image in &images {
            for blob in std::iter::once(&image.config).chain(&image.layers) {
                registry.push_blob(&image.repo, blob).await.expect("push the blobs first");
            }
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(clients));
        let mut tasks = tokio::task::JoinSet::new();
        for image in &images {
            let (registry, image, barrier) = (registry.clone(), image.clone(), barrier.clone());
            tasks.spawn(async move {
                barrier.wait().await;
                registry.push_manifest(&image).await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a client task").unwrap_or_else(|e| panic!("same-tag race: {e:#}"));
        }
    });
    let resp = util::http()
        .get(server.url("/v2/race/tag/manifests/latest"))
        .basic_auth(USER, Some(PASSWORD))
        .header("Accept", util::MANIFEST_ACCEPT)
        .send()
        .expect("GET the tag");
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().expect("manifest body");
    let winner = images
        .iter()
        .find(|i| i.manifest_digest == util::sha256(&body))
        .expect("the tag names one of the manifests pushed");
    rt.block_on(async {
        registry.pull_image(winner).await.expect("the tagged image pulls whole");
        for image in &images {
            let digest = &image.manifest_digest;
            registry.get_manifest(&image.repo, digest, digest).await.expect("every manifest pushed is kept");
        }
    });
    let tags = util::get_all_pages(
        &server.base().replace("http://", &format!("http://{USER}:{PASSWORD}@")),
        "/v2/race/tag/tags/list",
        "tags",
    );
    assert_eq!(tags, ["latest"]);
}
