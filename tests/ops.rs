//! Operating the registry: webhooks (a receiver in the test, restarted, and a registry restart
//! in between), the web UI in headless Chromium, garbage collection racing a push, and
//! `/metrics` and `/health` after a push.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::layout::{ImageBuilder, MIB, OCI_MANIFEST, OciImage, assert_same_blobs};
use crate::util::{Server, free_addr, http, require_tool, scrape, skopeo, sum};

const KIB: u64 = 1024;

/// Polls `done` every 100 ms until it holds, failing with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes a file and returns its path as a string.
fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.to_str().expect("UTF-8 path").to_string()
}

/// Where screenshots and pages are kept for people to look at: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// An htpasswd file with one bcrypt user (Apache's `htpasswd -B`), or `None` when the tool is
/// missing (outside CI).
fn htpasswd(dir: &Path, user: &str, password: &str) -> Option<String> {
    if !require_tool("htpasswd", "apt-get install apache2-utils") {
        return None;
    }
    let path = dir.join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbc", path.to_str().expect("UTF-8 path"), user, password])
        .stdin(Stdio::null())
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    Some(path.to_str().expect("UTF-8 path").to_string())
}

/// Pushes an OCI layout to `repo:tag` exactly, with `extra` skopeo options.
fn push(image: &OciImage, host: &str, repo: &str, tag: &str, extra: &[&str]) {
    skopeo::copy_exact(&image.oci_ref(), &skopeo::docker_ref(host, repo, tag), extra);
}

/// Pulls `repo:tag` into a fresh OCI layout in `dir` and checks it holds exactly `image`'s blobs.
fn pull_and_compare(image: &OciImage, host: &str, repo: &str, tag: &str, dir: &Path, extra: &[&str]) {
    let dest = format!("oci:{}:{tag}", dir.display());
    skopeo::copy_exact(&skopeo::docker_ref(host, repo, tag), &dest, extra);
    assert_same_blobs(&image.dir.join("blobs/sha256"), &dir.join("blobs/sha256"));
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver: a tiny HTTP/1.1 server on a std TcpListener.

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: HashMap<String, String>,
    body: Value,
}

/// Accepts POSTs on a fixed address and records them; answers 200.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `addr` (retrying while the port is still held by a previous receiver).
    fn start(addr: SocketAddr, got: Arc<Mutex<Vec<Delivery>>>) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot listen on {addr} again: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, got2) = (stop.clone(), got.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream
                    && let Some(delivery) = read_post(stream)
                {
                    got2.lock().expect("lock").push(delivery);
                }
            }
        });
        Receiver { addr, got, stop, thread: Some(thread) }
    }

    /// Every event received so far, in order.
    fn events(&self) -> Vec<Value> {
        let got = self.got.lock().expect("lock");
        got.iter().flat_map(|d| d.body["events"].as_array().cloned().unwrap_or_default()).collect()
    }

    /// Stops listening (the port is closed when this returns).
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("receiver thread");
        }
    }
}

/// Reads one request and answers 200; `None` for anything but a POST with a JSON body.
fn read_post(stream: TcpStream) -> Option<Delivery> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    if !request_line.starts_with("POST ") {
        return None;
    }
    Some(Delivery { headers, body: serde_json::from_slice(&body).ok()? })
}

fn events_where<'a>(events: &'a [Value], action: &str, media_type: Option<&str>) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["action"] == action && media_type.is_none_or(|m| e["target"]["mediaType"] == m))
        .collect()
}

fn digests_of(events: &[&Value]) -> BTreeSet<String> {
    events.iter().map(|e| e["target"]["digest"].as_str().unwrap_or_default().to_string()).collect()
}

