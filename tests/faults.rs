//! Faults: the server killed with SIGKILL in the middle of pushes and restarted, on the
//! filesystem and on S3 (moto); a full disk under the filesystem backend; S3 errors and stalls
//! injected between the server and moto (`tests/moto_shim.py --s3-faults`).
//!
//! The invariant everywhere: whatever a client was told is stored (a 201) reads back whole,
//! nothing half-written is ever visible, and an interrupted upload either resumes or is
//! cleanly unknown.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regctl_bench::workload::{Image, Rng, random_blob};
use reqwest::StatusCode;
use reqwest::blocking::Client;

use crate::util::moto::{Moto, Shim};
use crate::util::{self, Server};

/// Size of the chunks the pushing clients `PATCH`.
const CHUNK: usize = 256 << 10;

/// Where a restarted server finds its data.
enum Backend<'a> {
    /// A directory that outlives each server.
    Fs(&'a Path),
    /// A bucket of a moto server.
    S3 { env: Vec<(String, String)>, scratch: &'a Path },
}

impl Backend<'_> {
    fn start(&self) -> Server {
        match self {
            Backend::Fs(root) => Server::start_on(root, &[]),
            Backend::S3 { env, scratch } => {
                let env = crate::util::moto::borrowed(env);
                Server::start_on_env(scratch, &[], &env)
            }
        }
    }
}

/// An upload session a client started and had not finished when the server died.
#[derive(Debug, Clone)]
struct Pending {
    repo: String,
    /// The session's URL path.
    location: String,
    /// Bytes the server acknowledged (a 202 to a `PATCH`).
    acked: usize,
    /// True once the closing `PUT` was sent: the blob may be committed already.
    finishing: bool,
    content: Arc<Vec<u8>>,
    digest: String,
}

/// What the clients were told, and what went wrong that a dying server does not explain.
#[derive(Debug, Default)]
struct Ledger {
    /// Blobs acknowledged with a 201: (repository, digest, size).
    blobs: Vec<(String, String, usize)>,
    /// Manifests acknowledged with a 201: (repository, tag, digest).
    manifests: Vec<(String, String, String)>,
    /// Sessions in progress, by id.
    pending: BTreeMap<usize, Pending>,
    /// Answers that were not what the protocol promises, while the server was up.
    unexpected: Vec<String>,
}

/// Why a client stopped pushing.
enum Stop {
    /// The connection failed: the server was killed.
    Transport,
    /// An answer the test did not expect (recorded in the ledger).
    Unexpected,
}

/// A client pushing images in 256 KiB chunks, writing down each acknowledgement.
struct Pusher {
    http: Client,
    base: String,
    ledger: Arc<Mutex<Ledger>>,
    next_id: usize,
}

impl Pusher {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unexpected(&self, what: String) -> Stop {
        self.ledger().unexpected.push(what);
        Stop::Unexpected
    }

    /// Sends a request; a transport failure means the server is gone.
    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<reqwest::blocking::Response, Stop> {
        request.send().map_err(|_| Stop::Transport)
    }

    fn location(&self, resp: &reqwest::blocking::Response, what: &str) -> Result<String, Stop> {
        match resp.headers().get("location").and_then(|l| l.to_str().ok()) {
            Some(l) => Ok(l.to_string()),
            None => Err(self.unexpected(format!("{what}: no Location"))),
        }
    }

