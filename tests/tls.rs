//! HTTPS: certificates from Debian's Pebble (a real ACME server) over HTTP-01 and TLS-ALPN-01,
//! the on-disk cache across restarts, renewal of short-lived certificates under load, and
//! certificate files with rotation; every client verifies the chain against the test's own CA.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::layout::{self, ImageBuilder, MIB};
use crate::util::moto::Moto;
use crate::util::tls::{self, Pebble, TestCa};
use crate::util::{self, Server, free_addr, skopeo};

/// The name every test certifies: it resolves to loopback for Pebble and the clients alike.
const HOST: &str = "localhost";
/// How long a test waits for Pebble to issue a certificate.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

fn https_url(addr: SocketAddr, path: &str) -> String {
    format!("https://{HOST}:{}{path}", addr.port())
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

/// `skopeo copy` of a small generated image to `repo:tag` on the HTTPS registry and back,
/// verifying the registry's certificate against `root` only; the blobs must come back intact.
fn skopeo_round_trip(addr: SocketAddr, root: &str, work: &Path, repo: &str, seed: u64) {
    if !skopeo::available() {
        return;
    }
    let certs = tls::cert_dir(&work.join(format!("certs-{seed}")), root);
    let certs_arg = certs.display().to_string();
    let image = ImageBuilder::new(seed, &[2 * MIB, 3000]).write(&work.join(format!("image-{seed}")), "v1");
    let remote = format!("docker://{HOST}:{}/{repo}:v1", addr.port());
    let mut push = vec!["copy", "--dest-tls-verify=true", "--dest-cert-dir", &certs_arg];
    push.extend_from_slice(skopeo::EXACT);
    let source = image.oci_ref();
    push.extend_from_slice(&[&source, &remote]);
    tls::skopeo_verified(&push, &certs);
    let back = work.join(format!("back-{seed}"));
    let dest = format!("oci:{}:v1", back.display());
    let mut pull = vec!["copy", "--src-tls-verify=true", "--src-cert-dir", &certs_arg];
    pull.extend_from_slice(skopeo::EXACT);
    pull.extend_from_slice(&[&remote, &dest]);
    tls::skopeo_verified(&pull, &certs);
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));

    // Verification is really on: trusting another CA, skopeo refuses the registry.
    let stranger = TestCa::new(work, &format!("stranger-{seed}"));
    let wrong = tls::cert_dir(&work.join(format!("wrong-certs-{seed}")), &stranger.pem);
    let wrong_arg = wrong.display().to_string();
    let out =
        tls::skopeo_trusting(&["inspect", "--tls-verify=true", "--cert-dir", &wrong_arg, &remote], &wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "skopeo trusted a registry certificate from an unknown CA");
    assert!(stderr.contains("certificate"), "unexpected skopeo error: {stderr}");
}

/// TLS-ALPN-01 is blocked (Pebble validates it on a port where nothing listens): the default
/// order tries it first, then falls back to HTTP-01 on the port-80 listener in the same
/// attempt. A restart with the same cache serves the cached certificate without a new order.
/// Port 80 redirects to HTTPS. HTTPS responses carry no HSTS: it is on by default only for ACME
/// on port 443, and this server listens elsewhere.
#[test]
fn acme_http01_fallback_and_cache_across_restart() {
    if !tls::pebble_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let (addr, http_addr) = (free_addr(), free_addr());
    let pebble = Pebble::start(&work.path().join("pebble"), http_addr.port(), free_addr().port(), None);
    let cache = work.path().join("acme-cache");
    let mut serve = pebble.serve_args(HOST, &cache);
    serve.extend(["--http-addr".into(), http_addr.to_string()]);
    let root_dir = work.path().join("data");

    let server = Server::start_at(addr, &root_dir, &args(&serve), &[]);
    let issuing_root = pebble.issuing_root();
    let started = Instant::now();
    let first = tls::wait_for_certificate(addr, HOST, &issuing_root, None, ISSUE_TIMEOUT);
    eprintln!("certificate by HTTP-01 after {:?}", started.elapsed());
    assert_eq!(pebble.orders(), 2, "one order for tls-alpn-01 (failed), one for http-01:\n{}", pebble.log());

    let client = tls::https_client(&issuing_root);
    let resp = client.get(https_url(addr, "/v2/")).send().expect("GET /v2/ over HTTPS");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("strict-transport-security"), None, "ACME off port 443: no HSTS");
    let resp = util::http()
        .get(format!("http://{HOST}:{}/v2/_catalog?n=5", http_addr.port()))
        .send()
        .expect("GET on the plain HTTP listener");
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], https_url(addr, "/v2/_catalog?n=5").as_str());
    assert!(server.stop(), "regctl serve exits cleanly on SIGTERM");

    let orders = pebble.orders();
    let server = Server::start_at(addr, &root_dir, &args(&serve), &[]);
    let again = tls::wait_for_certificate(addr, HOST, &issuing_root, None, Duration::from_secs(10));
    assert_eq!(again, first, "the restarted server serves the cached certificate");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pebble.orders(), orders, "the restarted server made a new order:\n{}", pebble.log());
    assert!(server.stop());
}

