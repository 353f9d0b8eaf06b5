//! htpasswd authentication with files made by Apache's `htpasswd -B`: the Basic challenge,
//! wrong and right credentials, skopeo with an auth file, changes to the file picked up by the
//! running server, rate limiting of failed attempts, and the `REGISTRY_AUTH_HTPASSWD_*`
//! variables.
//!
//! The server limits failed attempts per client and user (10 a minute), so each test keeps its
//! own wrong guesses well below that, except the one that checks the limit.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::util::layout::ImageBuilder;
use crate::util::{self, Server, skopeo};

/// Whether Apache's `htpasswd` is installed.
pub(crate) fn htpasswd_available() -> bool {
    util::require_tool("htpasswd", "apt-get install apache2-utils")
}

/// Sets `user`'s password in the htpasswd `file` with bcrypt (`htpasswd -B`), creating the file
/// when `create`. The password goes through stdin (`-i`), never through argv.
pub(crate) fn htpasswd_set(file: &Path, user: &str, password: &str, create: bool) {
    let mut cmd = Command::new("htpasswd");
    cmd.args(if create { ["-B", "-i", "-c"].as_slice() } else { ["-B", "-i"].as_slice() })
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run htpasswd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("wait for htpasswd");
    assert!(out.status.success(), "htpasswd -B {user}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Removes `user` from the htpasswd `file` (`htpasswd -D`).
fn htpasswd_delete(file: &Path, user: &str) {
    let out = Command::new("htpasswd")
        .arg("-D")
        .arg(file)
        .arg(user)
        .stdin(Stdio::null())
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd -D {user}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `GET /v2/` as `user:password` (none when `None`), optionally from another loopback source
/// address, so the server sees another client.
fn get_v2(server: &Server, creds: Option<(&str, &str)>, from: Option<IpAddr>) -> reqwest::blocking::Response {
    let client = util::client_builder()
        .local_address(from)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let mut req = client.get(server.url("/v2/"));
    if let Some((user, password)) = creds {
        req = req.basic_auth(user, Some(password));
    }
    req.send().expect("GET /v2/")
}

/// The status of `GET /v2/` with these credentials.
fn status_as(server: &Server, user: &str, password: &str) -> StatusCode {
    get_v2(server, Some((user, password)), None).status()
}

/// Polls `GET /v2/` as `user:password` until it answers `want` (the file reload has happened);
/// panics after 20 s, naming the last status seen. Use it only where the attempts before the
/// reload succeed, so polling adds no failed attempts.
fn wait_for_status(server: &Server, (user, password): (&str, &str), want: StatusCode, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status_as(server, user, password);
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {status} for {user} after 20 s without a restart");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts a 401 that carries the Basic challenge for `realm` and a spec error body.
fn assert_challenge(resp: reqwest::blocking::Response, realm: &str, what: &str) {
    assert_eq!(resp.status(), 401, "{what}");
    let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().expect("ASCII").to_string());
    assert_eq!(challenge.as_deref(), Some(format!("Basic realm=\"{realm}\"").as_str()), "{what}");
    let body: serde_json::Value = resp.json().expect("a JSON error body");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{what}: {body}");
    // A detail, not null: Go clients (docker) retry an error without one.
    assert!(body["errors"][0]["detail"].is_array(), "{what}: the access records in the detail: {body}");
}

/// Standard base64 with padding (RFC 4648), for `auth.json`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes a containers-auth.json for `host` with `user:password` and returns its path.
pub(crate) fn write_authfile(dir: &Path, name: &str, host: &str, user: &str, password: &str) -> String {
    let auth =
        serde_json::json!({ "auths": { host: { "auth": base64(format!("{user}:{password}").as_bytes()) } } });
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(&auth).expect("JSON")).expect("write auth.json");
    path.to_str().expect("a UTF-8 path").to_string()
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
}

#[test]
fn challenge_without_credentials_and_401_for_wrong_ones() {
    if !htpasswd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    htpasswd_set(&file, "alice", "correct horse battery", true);
    let content = std::fs::read_to_string(&file).expect("read htpasswd");
    assert!(content.starts_with("alice:$2y$"), "htpasswd -B writes bcrypt: {content}");

    let realm = "regctl test realm";
    let server = Server::start_with(&["--htpasswd", file.to_str().expect("UTF-8"), "--realm", realm]);

    assert_challenge(get_v2(&server, None, None), realm, "GET /v2/ without credentials");
    let resp = util::http().get(server.url("/v2/_catalog")).send().expect("GET /v2/_catalog");
    assert_challenge(resp, realm, "GET /v2/_catalog without credentials");
    assert_challenge(get_v2(&server, Some(("alice", "wrong")), None), realm, "a wrong password");
    assert_challenge(
        get_v2(&server, Some(("mallory", "correct horse battery")), None),
        realm,
        "an unknown user",
    );

    let ok = get_v2(&server, Some(("alice", "correct horse battery")), None);
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers().get("docker-distribution-api-version").map(|v| v.as_bytes()),
        Some(&b"registry/2.0"[..])
    );
    let catalog = util::http()
        .get(server.url("/v2/_catalog"))
        .basic_auth("alice", Some("correct horse battery"))
        .send()
        .expect("GET /v2/_catalog");
    assert_eq!(catalog.status(), 200);
}

#[test]
fn skopeo_pushes_and_pulls_with_an_authfile() {
    if !htpasswd_available() || !skopeo::available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    htpasswd_set(&file, "bob", "s3cret:with colon", true);
    let server = Server::start_with(&["--htpasswd", file.to_str().expect("UTF-8")]);
    let image = ImageBuilder::new(51, &[4000, 200_000]).write(&tmp.path().join("src"), "v1");
    let dest = skopeo::docker_ref(&server.host(), "private/app", "v1");

    let anonymous =
        skopeo::run(&["copy", "--dest-tls-verify=false", "--dest-no-creds", &image.oci_ref(), &dest]);
    assert!(!anonymous.status.success(), "an anonymous push must be refused");
    let wrong = write_authfile(tmp.path(), "wrong.json", &server.host(), "bob", "not it");
    let refused =
        skopeo::run(&["copy", "--dest-tls-verify=false", "--dest-authfile", &wrong, &image.oci_ref(), &dest]);
    assert!(!refused.status.success(), "a push with a wrong password must be refused");

    let right = write_authfile(tmp.path(), "auth.json", &server.host(), "bob", "s3cret:with colon");
    let pushed =
        skopeo::copy_digest(&image.oci_ref(), &dest, &[skopeo::EXACT, &["--dest-authfile", &right]].concat());
    assert_eq!(pushed, image.manifest.digest);

    let anonymous = skopeo::run(&["inspect", "--raw", "--tls-verify=false", "--no-creds", &dest]);
    assert!(!anonymous.status.success(), "an anonymous pull must be refused");
    assert_eq!(skopeo::inspect_raw(&dest, &["--authfile", &right]), image.manifest_bytes());
    let back = tmp.path().join("back");
    skopeo::copy_exact(&dest, &format!("oci:{}:v1", back.display()), &["--src-authfile", &right]);
    crate::util::layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));
}