    /// Pushes one blob: `POST`, `PATCH`es of [`CHUNK`] bytes, `PUT ?digest=`.
    fn push_blob(&mut self, repo: &str, content: Arc<Vec<u8>>, digest: &str) -> Result<(), Stop> {
        let resp = self.send(self.http.post(format!("{}/v2/{repo}/blobs/uploads/", self.base)))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.unexpected(format!("POST upload to {repo}: {}", resp.status())));
        }
        let mut location = self.location(&resp, "POST upload")?;
        let id = self.next_id;
        self.next_id += 1;
        let pending = Pending {
            repo: repo.to_string(),
            location: location.clone(),
            acked: 0,
            finishing: false,
            content: content.clone(),
            digest: digest.to_string(),
        };
        self.ledger().pending.insert(id, pending);
        let mut offset = 0;
        while offset < content.len() {
            let end = (offset + CHUNK).min(content.len());
            let resp = self.send(
                self.http
                    .patch(format!("{}{location}", self.base))
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("{offset}-{}", end - 1))
                    .body(content[offset..end].to_vec()),
            )?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.unexpected(format!("PATCH {location} at {offset}: {}", resp.status())));
            }
            location = self.location(&resp, "PATCH")?;
            offset = end;
            if let Some(p) = self.ledger().pending.get_mut(&id) {
                p.acked = offset;
                p.location = location.clone();
            }
        }
        if let Some(p) = self.ledger().pending.get_mut(&id) {
            p.finishing = true;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self.send(self.http.put(format!("{}{location}{sep}digest={digest}", self.base)))?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.unexpected(format!("PUT {location}: {}", resp.status())));
        }
        let mut ledger = self.ledger();
        ledger.pending.remove(&id);
        ledger.blobs.push((repo.to_string(), digest.to_string(), content.len()));
        Ok(())
    }

    /// Pushes `image`'s blobs, then its manifest.
    fn push_image(&mut self, image: &Image) -> Result<(), Stop> {
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            self.push_blob(&image.repo, Arc::new(blob.frames.concat()), &blob.digest)?;
        }
        let url = format!("{}/v2/{}/manifests/{}", self.base, image.repo, image.tag);
        let resp = self.send(
            self.http
                .put(url)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .body(image.manifest.to_vec()),
        )?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.unexpected(format!(
                "PUT manifest {}:{}: {}",
                image.repo,
                image.tag,
                resp.status()
            )));
        }
        let entry = (image.repo.clone(), image.tag.clone(), image.manifest_digest.clone());
        self.ledger().manifests.push(entry);
        Ok(())
    }
}

/// The bytes and digest of `GET base+path`, or the status when it is not a 200.
fn fetch(http: &Client, url: &str) -> Result<(Vec<u8>, String), StatusCode> {
    let resp = http
        .get(url)
        .header("Accept", util::MANIFEST_ACCEPT)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    if resp.status() != StatusCode::OK {
        return Err(resp.status());
    }
    let body = resp.bytes().unwrap_or_else(|e| panic!("GET {url}: body: {e}")).to_vec();
    let digest = util::sha256(&body);
    Ok((body, digest))
}

/// Counts of what one restart's check verified.
#[derive(Debug, Default, Clone, Copy)]
struct Checked {
    blobs: usize,
    manifests: usize,
    resumed: usize,
    unknown: usize,
    tags: usize,
}

/// Checks, on a freshly restarted server, everything the ledger says was acknowledged, then
/// finishes or finds cleanly unknown every interrupted upload, then pulls every tag of every
/// repository whole.
fn check_ledger(server: &Server, ledger: &mut Ledger) -> Checked {
    let http = util::http();
    let mut checked = Checked::default();
    for (repo, digest, size) in &ledger.blobs {
        let (body, actual) = fetch(&http, &server.url(&format!("/v2/{repo}/blobs/{digest}")))
            .unwrap_or_else(|s| panic!("acknowledged blob {digest} in {repo} lost after SIGKILL: {s}"));
        assert_eq!((body.len(), &actual), (*size, digest), "acknowledged blob {digest} in {repo} corrupt");
        checked.blobs += 1;
    }
    for (repo, tag, digest) in &ledger.manifests {
        for reference in [tag, digest] {
            let (_, actual) = fetch(&http, &server.url(&format!("/v2/{repo}/manifests/{reference}")))
                .unwrap_or_else(|s| {
                    panic!("acknowledged manifest {repo}:{reference} lost after SIGKILL: {s}")
                });
            assert_eq!(&actual, digest, "manifest {repo}:{reference} corrupt after SIGKILL");
        }
        checked.manifests += 1;
    }
    for pending in std::mem::take(&mut ledger.pending).into_values() {
        if resume(server, &http, &pending) {
            ledger.blobs.push((pending.repo.clone(), pending.digest.clone(), pending.content.len()));
            checked.resumed += 1;
        } else {
            checked.unknown += 1;
        }
    }
    checked.tags = pull_every_tag(server, &http);
    checked
}