fn queued_batches(root: &Path, endpoint: &str) -> usize {
    let dir = root.join("docker/registry/v2/_regctl/notifications").join(endpoint);
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

#[test]
fn webhooks_get_push_and_pull_events_across_receiver_and_registry_restarts() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("data");
    let (all_addr, filtered_addr) = (free_addr(), free_addr());
    let config = write_file(
        tmp.path(),
        "config.toml",
        &format!(
            r#"
[[notifications.endpoints]]
name = "all"
url = "http://{all_addr}/events"
headers = {{ Authorization = "Bearer test-token" }}
timeout = "2s"
threshold = 2
backoff = "100ms"

[[notifications.endpoints]]
name = "manifest-pushes"
url = "http://{filtered_addr}/events"
ignoredmediatypes = ["application/octet-stream"]
ignore = {{ actions = ["pull", "delete"] }}
"#
        ),
    );
    let all_got = Arc::new(Mutex::new(Vec::new()));
    let filtered_got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(all_addr, all_got.clone());
    let filtered = Receiver::start(filtered_addr, filtered_got.clone());
    let server = Server::start_on(&root, &["--config", &config]);
    let host = server.host();

    // Push: one event per blob and one for the manifest, with distribution's fields.
    let image = ImageBuilder::new(31, &[256 * KIB, 512 * KIB]).write(&tmp.path().join("image"), "v1");
    push(&image, &host, "hooks/app", "v1", &[]);
    wait_until(Duration::from_secs(30), "push events", || {
        events_where(&receiver.events(), "push", None).len() >= 4
    });
    let events = receiver.events();
    let manifests = events_where(&events, "push", Some(OCI_MANIFEST));
    assert_eq!(manifests.len(), 1, "one manifest push: {events:#?}");
    let m = manifests[0];
    let digest = &image.manifest.digest;
    assert_eq!(m["target"]["digest"], digest.as_str());
    assert_eq!(m["target"]["size"], image.manifest.size);
    assert_eq!(m["target"]["length"], image.manifest.size);
    assert_eq!(m["target"]["repository"], "hooks/app");
    assert_eq!(m["target"]["tag"], "v1");
    assert_eq!(m["target"]["url"], format!("http://{host}/v2/hooks/app/manifests/{digest}"));
    assert_eq!(m["request"]["method"], "PUT");
    assert_eq!(m["request"]["host"], host.as_str());
    assert!(m["request"]["useragent"].as_str().is_some_and(|ua| !ua.is_empty()), "{m}");
    assert!(m["request"]["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{m}");
    assert!(m["source"]["instanceID"].as_str().is_some_and(|id| id.len() == 36), "{m}");
    assert!(m["id"].as_str().is_some_and(|id| id.len() == 36) && m["timestamp"].as_str().is_some());
    let blobs = events_where(&events, "push", Some("application/octet-stream"));
    let expected: BTreeSet<String> =
        image.layers.iter().chain([&image.config]).map(|d| d.digest.clone()).collect();
    assert_eq!(digests_of(&blobs), expected, "a push event per blob");
    for b in &blobs {
        let size = image.blobs().iter().find(|d| b["target"]["digest"] == d.digest.as_str()).map(|d| d.size);
        assert_eq!(b["target"]["size"].as_u64(), size, "{b}");
    }
    {
        let got = all_got.lock().expect("lock");
        let first = &got[0].headers;
        assert_eq!(
            first.get("content-type").map(String::as_str),
            Some("application/vnd.docker.distribution.events.v1+json")
        );
        assert_eq!(first.get("authorization").map(String::as_str), Some("Bearer test-token"));
    }
    // The filtered endpoint gets the manifest push only.
    wait_until(Duration::from_secs(30), "the filtered endpoint's event", || !filtered.events().is_empty());

    // The receiver goes away; a pull's events wait in the queue, retried.
    receiver.stop();
    let pulled = tmp.path().join("pulled");
    pull_and_compare(&image, &host, "hooks/app", "v1", &pulled, &[]);
    wait_until(Duration::from_secs(30), "retries against the stopped receiver", || {
        let (_, text) = scrape(&server.url("/metrics"), None);
        text.get("regctl_notification_failures_total{endpoint=\"all\"}").is_some_and(|n| *n >= 2.0)
    });
    assert!(queued_batches(&root, "all") > 0, "undelivered events are kept in storage");

    // The registry restarts: the queue is read back from storage and delivered.
    assert!(server.stop(), "the registry stops cleanly");
    let kept = queued_batches(&root, "all");
    assert!(kept > 0, "the queue survives the registry's shutdown");
    let receiver = Receiver::start(all_addr, all_got.clone());
    let server = Server::start_on(&root, &["--config", &config]);
    wait_until(Duration::from_secs(30), "pull events after both restarts", || {
        let events = receiver.events();
        let pulls = events_where(&events, "pull", None);
        digests_of(&pulls).is_superset(&expected)
            && !events_where(&events, "pull", Some(OCI_MANIFEST)).is_empty()
    });
    let events = receiver.events();
    let pull = events_where(&events, "pull", Some(OCI_MANIFEST))[0];
    assert_eq!(
        (pull["target"]["digest"].as_str(), pull["target"]["tag"].as_str()),
        (Some(digest.as_str()), Some("v1"))
    );
    assert_eq!(pull["request"]["method"], "GET");
    wait_until(Duration::from_secs(30), "the stored queue to empty", || queued_batches(&root, "all") == 0);
    let ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no event delivered twice");
    let filtered_events = filtered.events();
    assert_eq!(filtered_events.len(), 1, "only the manifest push passes the filters: {filtered_events:#?}");
    assert_eq!(filtered_events[0]["target"]["digest"], digest.as_str());
    drop(server);
    receiver.stop();
    filtered.stop();
}

// ---------------------------------------------------------------------------------------------
// The web UI in headless Chromium.

/// Runs headless Chromium with a fresh profile and `args`, killed after 60 s.
fn chromium(profile: &Path, args: &[&str]) -> Output {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("chromium output")
}

/// The DOM of `url` after scripts ran.
fn dump_dom(profile: &Path, url: &str) -> String {
    let out = chromium(profile, &["--dump-dom", url]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(dom.contains("<html"), "no page from {url}: {}", String::from_utf8_lossy(&out.stderr));
    dom
}

/// A screenshot of `url` saved as `target/test-artifacts/<name>`; checks it is a PNG.
fn screenshot(profile: &Path, url: &str, name: &str, height: u32) -> PathBuf {
    let path = artifacts().join(name);
    let _ = std::fs::remove_file(&path);
    let out = chromium(
        profile,
        &[&format!("--screenshot={}", path.display()), &format!("--window-size=1280,{height}"), url],
    );
    let png = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("no screenshot of {url} ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000, "{name} is not a real PNG");
    path
}

#[test]
fn web_ui_in_headless_chromium_lists_repositories_shows_tags_and_asks_for_a_password() {
    if !skopeo::available() || !require_tool("chromium", "apt-get install chromium") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(htpasswd) = htpasswd(tmp.path(), "alice", "ui-secret") else { return };
    let server = Server::start_with(&["--htpasswd", &htpasswd, "--realm", "UI test"]);
    let host = server.host();
    let creds = ["--dest-creds", "alice:ui-secret"];
    let app = ImageBuilder::new(41, &[300 * KIB, 700 * KIB]).write(&tmp.path().join("app"), "v1");
    push(&app, &host, "web/app", "v1", &creds);
    push(&app, &host, "web/app", "stable", &creds);
    let tools = ImageBuilder::new(42, &[100 * KIB]).write(&tmp.path().join("tools"), "latest");
    push(&tools, &host, "web/tools", "latest", &creds);
    push(&tools, &host, "other/thing", "1.0", &creds);
    let profile = tmp.path().join("chromium-profile");
    let base = format!("http://alice:ui-secret@{host}");

    // Without credentials: a Basic challenge (the browser's password prompt), and a page for
    // people who cancel it.
    let resp = http().get(server.url("/ui/")).send().expect("GET /ui/");
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(challenge, "Basic realm=\"UI test\"");
    assert!(resp.headers()["content-type"].to_str().is_ok_and(|ct| ct.starts_with("text/html")));
    let page = resp.text().expect("401 page");
    assert!(page.contains("Sign in required"), "{page}");
    let out = chromium(&tmp.path().join("anonymous"), &["--dump-dom", &server.url("/ui/")]);
    let stderr = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERR_INVALID_AUTH_CREDENTIALS") && !stderr.contains("web/app"),
        "Chromium without credentials must be challenged and see no repository: {stderr}"
    );
    // What a person sees after cancelling the prompt, with the stylesheet saved beside it.
    let css = http()
        .get(server.url("/ui/assets/style.css"))
        .basic_auth("alice", Some("ui-secret"))
        .send()
        .and_then(|r| r.text())
        .expect("style.css");
    std::fs::write(artifacts().join("ui-style.css"), css).expect("save the stylesheet");
    let cancelled = artifacts().join("ui-auth-required.html");
    std::fs::write(&cancelled, page.replace("/ui/assets/style.css", "ui-style.css")).expect("save the page");
    screenshot(&profile, &format!("file://{}", cancelled.display()), "ui-auth-required.png", 420);
    assert_eq!(
        http().get(server.url("/ui/")).basic_auth("alice", Some("wrong")).send().expect("GET").status(),
        401,
        "a wrong password is refused"
    );

    // The repository list, and its search.
    let dom = dump_dom(&profile, &format!("{base}/ui/"));
    for name in ["web/app", "web/tools", "other/thing"] {
        assert!(dom.contains(&format!("data-name=\"{name}\"")), "{name} listed: {dom}");
    }
    assert!(dom.contains("<html lang=\"en\" class=\"js\">"), "the embedded script ran");
    screenshot(&profile, &format!("{base}/ui/"), "ui-repositories.png", 520);
    let dom = dump_dom(&profile, &format!("{base}/ui/?q=web"));
    assert!(
        dom.contains("data-name=\"web/app\"") && !dom.contains("data-name=\"other/thing\""),
        "search: {dom}"
    );

    // A repository's tags: size, digest, created time, platform, pull command.
    let dom = dump_dom(&profile, &format!("{base}/ui/repositories/web/app"));
    let size: u64 = app.layers.iter().chain([&app.config]).map(|d| d.size).sum();
    let hex = app.manifest.hex();
    for expected in [
        "data-tag=\"v1\"".to_string(),
        "data-tag=\"stable\"".to_string(),
        format!("sha256:{}", &hex[..12]),
        regctl_registry::units::human_bytes(size),
        "2026-01-01 00:00:00 UTC".to_string(),
        "linux/amd64".to_string(),
        format!("docker pull {host}/web/app:v1"),
    ] {
        assert!(dom.contains(&expected), "the tag page shows {expected}: {dom}");
    }
    screenshot(&profile, &format!("{base}/ui/repositories/web/app"), "ui-tags.png", 420);

    // A tag's manifest and config.
    let url = format!("{base}/ui/repositories/web/app/-/manifests/v1");
    let dom = dump_dom(&profile, &url);
    for d in app.blobs() {
        assert!(dom.contains(&d.digest), "the manifest page names {}", d.digest);
    }
    for expected in ["application/vnd.oci.image.layer.v1.tar", "org.example.seed=41", "/bin/sh"] {
        assert!(dom.contains(expected), "the manifest page shows {expected}");
    }
    screenshot(&profile, &url, "ui-manifest.png", 1400);
    let missing = http()
        .get(server.url("/ui/repositories/web/nothing"))
        .basic_auth("alice", Some("ui-secret"))
        .send()
        .expect("GET");
    assert_eq!(missing.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Garbage collection.

/// Runs `regctl gc --output json` with `args`.
pub(crate) fn run_gc(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regctl"))
        .args(["gc", "--root", root.to_str().expect("UTF-8 path"), "--output", "json"])
        .args(args)
        .env_remove("REGISTRY_STORAGE")
        .env_remove("REGISTRY_STORAGE_S3_BUCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run regctl gc")
}

/// Runs `regctl gc --output json` with `args` and returns its report.
pub(crate) fn gc(root: &Path, args: &[&str]) -> Value {
    let out = run_gc(root, args);
    assert!(out.status.success(), "regctl gc {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("regctl gc printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

fn swept(report: &Value) -> BTreeSet<String> {
    report["blobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["digest"].as_str().map(str::to_string))
        .collect()
}

fn blob_file(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    root.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
}

#[test]
fn gc_racing_a_push_keeps_what_is_used_and_matches_its_dry_run() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start();
    let (host, root) = (server.host(), server.root.clone());
    // Same seed: layer i is the same blob in every image whose layer i has the same size.
    let a = ImageBuilder::new(77, &[256 * KIB, 384 * KIB]).write(&tmp.path().join("a"), "a");
    let b = ImageBuilder::new(77, &[256 * KIB, 384 * KIB, 512 * KIB, 640 * KIB])
        .write(&tmp.path().join("b"), "b");
    let c =
        ImageBuilder::new(77, &[256 * KIB, 384 * KIB, 512 * KIB, 24 * MIB]).write(&tmp.path().join("c"), "c");
    assert_eq!(a.layers[..2], b.layers[..2], "A and B share two layers");
    assert_eq!(c.layers[..3], b.layers[..3], "C reuses three of B's layers");
    assert_ne!(c.layers[3], b.layers[3], "B's last layer is its own");
    push(&a, &host, "gc/app", "a", &[]);
    push(&b, &host, "gc/app", "b", &[]);
    let deleted = http()
        .delete(server.url(&format!("/v2/gc/app/manifests/{}", b.manifest.digest)))
        .send()
        .expect("DELETE B");
    assert_eq!(deleted.status(), 202);
    // Let A's and B's content age past the grace period.
    let grace = ["--grace-period", "2s"];
    std::thread::sleep(Duration::from_secs(3));

    // Dry run: B's manifest, config and the layers only B used are garbage.
    let dry = gc(&root, &[&["--dry-run"][..], &grace].concat());
    let garbage: BTreeSet<String> =
        [&b.manifest, &b.config, &b.layers[2], &b.layers[3]].iter().map(|d| d.digest.clone()).collect();
    assert_eq!(swept(&dry), garbage, "dry run: {dry:#}");
    let bytes: u64 = [&b.manifest, &b.config, &b.layers[2], &b.layers[3]].iter().map(|d| d.size).sum();
    assert_eq!(dry["bytes_freed"], bytes);
    assert!(garbage.iter().all(|d| blob_file(&root, d).exists()), "a dry run deletes nothing");

    // The real run, while C (reusing B's third layer) is pushed.
    let push_c = {
        let (src, dest) = (c.oci_ref(), skopeo::docker_ref(&host, "gc/app", "c"));
        std::thread::spawn(move || {
            let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
            args.extend_from_slice(skopeo::EXACT);
            args.extend_from_slice(&[&src, &dest]);
            skopeo::run(&args)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let real = gc(&root, &[&["--settle", "3s"][..], &grace].concat());
    let pushed = push_c.join().expect("push thread");
    eprintln!(
        "collection during the push: {} blobs in use, {} pinned by the push, {} deleted",
        real["blobs_in_use"],
        real["blobs_spared_pinned"],
        real["blobs"].as_array().map_or(0, Vec::len)
    );
    assert!(
        pushed.status.success(),
        "C pushed during the collection: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    // What went is what the dry run listed, less what C now uses.
    let reused = b.layers[2].digest.clone();
    let expected: BTreeSet<String> = garbage.iter().filter(|d| **d != reused).cloned().collect();
    assert_eq!(swept(&real), expected, "real run: {real:#}");
    assert!(swept(&dry).is_superset(&swept(&real)), "the real run deletes nothing the dry run did not list");
    for gone in &expected {
        assert!(!blob_file(&root, gone).exists(), "{gone} deleted from storage");
        let status =
            http().head(server.url(&format!("/v2/gc/app/blobs/{gone}"))).send().expect("HEAD").status();
        assert_eq!(status, 404, "{gone} no longer served");
    }
    assert!(blob_file(&root, &reused).exists(), "the layer C reuses is kept");

    // A and C pull intact.
    pull_and_compare(&a, &host, "gc/app", "a", &tmp.path().join("pulled-a"), &[]);
    pull_and_compare(&c, &host, "gc/app", "c", &tmp.path().join("pulled-c"), &[]);

    // Nothing is left to collect, and a quiet dry run and real run agree.
    let dry = gc(&root, &[&["--dry-run"][..], &grace].concat());
    let real = gc(&root, &[&["--settle", "0s"][..], &grace].concat());
    assert_eq!((swept(&dry), swept(&real)), (BTreeSet::new(), BTreeSet::new()));
    assert_eq!(dry["blobs_in_use"], real["blobs_in_use"]);
}

/// Issue 23: a manifest in storage that garbage collection cannot read (written by an older
/// server or another tool) made it keep only the manifest's own bytes and delete its config and
/// layers. Now a collection (dry run or real, with or without `--delete-untagged`) deletes
/// nothing, names the manifests and fails; once they are deleted, it collects again.
#[test]
fn gc_deletes_nothing_while_a_stored_manifest_cannot_be_read() {
    let server = Server::start();
    let root = server.root.clone();
    let upload = |content: &[u8]| {
        let digest = crate::util::sha256(content);
        let url = server.url(&format!("/v2/gc/odd/blobs/uploads/?digest={digest}"));
        let resp = http().post(url).body(content.to_vec()).send().expect("POST a blob");
        assert_eq!(resp.status(), 201, "upload {digest}");
        (digest, content.len())
    };
    let storage = root.join("docker/registry/v2");
    let link = |path: PathBuf, digest: &str| {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the link's directory");
        std::fs::write(path, digest).expect("write a link");
    };
    let (orphan, _) = upload(b"a blob nothing names");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let hostile: [&[u8]; 4] = [br#""\ud800""#, b"\"\xff\"", b"1e400", deep.as_bytes()];
    let mut manifests = Vec::new();
    let mut blobs = vec![orphan.clone()];
    for (i, value) in hostile.iter().enumerate() {
        let config = upload(format!("{{\"config\":{i}}}").as_bytes());
        let layer = upload(format!("layer {i}").as_bytes());
        let descriptor = |(digest, size): &(String, usize), mt: &str| serde_json::json!({"mediaType": mt, "digest": digest, "size": size});
        let mut body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor(&config, "application/vnd.oci.image.config.v1+json"),
            "layers": [descriptor(&layer, "application/vnd.oci.image.layer.v1.tar")],
        }))
        .expect("JSON");
        body.pop();
        body.extend_from_slice(b",\"x\":");
        body.extend_from_slice(value);
        body.push(b'}');
        let digest = crate::util::sha256(&body);
        let hex = digest.strip_prefix("sha256:").expect("sha256").to_string();
        let data = blob_file(&root, &digest);
        std::fs::create_dir_all(data.parent().expect("a parent")).expect("create the blob's directory");
        std::fs::write(&data, &body).expect("write the manifest's bytes");
        let repo = storage.join("repositories/gc/odd/_manifests");
        link(repo.join(format!("revisions/sha256/{hex}/link")), &digest);
        // The last one is untagged: it is read too, as what it names is unknown.
        if i + 1 < hostile.len() {
            link(repo.join(format!("tags/t{i}/current/link")), &digest);
            link(repo.join(format!("tags/t{i}/index/sha256/{hex}/link")), &digest);
        }
        blobs.extend([config.0, layer.0, digest.clone()]);
        manifests.push(digest);
    }
    std::thread::sleep(Duration::from_secs(2)); // everything is past the grace period

    let grace = ["--grace-period", "1s", "--settle", "0s"];
    for extra in [&["--dry-run"][..], &[], &["--delete-untagged"]] {
        let out = run_gc(&root, &[&grace[..], extra].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "regctl gc {extra:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for digest in &manifests {
            assert!(stderr.contains(digest.as_str()), "regctl gc {extra:?} does not name {digest}: {stderr}");
        }
        assert!(stderr.contains("nothing"), "regctl gc {extra:?} does not say nothing was deleted: {stderr}");
        for blob in &blobs {
            assert!(blob_file(&root, blob).exists(), "regctl gc {extra:?} deleted {blob}");
        }
    }
    for i in 0..hostile.len() - 1 {
        let resp = http().get(server.url(&format!("/v2/gc/odd/manifests/t{i}"))).send().expect("GET");
        assert_eq!(resp.status(), 200, "tag t{i} resolves");
    }
    for blob in &blobs {
        let status =
            http().head(server.url(&format!("/v2/gc/odd/blobs/{blob}"))).send().expect("HEAD").status();
        assert_eq!(status, 200, "{blob} is served");
    }

    // Once the operator deletes them, the collection runs again.
    for digest in &manifests {
        let resp =
            http().delete(server.url(&format!("/v2/gc/odd/manifests/{digest}"))).send().expect("DELETE");
        assert_eq!(resp.status(), 202, "DELETE {digest}");
    }
    // The server pins what it confirmed to clients within the grace period (the HEADs above).
    std::thread::sleep(Duration::from_secs(2));
    let report = gc(&root, &grace);
    assert_eq!(swept(&report), blobs.iter().cloned().collect::<BTreeSet<_>>(), "{report:#}");
}

#[test]
fn gc_deletes_untagged_manifests_and_abandoned_uploads_on_schedule() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        tmp.path(),
        "config.toml",
        "[gc]\ninterval = \"4s\"\ngraceperiod = \"1s\"\ndeleteuntagged = true\nuploadmaxage = \"1s\"\nsettle = \"0s\"\n",
    );
    let server = Server::start_with(&["--config", &config]);
    let (host, root) = (server.host(), server.root.clone());
    let old = ImageBuilder::new(91, &[128 * KIB]).write(&tmp.path().join("old"), "t");
    let new = ImageBuilder::new(92, &[128 * KIB]).write(&tmp.path().join("new"), "t");
    push(&old, &host, "sched/app", "t", &[]);
    push(&new, &host, "sched/app", "t", &[]); // the tag moves: `old` is untagged now
    let started = http().post(server.url("/v2/sched/app/blobs/uploads/")).send().expect("POST upload");
    assert_eq!(started.status(), 202, "an upload that is never finished");
    let revision = |d: &str| {
        root.join("docker/registry/v2/repositories/sched/app/_manifests/revisions/sha256")
            .join(d.strip_prefix("sha256:").expect("sha256"))
    };
    wait_until(Duration::from_secs(60), "a scheduled collection", || {
        !revision(&old.manifest.digest).exists() && !blob_file(&root, &old.layers[0].digest).exists()
    });
    wait_until(Duration::from_secs(30), "the abandoned upload to be purged", || {
        std::fs::read_dir(root.join("docker/registry/v2/repositories/sched/app/_uploads"))
            .map_or(true, |mut entries| entries.next().is_none())
    });
    pull_and_compare(&new, &host, "sched/app", "t", &tmp.path().join("pulled"), &[]);
    let (_, metrics) = scrape(&server.url("/metrics"), None);
    assert!(metrics.get("regctl_gc_runs_total{outcome=\"ok\"}").is_some_and(|n| *n >= 1.0));
    assert!(metrics.get("regctl_gc_manifests_deleted_total").is_some_and(|n| *n >= 1.0));
    assert!(metrics.get("regctl_gc_uploads_purged_total").is_some_and(|n| *n >= 1.0));
}

// ---------------------------------------------------------------------------------------------
// Metrics and health.

#[test]
fn metrics_are_scraped_and_parsed_after_a_push_and_health_checks_storage() {
    if !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(htpasswd) = htpasswd(tmp.path(), "bob", "metrics-secret") else { return };
    let server = Server::start_with(&["--htpasswd", &htpasswd]);
    let host = server.host();
    let creds = Some(("bob", "metrics-secret"));
    let image = ImageBuilder::new(51, &[MIB, 2 * MIB]).write(&tmp.path().join("image"), "v1");
    push(&image, &host, "metrics/app", "v1", &["--dest-creds", "bob:metrics-secret"]);
    assert_eq!(
        http().get(server.url("/v2/")).basic_auth("bob", Some("wrong")).send().expect("GET").status(),
        401
    );

    // Behind authentication by default; open health.
    assert_eq!(scrape(&server.url("/metrics"), None).0, 401, "metrics need credentials by default");
    let (status, m) = scrape(&server.url("/metrics"), creds);
    assert_eq!(status, 200);
    assert_eq!(
        sum(&m, "regctl_http_requests_total", &["route=\"manifest\"", "method=\"PUT\"", "status=\"201\""]),
        1.0
    );
    let blobs = image.layers.len() as f64 + 1.0;
    assert!(
        sum(&m, "regctl_http_requests_total", &["route=\"blob_upload\"", "method=\"PUT\"", "status=\"201\""])
            >= blobs
    );
    assert!(sum(&m, "regctl_upload_sessions_completed_total", &[]) >= blobs);
    let pushed: u64 = image.blobs().iter().map(|d| d.size).sum();
    let bytes_in = sum(&m, "regctl_http_request_bytes_total", &[]);
    assert!(bytes_in >= pushed as f64, "bytes in {bytes_in} < {pushed}");
    // Histograms: the +Inf bucket and the count equal the requests of that route and method.
    let requests = sum(&m, "regctl_http_requests_total", &["route=\"manifest\"", "method=\"PUT\""]);
    assert_eq!(
        sum(
            &m,
            "regctl_http_request_duration_seconds_bucket",
            &["route=\"manifest\"", "method=\"PUT\"", "le=\"+Inf\""]
        ),
        requests
    );
    assert_eq!(
        sum(&m, "regctl_http_request_duration_seconds_count", &["route=\"manifest\"", "method=\"PUT\""]),
        requests
    );
    assert!(sum(&m, "regctl_storage_operations_total", &["outcome=\"ok\""]) > 0.0);
    assert_eq!(sum(&m, "regctl_storage_errors_total", &[]), 0.0);
    assert!(sum(&m, "regctl_auth_failures_total", &["reason=\"invalid\""]) >= 1.0);
    assert!(sum(&m, "regctl_auth_challenges_total", &[]) >= 1.0);
    assert!(sum(&m, "regctl_auth_cache_hits_total", &[]) >= 1.0, "verifications are cached");

    // A pull counts bytes out.
    pull_and_compare(
        &image,
        &host,
        "metrics/app",
        "v1",
        &tmp.path().join("pulled"),
        &["--src-creds", "bob:metrics-secret"],
    );
    let (_, m) = scrape(&server.url("/metrics"), creds);
    assert!(
        sum(&m, "regctl_http_response_bytes_total", &["route=\"blob\""])
            >= pushed as f64 - image.manifest.size as f64
    );

    let health = http().get(server.url("/health")).send().expect("GET /health");
    assert_eq!(health.status(), 200, "health needs no credentials by default");
    let body: Value = health.json().expect("health JSON");
    assert_eq!((body["status"].as_str(), body["storage"]["status"].as_str()), (Some("ok"), Some("ok")));
}

#[test]
fn health_reports_unreachable_storage_and_paths_are_configurable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        tmp.path(),
        "config.toml",
        "[metrics]\npath = \"/internal/metrics\"\nauth = false\n[health]\npath = \"/healthz\"\n[ui]\nenabled = false\n",
    );
    // S3 storage at an endpoint where nothing listens: every storage call fails.
    let endpoint = format!("http://{}", free_addr());
    let env = [
        ("REGISTRY_STORAGE", "s3"),
        ("REGISTRY_STORAGE_S3_BUCKET", "unreachable"),
        ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
        ("REGISTRY_STORAGE_S3_REGIONENDPOINT", endpoint.as_str()),
        ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
        ("REGISTRY_STORAGE_S3_ACCESSKEY", "test"),
        ("REGISTRY_STORAGE_S3_SECRETKEY", "test"),
    ];
    let server = Server::start_on_env(&tmp.path().join("unused"), &["--config", &config], &env);
    let health = http().get(server.url("/healthz")).send().expect("GET /healthz");
    assert_eq!(health.status(), 503);
    let body: Value = health.json().expect("health JSON");
    assert_eq!(body["storage"]["status"], "error", "{body}");
    // Open to anyone: no storage detail (bucket, endpoint, key, the backend's message).
    for detail in ["unreachable", endpoint.as_str(), "docker/registry", "dispatch"] {
        assert!(!body.to_string().contains(detail), "/healthz tells strangers {detail:?}: {body}");
    }
    assert_eq!(http().get(server.url("/health")).send().expect("GET").status(), 404, "moved");
    assert_eq!(http().get(server.url("/ui/")).send().expect("GET").status(), 404, "UI off");
    let (status, m) = scrape(&server.url("/internal/metrics"), None);
    assert_eq!(status, 200);
    assert!(sum(&m, "regctl_http_requests_total", &["route=\"health\"", "status=\"503\""]) >= 1.0);
}