/// On S3 storage the ACME account and certificate live in the bucket (the root directory's
/// `regctl/acme/`, outside the registry's `docker/registry/v2` tree), not on the disk: a second
/// server with an empty disk cache on the same bucket, as on a newly provisioned instance,
/// serves the same certificate without a new order (Let's Encrypt allows 5 duplicates a week).
#[test]
fn acme_cache_in_the_s3_bucket_serves_a_new_instance_without_an_order() {
    if !tls::pebble_available() {
        return;
    }
    let Some(moto) = Moto::start() else { return };
    let bucket = moto.create_bucket();
    let env = moto.registry_env(&bucket);
    let env = crate::util::moto::borrowed(&env);
    let work = tempfile::tempdir().expect("temporary directory");
    let addr = free_addr();
    let pebble = Pebble::start(&work.path().join("pebble"), free_addr().port(), addr.port(), None);
    let serve_with = |disk_cache: &Path| {
        let mut serve = pebble.serve_args(HOST, disk_cache);
        serve.extend(["--acme-challenge".into(), "tls-alpn-01".into(), "--http-addr".into(), String::new()]);
        serve
    };
    let issuing_root = pebble.issuing_root();

    let first_disk = work.path().join("instance-1-acme");
    let server = Server::start_at(addr, &work.path().join("unused"), &args(&serve_with(&first_disk)), &env);
    let first = tls::wait_for_certificate(addr, HOST, &issuing_root, None, ISSUE_TIMEOUT);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert!(server.stop());
    assert!(!first_disk.exists(), "the ACME key was written to the disk, not the bucket");
    let url = format!("{}/{bucket}?list-type=2&prefix=image-registry/regctl/acme/", moto.endpoint);
    let keys = util::http().get(url).send().expect("list bucket").text().expect("body");
    assert!(keys.contains("/account.json</Key>") && keys.contains("/localhost.pem</Key>"), "{keys}");

    let second_disk = work.path().join("instance-2-acme");
    let server = Server::start_at(addr, &work.path().join("unused"), &args(&serve_with(&second_disk)), &env);
    let again = tls::wait_for_certificate(addr, HOST, &issuing_root, None, Duration::from_secs(10));
    assert_eq!(again, first, "the new instance serves the certificate cached in the bucket");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pebble.orders(), 1, "the new instance made a new order:\n{}", pebble.log());
    assert!(server.stop());
}

/// TLS-ALPN-01 only, with HTTP-01 unreachable (Pebble validates it on a port where nothing
/// listens, as with a blocked port 80): the certificate is issued on the HTTPS listener itself,
/// skopeo pushes and pulls over verified HTTPS, and the server speaks HTTP/2 and HTTP/1.1.
#[test]
fn acme_tls_alpn01_and_skopeo() {
    if !tls::pebble_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let addr = free_addr();
    let pebble = Pebble::start(&work.path().join("pebble"), free_addr().port(), addr.port(), None);
    let mut serve = pebble.serve_args(HOST, &work.path().join("acme-cache"));
    serve.extend(["--acme-challenge".into(), "tls-alpn-01".into(), "--http-addr".into(), String::new()]);
    let server = Server::start_at(addr, &work.path().join("data"), &args(&serve), &[]);
    let issuing_root = pebble.issuing_root();
    tls::wait_for_certificate(addr, HOST, &issuing_root, None, ISSUE_TIMEOUT);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());

    for (offer, expect) in [(&b"h2"[..], &b"h2"[..]), (b"http/1.1", b"http/1.1")] {
        let (_, alpn) = tls::handshake(addr, HOST, &issuing_root, &[offer]).expect("handshake");
        assert_eq!(alpn.as_deref(), Some(expect));
    }
    // A client that does not trust the CA is refused.
    let stranger = TestCa::new(work.path(), "stranger");
    assert!(tls::handshake(addr, HOST, &stranger.pem, &[]).is_err());

    skopeo_round_trip(addr, &issuing_root, work.path(), "tls/alpn", 41);
    assert!(server.stop());
}