/// Resumes an interrupted upload from where the server says it stands (its `Range`) and
/// finishes it; returns false when the server answers that the session is unknown, with the
/// spec's error body.
fn resume(server: &Server, http: &Client, p: &Pending) -> bool {
    let url = server.url(&p.location);
    let status = http.get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    if status.status() == StatusCode::NOT_FOUND {
        let body: serde_json::Value = status.json().expect("a spec error body");
        assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN", "{url}: {body}");
        return false;
    }
    assert_eq!(status.status(), StatusCode::NO_CONTENT, "upload status of {url}");
    let range = status.headers()["range"].to_str().expect("an ASCII Range").to_string();
    let end: usize = range.strip_prefix("0-").and_then(|e| e.parse().ok()).expect("Range: 0-<end>");
    // "0-0" is both "nothing" and "one byte" (distribution's encoding): try both.
    let candidates = if end == 0 { vec![0, 1] } else { vec![end + 1] };
    for held in candidates {
        assert!(held <= p.content.len(), "{url}: the server holds {held} bytes of {}", p.content.len());
        if !p.finishing {
            assert!(held >= p.acked, "{url}: {held} bytes held, {} were acknowledged", p.acked);
        }
        let mut location = p.location.clone();
        if held < p.content.len() {
            let resp = http
                .patch(server.url(&location))
                .header("Content-Range", format!("{held}-{}", p.content.len() - 1))
                .body(p.content[held..].to_vec())
                .send()
                .expect("PATCH the rest");
            if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                continue;
            }
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH the rest of {url}");
            location = resp.headers()["location"].to_str().expect("Location").to_string();
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = http
            .put(server.url(&format!("{location}{sep}digest={}", p.digest)))
            .send()
            .expect("PUT to finish");
        // Resumed bytes that differed from what was sent would fail the digest here.
        assert_eq!(resp.status(), StatusCode::CREATED, "finishing the resumed {url}: {:?}", resp.text());
        return true;
    }
    panic!("{url}: no starting offset accepted after Range {range}");
}

/// Pulls every tag of every repository in the catalog, with every blob its manifest names:
/// a tag is only visible once all of it is stored. Returns the number of tags.
fn pull_every_tag(server: &Server, http: &Client) -> usize {
    let mut tags = 0;
    for repo in util::get_all_pages(&server.base(), "/v2/_catalog?n=1000", "repositories") {
        for tag in util::get_all_pages(&server.base(), &format!("/v2/{repo}/tags/list"), "tags") {
            let (body, _) = fetch(http, &server.url(&format!("/v2/{repo}/manifests/{tag}")))
                .unwrap_or_else(|s| panic!("listed tag {repo}:{tag} does not resolve: {s}"));
            let manifest: serde_json::Value = serde_json::from_slice(&body).expect("a JSON manifest");
            let descriptors = std::iter::once(&manifest["config"])
                .chain(manifest["layers"].as_array().into_iter().flatten());
            for d in descriptors {
                let digest = d["digest"].as_str().expect("a digest");
                let (blob, actual) = fetch(http, &server.url(&format!("/v2/{repo}/blobs/{digest}")))
                    .unwrap_or_else(|s| panic!("{repo}:{tag} names blob {digest}, which is {s}"));
                assert_eq!(actual, digest, "{repo}:{tag}: blob corrupt");
                assert_eq!(Some(blob.len() as u64), d["size"].as_u64(), "{repo}:{tag}: blob size");
            }
            tags += 1;
        }
    }
    tags
}

/// Every blob file under a filesystem root has the digest its path names: no partial blob is
/// ever in place. Returns how many there are.
fn assert_blob_files_whole(root: &Path) -> usize {
    let blobs = root.join("docker/registry/v2/blobs/sha256");
    let mut count = 0;
    for prefix in std::fs::read_dir(&blobs).into_iter().flatten() {
        let prefix = prefix.expect("a directory entry").path();
        for dir in std::fs::read_dir(&prefix).expect("a blob prefix directory") {
            let dir = dir.expect("a directory entry").path();
            let hex = dir.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name").to_string();
            // A directory without data (a write that failed) holds no blob: the API says unknown.
            let Ok(data) = std::fs::read(dir.join("data")) else { continue };
            assert_eq!(
                util::sha256(&data),
                format!("sha256:{hex}"),
                "partial or corrupt blob {}",
                dir.display()
            );
            count += 1;
        }
    }
    count
}

/// The images client `client` pushes in round `round`: two layers of 20 KiB to `max_layer`
/// bytes, a tag of their own.
fn image(round: u64, client: u64, n: u64, rng: &mut Rng, max_layer: u64) -> Image {
    let seed = (round << 40) | (client << 20) | n;
    let layers = (0..2).map(|j| random_blob(seed * 2 + j, (20 << 10) + rng.next_u64() % max_layer)).collect();
    Image::new(format!("kill/c{client}"), layers).with_tag(format!("r{round}-{n}"))
}

