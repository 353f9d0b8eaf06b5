//! Issue 20, several servers on one bucket: three `regctl serve` on one moto bucket behind
//! HAProxy on loopback, every request balanced round-robin to the next server; skopeo pushes
//! and pulls through it, one server is killed mid-push, and a user added once with
//! `regctl add-user --bucket` reaches every server.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::haproxy::Balancer;
use crate::util::layout::{self, ImageBuilder, MIB};
use crate::util::moto::Moto;
use crate::util::{self, Server, skopeo};

/// Three servers on `bucket` of `moto`, with `extra` arguments.
fn three_servers(moto: &Moto, bucket: &str, scratch: &Path, extra: &[&str]) -> Vec<Server> {
    let env = moto.registry_env(bucket);
    let env = crate::util::moto::borrowed(&env);
    (0..3).map(|_| Server::start_on_env(scratch, extra, &env)).collect()
}

/// Requests a server has answered, from its own `/metrics`.
fn requests_served(server: &Server) -> f64 {
    let (status, samples) = util::scrape(&server.url("/metrics"), None);
    assert_eq!(status, 200);
    util::sum(&samples, "regctl_http_requests_total", &[])
}

/// `skopeo copy` with retries of its own; the output, whatever the outcome.
fn copy_with_retries(src: &str, dest: &str) -> Output {
    let mut args = vec!["copy", "--retry-times", "3", "--src-tls-verify=false", "--dest-tls-verify=false"];
    args.extend_from_slice(skopeo::EXACT);
    args.extend_from_slice(&[src, dest]);
    skopeo::run(&args)
}