/// A certificate valid for 30 seconds is renewed in the background (at a third of its
/// lifetime) while a client keeps pulling over kept-alive connections: no request fails, and
/// new connections get the new certificate.
#[test]
fn acme_renews_short_lived_certificate_while_pulling() {
    if !tls::pebble_available() {
        return;
    }
    let work = tempfile::tempdir().expect("temporary directory");
    let (addr, http_addr) = (free_addr(), free_addr());
    let lifetime = Duration::from_secs(30);
    let pebble = Pebble::start(&work.path().join("pebble"), http_addr.port(), addr.port(), Some(lifetime));
    let mut serve = pebble.serve_args(HOST, &work.path().join("acme-cache"));
    serve.extend(["--http-addr".into(), http_addr.to_string()]);
    let server = Server::start_at(addr, &work.path().join("data"), &args(&serve), &[]);
    let issuing_root = pebble.issuing_root();
    let first = tls::wait_for_certificate(addr, HOST, &issuing_root, None, ISSUE_TIMEOUT);

    // Push a blob and a manifest to pull.
    let client = tls::https_client(&issuing_root);
    let blob = vec![7u8; 256 * 1024];
    let digest = util::sha256(&blob);
    let resp = client
        .post(https_url(addr, &format!("/v2/renew/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .expect("push a blob");
    assert_eq!(resp.status(), 201);

    let started = Instant::now();
    let mut served = vec![first];
    let mut pulls = 0u32;
    while served.len() < 3 {
        assert!(
            started.elapsed() < lifetime * 3,
            "no second renewal within {:?} ({} certificates seen)",
            lifetime * 3,
            served.len()
        );
        let resp = client.get(https_url(addr, &format!("/v2/renew/blobs/{digest}"))).send().expect("pull");
        assert_eq!(resp.status(), 200, "pull {pulls}");
        assert_eq!(util::sha256(&resp.bytes().expect("blob")), digest);
        pulls += 1;
        let (leaf, _) = tls::handshake(addr, HOST, &issuing_root, &[]).expect("a verified handshake");
        if served.last() != Some(&leaf) {
            eprintln!("new certificate after {:?} and {pulls} pulls", started.elapsed());
            served.push(leaf);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pebble.orders() >= 3, "{}", pebble.log());
    skopeo_round_trip(addr, &issuing_root, work.path(), "tls/renewed", 43);
    assert!(server.stop());
}

/// Certificate-file mode: a generated certificate is served (skopeo round trip with
/// verification), and replacing the files, certificate first and key a moment later, switches
/// new connections to the new certificate while a kept-alive client carries on. SIGTERM lets an
/// in-flight HTTPS upload finish.
#[test]
fn certificate_files_served_and_rotated() {
    let work = tempfile::tempdir().expect("temporary directory");
    let ca = TestCa::new(work.path(), "files-ca");
    let (cert, key) = (work.path().join("fullchain.pem"), work.path().join("key.pem"));
    let first = ca.issue(&[HOST, "127.0.0.1"], &cert, &key);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start_with(&["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    let addr = server.addr;
    assert_eq!(tls::wait_for_certificate(addr, HOST, &ca.pem, None, Duration::from_secs(10)), first);
    let (_, alpn) =
        tls::handshake(addr, "127.0.0.1", &ca.pem, &[b"h2", b"http/1.1"]).expect("IP address name");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    let client = tls::https_client(&ca.pem);
    let resp = client.get(https_url(addr, "/v2/")).send().expect("GET /v2/");
    assert_eq!(resp.status(), 200);
    skopeo_round_trip(addr, &ca.pem, work.path(), "tls/files", 45);

    // Rotate: the new certificate lands first, its key 3 s later (a non-atomic copy). In
    // between, the old pair keeps being served.
    let staged = (work.path().join("new-cert.pem"), work.path().join("new-key.pem"));
    let second = ca.issue(&[HOST], &staged.0, &staged.1);
    std::fs::copy(&staged.0, &cert).expect("replace the certificate");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        tls::handshake(addr, HOST, &ca.pem, &[]).expect("handshake").0,
        first,
        "mismatched pair served"
    );
    std::fs::copy(&staged.1, &key).expect("replace the key");
    let started = Instant::now();
    let served = tls::wait_for_certificate(addr, HOST, &ca.pem, Some(&first), Duration::from_secs(10));
    eprintln!("rotated certificate served after {:?}", started.elapsed());
    assert_eq!(served, second);
    let resp = client.get(https_url(addr, "/v2/_catalog")).send().expect("the kept-alive client carries on");
    assert_eq!(resp.status(), 200);

    // Graceful shutdown over HTTPS: an upload still sending its body when SIGTERM arrives
    // completes, then the server exits cleanly.
    let blob: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8).collect();
    let digest = util::sha256(&blob);
    let url = https_url(addr, &format!("/v2/tls/slow/blobs/uploads/?digest={digest}"));
    let upload = std::thread::spawn(move || {
        let body = reqwest::blocking::Body::sized(SlowReader { data: blob, sent: 0 }, 2 * MIB);
        client.post(url).body(body).send().map(|r| r.status())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!upload.is_finished(), "the upload should still be sending");
    assert!(server.stop(), "regctl serve exits cleanly on SIGTERM");
    let status = upload.join().expect("upload thread").expect("the in-flight upload completes");
    assert_eq!(status, 201);
}

/// Issue 16.9: HSTS applies to the host name on every port in browsers, so it is sent only
/// when the operator asks (`http.hsts`; by default only for ACME on port 443). Certificate
/// files on another port: none by default, one year when configured.
#[test]
fn hsts_only_when_configured() {
    let work = tempfile::tempdir().expect("temporary directory");
    let ca = TestCa::new(work.path(), "hsts-ca");
    let (cert, key) = (work.path().join("fullchain.pem"), work.path().join("key.pem"));
    ca.issue(&[HOST], &cert, &key);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let flags = ["--tls-cert", cert_arg.as_str(), "--tls-key", key_arg.as_str()];
    let client = tls::https_client(&ca.pem);
    for (env, expected) in [(None, None), (Some("true"), Some("max-age=31536000")), (Some("false"), None)] {
        let env: Vec<(&str, &str)> = env.map(|v| ("REGISTRY_HTTP_HSTS", v)).into_iter().collect();
        let server = Server::start_on_env(&work.path().join("data"), &flags, &env);
        tls::wait_for_certificate(server.addr, HOST, &ca.pem, None, Duration::from_secs(10));
        let resp = client.get(https_url(server.addr, "/v2/")).send().expect("GET /v2/");
        assert_eq!(resp.status(), 200);
        let hsts = resp.headers().get("strict-transport-security").map(|v| v.to_str().expect("ASCII"));
        assert_eq!(hsts, expected, "with {env:?}");
        assert!(server.stop());
    }
}

/// Issue 16.4: plain HTTP sent to the HTTPS port gets a readable 400, as from Go's servers
/// (distribution), not a TLS alert that clients show as "Received HTTP/0.9"; TLS still works
/// on the same port afterwards.
#[test]
fn plain_http_to_the_https_port_gets_a_readable_400() {
    use std::io::{Read, Write};
    let work = tempfile::tempdir().expect("temporary directory");
    let ca = TestCa::new(work.path(), "plain-ca");
    let (cert, key) = (work.path().join("fullchain.pem"), work.path().join("key.pem"));
    ca.issue(&[HOST], &cert, &key);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start_with(&["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    tls::wait_for_certificate(server.addr, HOST, &ca.pem, None, Duration::from_secs(10));
    for request in ["GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n", "PUT /v2/x/manifests/v1 HTTP/1.1\r\n"] {
        let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        stream.write_all(request.as_bytes()).expect("send plain HTTP");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{request:?}: {answer:?}");
        assert!(answer.ends_with("\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"), "{answer:?}");
    }
    let resp =
        tls::https_client(&ca.pem).get(https_url(server.addr, "/v2/")).send().expect("HTTPS still works");
    assert_eq!(resp.status(), 200);
}

/// A request body that trickles out in 64 KiB pieces, one every 50 ms (2 MiB: about 1.6 s).
struct SlowReader {
    data: Vec<u8>,
    sent: usize,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(64 * 1024).min(self.data.len() - self.sent);
        if n > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        buf[..n].copy_from_slice(&self.data[self.sent..self.sent + n]);
        self.sent += n;
        Ok(n)
    }
}

/// Settings that cannot work are refused at start with a message naming what to set.
#[test]
fn tls_settings_errors_name_the_fix() {
    let work = tempfile::tempdir().expect("temporary directory");
    let root = work.path().join("data").display().to_string();
    // (flags, environment, a phrase the error must contain)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["--acme-email", "ops@example.com"], &[], "--acme-host"),
        (&["--tls-cert", "/nonexistent/cert.pem"], &[], "--tls-key"),
        (
            &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
            &[],
            "/nonexistent/cert.pem",
        ),
        (&[], &[("REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS", "https://r.example/")], "not a DNS name"),
    ];
    for (extra, env, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_regctl"))
            .args(["serve", "--addr", &free_addr().to_string(), "--root", &root])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run regctl serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "regctl serve {extra:?} started");
        assert!(stderr.contains(expected), "regctl serve {extra:?}: expected {expected:?} in:\n{stderr}");
    }
}