/// Rounds of: start the server on `backend`, push from `clients` clients, SIGKILL the server
/// after a random delay in `delays` (ms), restart it and check everything. Returns totals.
fn kill_rounds(
    backend: &Backend,
    rounds: u64,
    clients: u64,
    delays: (u64, u64),
    max_layer: u64,
) -> (Checked, u64) {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = Rng::new(99);
    let mut total = Checked::default();
    for round in 0..rounds {
        let server = backend.start();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let mut pusher = Pusher {
                    http: util::client_builder().timeout(Duration::from_secs(120)).build().expect("a client"),
                    base: server.base(),
                    ledger: ledger.clone(),
                    next_id: (round * 100 + client) as usize * 100_000,
                };
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut rng = Rng::new(round * 1000 + client);
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let image = image(round, client, n, &mut rng, max_layer);
                        if let Err(Stop::Transport | Stop::Unexpected) = pusher.push_image(&image) {
                            return;
                        }
                    }
                })
            })
            .collect();
        let delay = delays.0 + rng.next_u64() % (delays.1 - delays.0);
        std::thread::sleep(Duration::from_millis(delay));
        drop(server); // SIGKILL, then wait
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("a pushing client");
        }
        let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
        assert!(ledger.unexpected.is_empty(), "round {round}: {:#?}", ledger.unexpected);
        let in_flight = ledger.pending.len();
        let server = backend.start();
        let checked = check_ledger(&server, &mut ledger);
        if let Backend::Fs(root) = backend {
            assert_blob_files_whole(root);
        }
        eprintln!(
            "round {round}: killed after {delay} ms with {in_flight} uploads in flight; {} blobs, {} manifests \
             intact; {} uploads resumed, {} unknown; {} tags pull whole",
            checked.blobs, checked.manifests, checked.resumed, checked.unknown, checked.tags
        );
        total.resumed += checked.resumed;
        total.unknown += checked.unknown;
        (total.blobs, total.manifests, total.tags) = (checked.blobs, checked.manifests, checked.tags);
    }
    (total, rounds)
}

#[test]
fn sigkill_during_pushes_on_the_filesystem_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = tmp.path().join("data");
    let (total, kills) = kill_rounds(&Backend::Fs(&root), 12, 4, (150, 1500), 3 << 20);
    eprintln!(
        "fs: {kills} SIGKILLs; {} acknowledged blobs and {} manifests intact, {} interrupted uploads resumed, \
         {} cleanly unknown, {} blob files whole",
        total.blobs,
        total.manifests,
        total.resumed,
        total.unknown,
        assert_blob_files_whole(&root)
    );
    assert!(total.manifests > 0 && total.resumed > 0, "the kills must land in the middle of pushes");
}

#[test]
fn sigkill_during_pushes_on_s3_loses_nothing_acknowledged() {
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let backend = Backend::S3 { env: moto.registry_env(&bucket), scratch: &tmp.path().join("unused") };
    // Layers up to 6 MiB: some cross the 5 MiB part size and go to S3 as multipart uploads.
    let (total, kills) = kill_rounds(&backend, 4, 3, (4000, 10000), 6 << 20);
    eprintln!(
        "s3: {kills} SIGKILLs; {} acknowledged blobs and {} manifests intact, {} interrupted uploads resumed, \
         {} cleanly unknown",
        total.blobs, total.manifests, total.resumed, total.unknown
    );
    assert!(total.blobs > 0, "the kills must land in the middle of pushes");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `24m`) on `dir`, or returns `None` locally when this is
    /// not root (CI runs as root and must not skip).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let uid = std::process::Command::new("id").arg("-u").output().expect("run id -u");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            assert!(!util::in_ci(), "the disk-full test mounts a tmpfs: CI must run it as root");
            eprintln!("SKIPPED: mounting a small tmpfs needs root; run the tests as root");
            return None;
        }
        std::fs::create_dir_all(dir).expect("a mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs on {}", dir.display());
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The error answer to an upload the disk cannot hold, as [`assert_clean_error`] checks it; or
/// `None` when the client was cut off while it still sent the body. The server answers as soon
/// as a write fails and closes the connection without reading the rest of a 30 MiB body, so
/// the kernel resets it; hyper's client (reqwest) then reports the failed write and drops the
/// answer (Go's client, docker's, reads it), which happens only when the machine is busy enough
/// for the answer to arrive before the body is sent. Either way nothing may be stored: the
/// test checks that next.
fn clean_error_or_cut_off(
    resp: reqwest::Result<reqwest::blocking::Response>,
    what: &str,
) -> Option<StatusCode> {
    match resp {
        Ok(resp) => Some(assert_clean_error(resp, what)),
        Err(e) => {
            let cut_off = std::error::Error::source(&e).is_some_and(|s| {
                let text = format!("{s:?}");
                text.contains("BrokenPipe") || text.contains("ConnectionReset")
            });
            assert!(cut_off, "{what}: {e:?}");
            eprintln!("{what}: the client was cut off while sending the body ({e})");
            None
        }
    }
}