#[test]
fn htpasswd_changes_apply_without_restart() {
    if !htpasswd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    htpasswd_set(&file, "alice", "alice-1", true);
    htpasswd_set(&file, "carol", "carol-1", false);
    let server = Server::start_with(&["--htpasswd", file.to_str().expect("UTF-8")]);
    assert_eq!(status_as(&server, "alice", "alice-1"), 200);
    assert_eq!(status_as(&server, "carol", "carol-1"), 200);
    assert_eq!(status_as(&server, "bob", "bob-1"), 401, "bob is not in the file yet");

    // Add bob, then remove carol. Carol's credentials work until the server has read the file
    // after the last change, so polling them costs no failed attempt; bob's first try then
    // must succeed.
    htpasswd_set(&file, "bob", "bob-1", false);
    htpasswd_delete(&file, "carol");
    wait_for_status(&server, ("carol", "carol-1"), StatusCode::UNAUTHORIZED, "carol was removed");
    assert_eq!(status_as(&server, "bob", "bob-1"), 200, "bob was added before carol was removed");
    assert_eq!(status_as(&server, "alice", "alice-1"), 200, "alice is unchanged");

    // A changed password: the old one stops working (no stale cache), the new one works.
    htpasswd_set(&file, "alice", "alice-2", false);
    wait_for_status(&server, ("alice", "alice-1"), StatusCode::UNAUTHORIZED, "alice's password changed");
    assert_eq!(status_as(&server, "alice", "alice-2"), 200);
}

/// Brute force is bounded per (client, user) pair, concurrent guesses included, and a correct
/// password is never refused because of somebody else's failures: not another user's behind
/// the same address (a NAT, a CI runner), not the same user's from another address.
#[test]
fn failed_attempts_lock_out_the_failing_pair_only() {
    if !htpasswd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    htpasswd_set(&file, "dave", "dave-pw", true);
    htpasswd_set(&file, "erin", "erin-pw", false);
    let server = Server::start_with(&["--htpasswd", file.to_str().expect("UTF-8")]);

    // 40 wrong passwords for dave at once, from one address: at most 10 are checked.
    let server = &server;
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..40)
            .map(|i| scope.spawn(move || get_v2(server, Some(("dave", &format!("guess{i}"))), None)))
            .collect();
        guesses.into_iter().map(|g| g.join().expect("a guess").status().as_u16()).collect()
    });
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    assert!((1..=10).contains(&checked), "{checked} of 40 concurrent guesses were checked: {statuses:?}");
    assert!(statuses.iter().all(|&s| s == 401 || s == 429), "{statuses:?}");

    // dave from this address is locked out, told for how long, in a spec error body.
    let resp = get_v2(server, Some(("dave", "dave-pw")), None);
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds on a 429");
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    let body: serde_json::Value = resp.json().expect("a JSON error body");
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");

    // Nobody else is: erin from the same address, and dave from another one.
    assert_eq!(get_v2(server, Some(("erin", "erin-pw")), None).status(), 200);
    let other: IpAddr = "127.0.0.2".parse().expect("an address");
    assert_eq!(get_v2(server, Some(("dave", "dave-pw")), Some(other)).status(), 200);
}

