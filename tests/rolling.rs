//! Issue 20, replacing every server of a balanced deployment under load: three `regctl serve`
//! on one moto bucket behind HAProxy configured as an operator would (health checks on
//! `/health`, retries on connection failures, redispatch), skopeo pulling through it without a
//! pause, each server replaced in turn the way an Auto Scaling instance refresh does it: launch
//! the new one, wait until the balancer sends it requests, then SIGTERM the old one. The drain
//! (crates/registry/src/shutdown.rs: `/health` 503 first, then no new connections, then in-flight
//! requests finished) must make that cost no pull at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::haproxy::Balancer;
use crate::util::layout::{ImageBuilder, MIB};
use crate::util::moto::{self, Moto};
use crate::util::{self, Server, skopeo};

/// How the old server of each replacement is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM with `[http] draintime` set: the drain.
    Drain,
    /// SIGTERM with `draintime = 0`: no 503 phase, the listener closes at once (in-flight
    /// requests still finish).
    NoDrain,
    /// SIGKILL: in-flight requests are cut.
    Kill,
}

/// What the balancer does with a request whose server failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retries {
    /// Tries it again on another server when the connection failed or no answer came, as an
    /// operator configures HAProxy (`retry-on`, `option redispatch`).
    Operator,
    /// Passes the failure on (a 503 when the connection is refused), as an AWS load balancer
    /// does: it does not retry a request on another target.
    None,
}

/// How long a stopped server drains: several health-check intervals of the balancer below.
const DRAINTIME: &str = "2s";

/// HAProxy over `slots` (servers or empty spare slots a new server takes): keep-alive to the
/// servers, checks of `/health` every `interval` (out after one failure, in after two
/// successes), and `retries`.
fn balancer(slots: &[SocketAddr], retries: Retries, interval: &str) -> Option<Balancer> {
    let (addr, stats) = (util::free_addr(), util::free_addr());
    let retries = match retries {
        Retries::Operator => {
            "retries 3\n  retry-on conn-failure empty-response response-timeout\n  option redispatch 1"
        }
        Retries::None => "retries 0",
    };
    let mut config = format!(
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
         timeout check 1s\n  {retries}\n\
         frontend registry\n  bind {addr}\n  default_backend servers\n\
         backend servers\n  balance roundrobin\n  option httpchk GET /health\n  \
         http-check expect status 200\n  default-server check inter {interval} fall 1 rise 2\n"
    );
    for (i, slot) in slots.iter().enumerate() {
        config.push_str(&format!("  server s{i} {slot}\n"));
    }
    config.push_str(&format!("listen stats\n  bind {stats}\n  stats enable\n  stats uri /stats\n"));
    Balancer::start(addr, Some(stats), &config)
}