/// Asserts a registry error answer: a 5xx (or a 4xx) with the spec's `{"errors":[...]}` body.
fn assert_clean_error(resp: reqwest::blocking::Response, what: &str) -> StatusCode {
    let status = resp.status();
    assert!(status.is_server_error() || status.is_client_error(), "{what}: {status}");
    let body: serde_json::Value = resp.json().unwrap_or_else(|e| panic!("{what}: a JSON error body: {e}"));
    assert!(body["errors"][0]["code"].is_string(), "{what}: {body}");
    status
}

#[test]
fn a_full_disk_is_a_clean_error_that_corrupts_nothing_and_passes() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mount = tmp.path().join("small");
    let Some(_tmpfs) = Tmpfs::mount(&mount, "24m") else { return };
    let root = mount.join("data");
    let server = Server::start_on(&root, &[]);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut pusher = Pusher { http: util::http(), base: server.base(), ledger: ledger.clone(), next_id: 0 };
    let mut rng = Rng::new(5);
    let before = image(0, 0, 0, &mut rng, 2 << 20);
    assert!(pusher.push_image(&before).is_ok(), "{:?}", ledger.lock().map(|l| l.unexpected.clone()));

    // A blob bigger than the free space, in one request and in chunks: clean errors.
    let big = random_blob(31, 30 << 20);
    let content = big.frames.concat();
    let http = util::http();
    let resp = http
        .post(server.url(&format!("/v2/full/app/blobs/uploads/?digest={}", big.digest)))
        .body(content.clone())
        .send();
    let monolithic = clean_error_or_cut_off(resp, "a monolithic upload on a full disk");
    let started = http.post(server.url("/v2/full/app/blobs/uploads/")).send().expect("POST");
    let location = started.headers()["location"].to_str().expect("Location").to_string();
    let resp = http
        .patch(server.url(&location))
        .header("Content-Range", format!("0-{}", content.len() - 1))
        .body(content)
        .send();
    let chunked = clean_error_or_cut_off(resp, "a chunk on a full disk");
    let resp = http.head(server.url(&format!("/v2/full/app/blobs/{}", big.digest))).send().expect("HEAD");
    assert_eq!(resp.status(), 404, "a blob that did not fit is not there");

    // Full to the last byte: a manifest push fails cleanly and leaves no half-written tag.
    let after = image(0, 0, 1, &mut rng, 1 << 20);
    for blob in std::iter::once(&after.config).chain(&after.layers) {
        assert!(pusher.push_blob(&after.repo, Arc::new(blob.frames.concat()), &blob.digest).is_ok());
    }
    let filler = mount.join("filler");
    fill(&filler);
    let url = server.url(&format!("/v2/{}/manifests/{}", after.repo, after.tag));
    let resp = http
        .put(&url)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(after.manifest.to_vec())
        .send()
        .expect("PUT a manifest");
    let manifest_status = assert_clean_error(resp, "a manifest on a full disk");
    match fetch(&http, &url) {
        Err(status) => assert_eq!(status, 404, "{url}"),
        Ok((_, digest)) => assert_eq!(digest, after.manifest_digest, "a tag names a half-written manifest"),
    }

    // The server still serves, and what was there is intact.
    assert_eq!(http.get(server.url("/v2/")).send().expect("GET /v2/").status(), 200);
    let mut ledger_now = ledger.lock().unwrap_or_else(|p| p.into_inner());
    let checked = check_ledger(&server, &mut ledger_now);
    assert_blob_files_whole(&root);

    // Space again: the same pushes work.
    std::fs::remove_file(&filler).expect("remove the filler");
    let resp = http
        .put(&url)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(after.manifest.to_vec())
        .send()
        .expect("PUT the manifest again");
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    let resp = http
        .post(server.url(&format!("/v2/full/app/blobs/uploads/?digest={}", random_blob(32, 4 << 20).digest)))
        .body(random_blob(32, 4 << 20).frames.concat())
        .send()
        .expect("POST a blob");
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    assert_eq!(pull_every_tag(&server, &http), 2);
    assert_blob_files_whole(&root);
    eprintln!(
        "disk full: monolithic upload {monolithic:?}, chunk {chunked:?}, manifest {manifest_status}; {} blobs and \
         {} manifests intact; pushes work again once space is freed",
        checked.blobs, checked.manifests
    );
}