#[test]
fn htpasswd_path_and_realm_from_the_environment() {
    if !htpasswd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    htpasswd_set(&file, "erin", "erin-pw", true);
    let root = tmp.path().join("data");
    let env = [
        ("REGISTRY_AUTH_HTPASSWD_PATH", file.to_str().expect("UTF-8")),
        ("REGISTRY_AUTH_HTPASSWD_REALM", "Realm From Env"),
    ];
    let server = Server::start_on_env(&root, &[], &env);
    assert_challenge(get_v2(&server, None, None), "Realm From Env", "GET /v2/ without credentials");
    assert_eq!(status_as(&server, "erin", "erin-pw"), 200);
}

#[test]
fn user_names_cannot_forge_log_lines() {
    if !htpasswd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    htpasswd_set(&file, "alice", "correct horse battery", true);
    let log_path = tmp.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let addr = util::free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regctl"))
        .args(["serve", "--addr", &addr.to_string(), "--log-format", "text", "--htpasswd"])
        .arg(&file)
        .arg("--root")
        .arg(tmp.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start regctl serve");
    util::wait_for_port(addr, Duration::from_secs(20));
    let forged = "mallory\nFORGED-LINE user=alice authenticated";
    let resp = util::http()
        .get(format!("http://{addr}/v2/"))
        .basic_auth(forged, Some("guess"))
        .send()
        .expect("GET /v2/");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).expect("read the log");
    assert!(text.contains("authentication failed"), "the refusal is logged:\n{text}");
    assert!(!text.lines().any(|l| l.starts_with("FORGED-LINE")), "a user name forged a log line:\n{text}");
    // The log is a file, not a terminal: no colour codes in it.
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in a log file:\n{text:?}");
}

/// Behind a load balancer (`[http] proxies`), the client the lockout counts is the one
/// `X-Forwarded-For` names, and the token realm in the challenge is on the scheme and host of
/// `X-Forwarded-Proto` and `-Host`; from a peer outside `proxies` those headers are ignored,
/// so a client cannot dodge the lockout or move the realm by writing them itself.
#[test]
fn forwarded_headers_count_only_from_trusted_proxies() {
    if !htpasswd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("htpasswd");
    htpasswd_set(&file, "alice", "alice-pw", true);
    let file = file.to_str().expect("UTF-8");
    let start = |name: &str, proxies: &str| {
        let config = tmp.path().join(name);
        std::fs::write(&config, format!("[http]\nproxies = [\"{proxies}\"]\n")).expect("config");
        Server::start_with(&["--htpasswd", file, "--bearer", "--config", config.to_str().expect("UTF-8")])
    };
    // Every test request comes from 127.0.0.1: trusted by one server, not by the other.
    let (trusting, ignoring) = (start("trusting.toml", "127.0.0.0/8"), start("ignoring.toml", "10.0.0.0/8"));
    let forwarded = |server: &Server, creds: Option<(&str, &str)>, client: &str| {
        let request = util::http()
            .get(server.url("/v2/"))
            .header("x-forwarded-for", format!("203.0.113.66, {client}"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "registry.example.com");
        let request = match creds {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        request.send().expect("GET /v2/")
    };
    let realm = |server: &Server| {
        let resp = forwarded(server, None, "198.51.100.7");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        resp.headers()["www-authenticate"].to_str().expect("ASCII").to_string()
    };
    assert!(
        realm(&trusting).starts_with("Bearer realm=\"https://registry.example.com/token\""),
        "{}",
        realm(&trusting)
    );
    let own = format!("Bearer realm=\"http://{}/token\"", ignoring.addr);
    assert!(realm(&ignoring).starts_with(&own), "{}", realm(&ignoring));

    for server in [&trusting, &ignoring] {
        for i in 0..10 {
            let status = forwarded(server, Some(("alice", &format!("guess{i}"))), "198.51.100.7").status();
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    // Trusted: the forwarded client 198.51.100.7 is locked out, 198.51.100.8 is not.
    assert_eq!(forwarded(&trusting, Some(("alice", "alice-pw")), "198.51.100.7").status(), 429);
    assert_eq!(forwarded(&trusting, Some(("alice", "alice-pw")), "198.51.100.8").status(), 200);
    // Ignored: every attempt was 127.0.0.1's, whatever the header says.
    assert_eq!(forwarded(&ignoring, Some(("alice", "alice-pw")), "198.51.100.8").status(), 429);
}