#[test]
fn three_servers_behind_a_balancer_push_and_pull_and_survive_one_killed_mid_push() {
    if !skopeo::available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut servers = three_servers(&moto, &bucket, &tmp.path().join("unused"), &[]);
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let Some(balancer) = Balancer::per_request(&addrs) else { return };

    // A push and a pull through the balancer, every request to the next server.
    let before: Vec<f64> = servers.iter().map(requests_served).collect();
    let image = ImageBuilder::new(41, &[3000, 2 * MIB, 7 * MIB + 5]).write(&tmp.path().join("small"), "v1");
    skopeo::copy_exact(&image.oci_ref(), &skopeo::docker_ref(&balancer.host(), "scale/app", "v1"), &[]);
    let back = tmp.path().join("back");
    skopeo::copy_exact(
        &skopeo::docker_ref(&balancer.host(), "scale/app", "v1"),
        &format!("oci:{}:v1", back.display()),
        &[],
    );
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    for (i, server) in servers.iter().enumerate() {
        // Health checks count too; a push is a few dozen requests spread over the three.
        let served = requests_served(server) - before[i];
        assert!(served >= 5.0, "server {i} answered {served} requests: the balancer did not spread them");
    }

    // A bigger push; one server is killed once an upload is under way.
    let big =
        ImageBuilder::new(42, &[40 * MIB, 40 * MIB + 1, 40 * MIB + 2]).write(&tmp.path().join("big"), "v2");
    let target = skopeo::docker_ref(&balancer.host(), "scale/big", "v2");
    let (src, dest) = (big.oci_ref(), target.clone());
    let push = std::thread::spawn(move || copy_with_retries(&src, &dest));
    let uploads = format!(
        "{}/{bucket}?list-type=2&prefix=image-registry/docker/registry/v2/repositories/scale/big/_uploads/",
        moto.endpoint
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listing = util::http().get(&uploads).send().and_then(|r| r.text()).unwrap_or_default();
        if listing.contains("<Key>") {
            break;
        }
        assert!(Instant::now() < deadline, "no upload started within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = servers.remove(1);
    let killed_at = Instant::now();
    drop(killed); // SIGKILL, mid-push
    let first = push.join().expect("the push thread");
    let pushed = if first.status.success() {
        true
    } else {
        eprintln!(
            "the push failed when a server was killed ({:.1} s after): {}; pushing again",
            killed_at.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&first.stderr).trim()
        );
        copy_with_retries(&big.oci_ref(), &target).status.success()
    };
    assert!(pushed, "a second push through the two servers left failed");
    // Everything the registry acknowledged is there, through whichever server answers.
    let back = tmp.path().join("big-back");
    skopeo::copy_exact(&target, &format!("oci:{}:v2", back.display()), &[]);
    layout::assert_same_blobs(&big.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
    let manifest = skopeo::inspect_raw(&target, &[]);
    assert_eq!(manifest, big.manifest_bytes());
}

fn succeeded(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().expect("wait for regctl");
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// How often a test asks whether a user is accepted yet: each refusal counts against the
/// (client, user) pair's 10 failures a minute, so at most 8 fit in two seconds.
const POLL: Duration = Duration::from_millis(250);

/// The status of `GET /v2/` on `server` as `user:password`.
fn v2_status(server: &Server, (user, password): (&str, &str)) -> u16 {
    let resp =
        util::http().get(server.url("/v2/")).basic_auth(user, Some(password)).send().expect("GET /v2/");
    resp.status().as_u16()
}

#[test]
fn a_user_added_once_in_the_bucket_is_accepted_by_every_server_within_two_seconds() {
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let servers = three_servers(&moto, &bucket, &tmp.path().join("unused"), &["--users-in-storage"]);
    let alice = ("alice", "alice-pw");
    for server in &servers {
        assert_eq!(v2_status(server, ("nobody", "x")), 401, "no users before the first add-user");
    }
    let env: Vec<(String, String)> =
        moto.registry_env(&bucket).into_iter().filter(|(k, _)| k.starts_with("AWS_")).collect();
    let endpoint = moto.endpoint.clone();
    let bucket_args = |command: &'static str, user: &'static str| -> Vec<String> {
        [command, user, "--bucket", bucket.as_str(), "--root-directory", "/image-registry"]
            .into_iter()
            .chain(["--region", "us-east-1", "--endpoint-url", endpoint.as_str()])
            .map(str::to_string)
            .chain((command == "add-user").then(|| "--password-stdin".to_string()))
            .collect()
    };
    let args = bucket_args("add-user", alice.0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeded(util::spawn_regctl(&args, &format!("{}\n", alice.1), &env), "add-user --bucket");
    let added = Instant::now();
    let mut pending: Vec<usize> = (0..servers.len()).collect();
    while !pending.is_empty() {
        pending.retain(|&i| v2_status(&servers[i], alice) != 200);
        assert!(
            added.elapsed() < Duration::from_secs(2),
            "servers {pending:?} still refuse alice {:?} after add-user",
            added.elapsed()
        );
        std::thread::sleep(POLL);
    }
    eprintln!("alice accepted by all three servers {:?} after add-user returned", added.elapsed());
    assert_eq!(v2_status(&servers[0], ("alice", "wrong")), 401);

    // Two edits at once: each is a conditional write, made again on a conflict; none is lost.
    let (bob, carol) = (bucket_args("add-user", "bob"), bucket_args("add-user", "carol"));
    let (bob, carol): (Vec<&str>, Vec<&str>) =
        (bob.iter().map(String::as_str).collect(), carol.iter().map(String::as_str).collect());
    let editors =
        [util::spawn_regctl(&bob, "bob-pw\n", &env), util::spawn_regctl(&carol, "carol-pw\n", &env)];
    for editor in editors {
        succeeded(editor, "a concurrent add-user --bucket");
    }
    let list = bucket_args("list-users", "--output=json");
    let list: Vec<&str> = list.iter().map(String::as_str).collect();
    let out = succeeded(util::spawn_regctl(&list, "", &env), "list-users --bucket");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> =
        listed["users"].as_array().expect("users").iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while servers
        .iter()
        .any(|s| v2_status(s, ("carol", "carol-pw")) != 200 || v2_status(s, ("bob", "bob-pw")) != 200)
    {
        assert!(Instant::now() < deadline, "bob and carol not accepted everywhere within 2 s");
        std::thread::sleep(POLL);
    }

    // Removed once, refused everywhere.
    let remove = bucket_args("remove-user", "bob");
    let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
    succeeded(util::spawn_regctl(&remove, "", &env), "remove-user --bucket");
    let deadline = Instant::now() + Duration::from_secs(2);
    while servers.iter().any(|s| v2_status(s, ("bob", "bob-pw")) != 401) {
        assert!(Instant::now() < deadline, "bob still accepted somewhere 2 s after remove-user");
        std::thread::sleep(POLL);
    }
}

/// A `regctl gc` SIGKILLed while it holds the collection's lease keeps the other collections
/// out only until the lease expires (`[gc] leasettl`), not for good.
#[test]
fn a_collection_killed_holding_its_lease_is_taken_over_once_the_lease_expires() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = tmp.path().join("data");
    std::fs::create_dir_all(root.join("docker/registry/v2/repositories")).expect("an empty registry");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[gc]\nleasettl = \"3s\"\n").expect("config");
    let config = config.to_str().expect("UTF-8 path");
    let lease = root.join("docker/registry/v2/_regctl/leases/gc");
    let mut holder = Command::new(env!("CARGO_BIN_EXE_regctl"))
        .args(["gc", "--root", root.to_str().expect("UTF-8 path"), "--config", config, "--settle", "60s"])
        .env_remove("REGISTRY_STORAGE")
        .env_remove("REGISTRY_STORAGE_S3_BUCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start regctl gc");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lease.exists() {
        assert!(Instant::now() < deadline, "the collection took no lease within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    holder.kill().expect("SIGKILL");
    holder.wait().expect("wait");
    let killed = Instant::now();
    let refused = crate::ops::run_gc(&root, &["--config", config, "--settle", "0s"]);
    assert!(!refused.status.success(), "a second collection ran beside the first's live lease");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("holds the lease until"), "{stderr}");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed()));
    let report = crate::ops::gc(&root, &["--config", config, "--settle", "0s"]);
    assert_eq!(report["dry_run"], false, "{report}");
    assert!(
        !root.join("docker/registry/v2/_regctl/gc/active").exists(),
        "the dead one's announcement is gone"
    );
}

/// `GET /v2/<name>/manifests/<reference>` on `server`: the status and `Docker-Content-Digest`.
fn manifest_digest(server: &Server, name: &str, reference: &str) -> (u16, String) {
    let resp = util::http()
        .get(server.url(&format!("/v2/{name}/manifests/{reference}")))
        .header("Accept", util::MANIFEST_ACCEPT)
        .send()
        .expect("GET manifest");
    let digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or("");
    (resp.status().as_u16(), digest.to_string())
}

/// Storage reads a server made (`get` and `stat`, every outcome), from its `/metrics`.
fn storage_reads(server: &Server) -> f64 {
    let (_, samples) = util::scrape(&server.url("/metrics"), None);
    ["get", "stat"]
        .iter()
        .map(|op| util::sum(&samples, "regctl_storage_operations_total", &[&format!("operation=\"{op}\"")]))
        .sum()
}

/// On S3 a manifest read again within a second costs no S3 request (bodies by digest are kept;
/// tags and revisions for 1 s), and a tag moved through another server shows within that
/// second (plus a poll).
#[test]
fn manifest_reads_are_cached_and_a_moved_tag_shows_on_another_server_within_a_second() {
    if !skopeo::available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let servers = three_servers(&moto, &bucket, &tmp.path().join("unused"), &[]);
    let (a, b) = (&servers[0], &servers[1]);
    let first = ImageBuilder::new(51, &[1000]).write(&tmp.path().join("first"), "t");
    skopeo::copy_exact(&first.oci_ref(), &skopeo::docker_ref(&a.host(), "cached/app", "t"), &[]);
    let (status, digest) = manifest_digest(b, "cached/app", "t");
    assert_eq!(status, 200);
    let before = storage_reads(b);
    for reference in ["t", digest.as_str()] {
        assert_eq!(manifest_digest(b, "cached/app", reference), (200, digest.clone()));
    }
    assert_eq!(storage_reads(b) - before, 0.0, "manifest reads within the second went to S3");
    let (_, samples) = util::scrape(&b.url("/metrics"), None);
    let hits = util::sum(&samples, "regctl_manifest_cache_lookups_total", &["outcome=\"hit\""]);
    assert!(hits >= 4.0, "{hits} cache hits");

    // The tag moves through A; B serves the new digest within the TTL (1 s) and a poll.
    let second = ImageBuilder::new(52, &[1000]).write(&tmp.path().join("second"), "t");
    skopeo::copy_exact(&second.oci_ref(), &skopeo::docker_ref(&a.host(), "cached/app", "t"), &[]);
    let moved = Instant::now();
    loop {
        let (status, now) = manifest_digest(b, "cached/app", "t");
        assert_eq!(status, 200);
        if now != digest {
            break;
        }
        assert!(moved.elapsed() < Duration::from_millis(1500), "B still served the old digest after 1.5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the moved tag showed on another server {:?} after the push", moved.elapsed());
}