/// Writes zeros to `file` until the filesystem is full.
fn fill(file: &Path) {
    use std::io::Write as _;
    let mut out = std::fs::File::create(file).expect("create the filler");
    let block = vec![0u8; 64 << 10];
    while out.write_all(&block).is_ok() {}
    // The last partial block: byte by byte until nothing more fits.
    while out.write_all(&[0]).is_ok() {}
    let _ = out.sync_all();
}

/// What kind of failure a failed push or pull is. Clean ones: an error answer (a 5xx, with
/// the spec's body where the client shows it), or a body cut short (storage failed after the
/// answer began). Never acceptable: a complete body of the wrong bytes, or a 404 for
/// something acknowledged.
fn classify(error: &anyhow::Error) -> &'static str {
    let message = format!("{error:#}");
    if message.contains("content has digest") || message.contains("bytes, expected") {
        "corrupt"
    } else if message.contains("{\"errors\":[{\"code\":") {
        "error answer"
    } else if message.contains("404 Not Found") {
        "lost"
    } else if message.contains("500 Internal Server Error") || message.contains("503 Service Unavailable") {
        "error answer"
    } else if message.contains("reading a response body") {
        "body cut short"
    } else {
        "other"
    }
}

#[test]
fn s3_errors_and_stalls_are_retried_or_clean_errors_never_a_corrupt_commit_or_read() {
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let scratch = tmp.path().join("unused");
    let shim = Shim::start(&moto.endpoint, &["--s3-faults", "0.08", "--seed", "11"]);
    let mut env = moto.registry_env(&bucket);
    for (key, value) in &mut env {
        if key == "REGISTRY_STORAGE_S3_REGIONENDPOINT" {
            value.clone_from(&shim.endpoint);
        }
    }
    let server = Backend::S3 { env, scratch: &scratch }.start();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let registry = regctl_bench::client::Registry::new(&server.base(), "unused", "unused");
    let mut rng = Rng::new(17);
    // Layers up to 6 MiB: some cross the 5 MiB part size (multipart uploads, part copies).
    let images: Vec<Image> = (0..12).map(|n| image(7, n % 3, n, &mut rng, 6 << 20)).collect();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut pushed, mut refused) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for image in &images {
            match registry.push_image(image).await {
                Ok(()) => pushed.push(image.skeleton()),
                Err(e) => {
                    *outcomes.entry(classify(&e)).or_default() += 1;
                    refused.push(format!("{e:#}").chars().take(160).collect::<String>());
                }
            }
            for earlier in pushed.iter().rev().take(2) {
                match registry.pull_image(earlier).await {
                    Ok(()) => *outcomes.entry("pull ok").or_default() += 1,
                    Err(e) => {
                        let kind = classify(&e);
                        assert!(!matches!(kind, "corrupt" | "lost"), "a pull through S3 faults: {e:#}");
                        *outcomes.entry(kind).or_default() += 1;
                    }
                }
            }
        }
    });
    let faults = shim.stats();
    drop(server);
    for bad in ["corrupt", "lost", "other"] {
        assert!(!outcomes.contains_key(bad), "{outcomes:?}");
    }

    // Without faults, everything acknowledged is there, and every visible tag pulls whole.
    let env = moto.registry_env(&bucket);
    let server = Backend::S3 { env, scratch: &scratch }.start();
    let registry = regctl_bench::client::Registry::new(&server.base(), "unused", "unused");
    let errors = rt.block_on(regctl_bench::soak::verify_all(&registry, &pushed, 4));
    assert!(errors.is_empty(), "acknowledged pushes lost or corrupt behind S3 faults: {errors:#?}");
    let tags = pull_every_tag(&server, &util::http());
    // Every S3 request is retried by the SDK, a body cut short is read again, and a retried
    // conditional write that took effect is recognised: a push fails only when one request
    // exhausts its attempts, so (nearly) every push survives.
    assert!(
        pushed.len() + 1 >= images.len(),
        "pushes survive 8 % faults: {outcomes:?}, {faults}, refused: {refused:#?}"
    );
    eprintln!(
        "s3 faults: {faults} injected; {} of {} image pushes acknowledged, all intact; {tags} visible tags pull \
         whole; failures: {outcomes:?}; refused pushes: {refused:#?}",
        pushed.len(),
        images.len()
    );
}