/// Waits until HAProxy reports server `slot` as `status` (`UP` or `DOWN`).
fn wait_for_status(balancer: &Balancer, slot: usize, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = balancer.server_status("servers", &format!("s{slot}"));
        if now == status {
            return;
        }
        assert!(Instant::now() < deadline, "server s{slot} is {now:?}, not {status}, after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One pull of the image through the balancer.
#[derive(Debug)]
struct Pull {
    ended: Instant,
    error: Option<String>,
}

/// A client that pulls.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// `skopeo copy` into a fresh directory, without skopeo's own retries (containers/image
    /// still resumes an interrupted blob download, as docker and podman do).
    Skopeo,
    /// The manifest and every blob over one kept-alive HTTP/1.1 client, digests checked,
    /// nothing retried: any failure the balancer lets through counts.
    Http,
}

impl Client {
    /// Pulls `repository:tag` from `host`; `scratch` is this client's own directory.
    fn pull(
        self,
        http: &reqwest::blocking::Client,
        host: &str,
        (repository, tag): (&str, &str),
        scratch: &Path,
    ) -> Result<(), String> {
        match self {
            Client::Skopeo => {
                let dest = scratch.join("pull");
                let _ = std::fs::remove_dir_all(&dest);
                std::fs::create_dir_all(&dest).expect("a pull's directory");
                let image = skopeo::docker_ref(host, repository, tag);
                let out = skopeo::run(&["copy", "--src-tls-verify=false", &image, &skopeo::dir_ref(&dest)]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            }
            Client::Http => {
                let get = |path: &str| -> Result<Vec<u8>, String> {
                    let resp = http
                        .get(format!("http://{host}/v2/{repository}/{path}"))
                        .header("Accept", util::MANIFEST_ACCEPT)
                        .send()
                        .map_err(|e| format!("GET {path}: {e:?}"))?;
                    let status = resp.status();
                    let body = resp.bytes().map_err(|e| format!("GET {path}: body: {e:?}"))?;
                    if status != 200 {
                        return Err(format!("GET {path}: {status}: {}", String::from_utf8_lossy(&body)));
                    }
                    Ok(body.to_vec())
                };
                let manifest: serde_json::Value = serde_json::from_slice(&get(&format!("manifests/{tag}"))?)
                    .map_err(|e| format!("manifest: {e}"))?;
                let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
                for descriptor in std::iter::once(&manifest["config"]).chain(&layers) {
                    let digest = descriptor["digest"].as_str().unwrap_or_default();
                    let blob = get(&format!("blobs/{digest}"))?;
                    if util::sha256(&blob) != digest {
                        return Err(format!("blob {digest}: {} bytes that do not match", blob.len()));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Clients pulling an image through the balancer in a loop until stopped.
struct PullLoop {
    stop: Arc<AtomicBool>,
    pulls: Arc<Mutex<Vec<Pull>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl PullLoop {
    fn start(host: &str, image: (&str, &str), clients: &[Client], scratch: &Path) -> PullLoop {
        let (stop, pulls) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let threads = clients
            .iter()
            .enumerate()
            .map(|(i, &client)| {
                let (stop, pulls, host) = (stop.clone(), pulls.clone(), host.to_string());
                let (repository, tag) = (image.0.to_string(), image.1.to_string());
                let scratch: PathBuf = scratch.join(format!("client-{i}"));
                std::thread::spawn(move || {
                    let http = util::http();
                    while !stop.load(Ordering::SeqCst) {
                        let error = client.pull(&http, &host, (&repository, &tag), &scratch).err();
                        if let Some(error) = &error {
                            eprintln!("a pull failed ({client:?}): {error}");
                        }
                        pulls.lock().expect("pulls").push(Pull { ended: Instant::now(), error });
                    }
                })
            })
            .collect();
        PullLoop { stop, pulls, threads }
    }

    /// Pulls that ended within `from..to` so far.
    fn ended_between(&self, from: Instant, to: Instant) -> usize {
        self.pulls.lock().expect("pulls").iter().filter(|p| p.ended >= from && p.ended <= to).count()
    }

    /// Stops the clients; every pull made, in order of ending.
    fn finish(self) -> Vec<Pull> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a pulling client");
        }
        Arc::try_unwrap(self.pulls).expect("the clients are done").into_inner().expect("pulls")
    }
}

/// A download of `digest` from `server` directly, read slowly (about 10 MB/s), that has begun
/// when this returns: a request in flight when the server is told to stop. The thread's
/// result says whether every byte arrived.
fn slow_download(
    server: SocketAddr,
    repository: &str,
    digest: &str,
) -> std::thread::JoinHandle<Result<(), String>> {
    use std::io::Read;
    let url = format!("http://{server}/v2/{repository}/blobs/{digest}");
    let digest = digest.to_string();
    let (started, begun) = std::sync::mpsc::channel();
    let download = std::thread::spawn(move || {
        let mut resp = util::http().get(&url).send().map_err(|e| format!("GET: {e:?}"))?;
        let _ = started.send(());
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            let n = resp.read(&mut chunk).map_err(|e| format!("after {} bytes: {e:?}", body.len()))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
            std::thread::sleep(Duration::from_millis(25));
        }
        if util::sha256(&body) == digest {
            Ok(())
        } else {
            Err(format!("{} bytes that do not match", body.len()))
        }
    });
    begun.recv_timeout(Duration::from_secs(30)).expect("the slow download started");
    download
}

/// What replacing every server did to the clients.
struct Rolled {
    /// Every pull through the balancer.
    pulls: Vec<Pull>,
    /// For each replacement, the pulls that ended while the old server was stopping.
    during: Vec<usize>,
    /// For each replacement, the slow download from the old server begun before its stop.
    slow: Vec<Result<(), String>>,
}

/// Replaces each of three servers in turn under a continuous pull loop, each stopped while a
/// slow download from it is under way.
fn replace_every_server_under_pulls(retries: Retries, stop: Stop) -> Option<Rolled> {
    if !skopeo::available() {
        return None;
    }
    let moto_server = Moto::start()?;
    let bucket = moto_server.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let config = tmp.path().join("config.toml");
    let draintime = if stop == Stop::Drain { DRAINTIME } else { "0" };
    std::fs::write(&config, format!("[http]\ndraintime = \"{draintime}\"\n")).expect("config");
    let config = config.to_str().expect("UTF-8 path").to_string();
    let env = moto_server.registry_env(&bucket);
    let env = moto::borrowed(&env);
    // Slots 0-2 for the servers running at first, 3-5 for their replacements.
    let slots: Vec<SocketAddr> = (0..6).map(|_| util::free_addr()).collect();
    let start = |slot: usize| {
        Server::start_at(slots[slot], &tmp.path().join("unused"), &["--config", config.as_str()], &env)
    };
    let mut old: Vec<Server> = (0..3).map(start).collect();
    // Without the drain, requests fail for as long as the balancer takes to notice a stopped
    // server: up to a check interval. A second (an ALB's is 5 to 300) makes that failure show
    // in every run; 200 ms keeps the other runs short.
    let interval = if stop == Stop::NoDrain { "1s" } else { "200ms" };
    let balancer = balancer(&slots, retries, interval)?;
    for slot in 0..6 {
        wait_for_status(&balancer, slot, if slot < 3 { "UP" } else { "DOWN" });
    }

    let image =
        ImageBuilder::new(61, &[200_000, 2 * MIB, 24 * MIB + 7]).write(&tmp.path().join("image"), "v1");
    let target = skopeo::docker_ref(&balancer.host(), "rolling/app", "v1");
    skopeo::copy_exact(&image.oci_ref(), &target, &[]);
    let clients = [Client::Skopeo, Client::Skopeo, Client::Http, Client::Http];
    let pulls = PullLoop::start(&balancer.host(), ("rolling/app", "v1"), &clients, &tmp.path().join("pulls"));
    std::thread::sleep(Duration::from_secs(2));

    let big = image.blobs().into_iter().max_by_key(|b| b.size).expect("a layer").digest.clone();
    let (mut during, mut slow, mut new) = (Vec::new(), Vec::new(), Vec::new());
    for (i, server) in old.drain(..).enumerate() {
        new.push(start(3 + i));
        wait_for_status(&balancer, 3 + i, "UP");
        let download = slow_download(server.addr, "rolling/app", &big);
        let stopping = Instant::now();
        match stop {
            Stop::Drain | Stop::NoDrain => {
                assert!(server.stop(), "server {i} did not exit cleanly on SIGTERM")
            }
            Stop::Kill => drop(server),
        }
        let stopped = Instant::now();
        eprintln!("server {i} replaced: it took {:?} to stop", stopped - stopping);
        during.push(pulls.ended_between(stopping, stopped));
        slow.push(download.join().expect("the slow download"));
        // The balancer notices the old server is gone before the next one goes.
        wait_for_status(&balancer, i, "DOWN");
    }
    std::thread::sleep(Duration::from_secs(1));
    Some(Rolled { pulls: pulls.finish(), during, slow })
}

/// Asserts that no pull failed, that pulls went on while each server was stopping (so the
/// test is not vacuous), and that each download under way when SIGTERM came was finished.
fn assert_no_client_failed(rolled: &Rolled) {
    let Rolled { pulls, during, slow } = rolled;
    let failed: Vec<&String> = pulls.iter().filter_map(|p| p.error.as_ref()).collect();
    eprintln!(
        "{} pulls, {} failed; pulls ended while each old server stopped: {during:?}",
        pulls.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{} of {} pulls failed, the first: {}", failed.len(), pulls.len(), failed[0]);
    assert!(during.iter().all(|&n| n > 0), "a replacement saw no pull end: {during:?}");
    for (i, download) in slow.iter().enumerate() {
        assert_eq!(download, &Ok(()), "the download from server {i} was cut by its stop");
    }
}

#[test]
fn every_server_replaced_in_turn_behind_haproxy_fails_no_pull() {
    let Some(rolled) = replace_every_server_under_pulls(Retries::Operator, Stop::Drain) else { return };
    assert_no_client_failed(&rolled);
}

/// An AWS load balancer does not retry a request on another target: only the drain's 503
/// phase keeps requests off a server before it stops accepting.
#[test]
fn every_server_replaced_in_turn_behind_a_balancer_that_never_retries_fails_no_pull() {
    let Some(rolled) = replace_every_server_under_pulls(Retries::None, Stop::Drain) else { return };
    assert_no_client_failed(&rolled);
}

/// What the drain's 503 phase is for: without it, the balancer sends requests to a server
/// that no longer accepts until its next health check, and without retries they fail (about
/// six pulls in a hundred here). In-flight requests still finish.
#[test]
fn without_the_503_phase_a_balancer_that_never_retries_fails_pulls() {
    let Some(Rolled { pulls, during, slow }) = replace_every_server_under_pulls(Retries::None, Stop::NoDrain)
    else {
        return;
    };
    let failed = pulls.iter().filter(|p| p.error.is_some()).count();
    eprintln!("without the 503 phase: {} pulls, {failed} failed ({during:?} while stopping)", pulls.len());
    assert!(failed > 0, "no pull failed although servers stopped accepting before the balancer knew");
    assert!(slow.iter().all(Result::is_ok), "SIGTERM cut a download under way: {slow:?}");
}

/// What finishing in-flight requests is for: a server killed cuts the download under way.
/// (Pulls through the balancer may or may not fail: HAProxy retries what it can, and
/// containers/image resumes an interrupted blob download; that is timing, and only printed.)
#[test]
fn a_server_killed_cuts_the_download_under_way() {
    let Some(Rolled { pulls, slow, .. }) = replace_every_server_under_pulls(Retries::Operator, Stop::Kill)
    else {
        return;
    };
    let failed = pulls.iter().filter(|p| p.error.is_some()).count();
    eprintln!("servers killed: {} pulls, {failed} failed", pulls.len());
    assert!(slow.iter().all(Result::is_err), "a download survived its server's SIGKILL: {slow:?}");
}

/// The drain seen from a client: after SIGTERM, `/health` says 503 `draining` while other
/// requests are served as before (over HTTP/1.1 with `Connection: close`), until the drain
/// time ends, or, as here, a second signal ends it at once; the server then exits 0.
#[test]
fn a_stopping_server_drains_until_a_second_signal() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[http]\ndraintime = \"60s\"\n").expect("config");
    let server = Server::start_with(&["--config", config.to_str().expect("UTF-8 path")]);
    assert_eq!(util::http().get(server.url("/health")).send().expect("GET /health").status(), 200);
    let term = || {
        let status = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status();
        assert!(status.expect("kill").success());
    };
    term();
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let resp = util::http().get(server.url("/health")).send().expect("GET /health while draining");
        if resp.status() == 503 {
            break resp.json::<serde_json::Value>().expect("JSON");
        }
        assert!(Instant::now() < deadline, "/health still {} 10 s after SIGTERM", resp.status());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health["status"], "draining", "{health}");
    let v2 = util::http().get(server.url("/v2/")).send().expect("GET /v2/ while draining");
    assert_eq!(v2.status(), 200, "requests are still served");
    assert_eq!(v2.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let second = Instant::now();
    assert!(server.stop(), "exit status 0"); // the second SIGTERM
    assert!(second.elapsed() < Duration::from_secs(10), "the second signal did not end the drain");
}
