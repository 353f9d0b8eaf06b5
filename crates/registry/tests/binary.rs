//! The `regctl-registry` binary, as `regctl deploy` runs it on the instance: `serve` with
//! its options, answering the distribution API.

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// The server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `regctl-registry serve` on a free loopback port with storage in `root`; returns it,
/// the address from its "registry listening on http://ADDR" log line, and the rest of its log.
fn start(root: &std::path::Path) -> (Server, String, Lines<BufReader<ChildStderr>>) {
    let child = Command::new(env!("CARGO_BIN_EXE_regctl-registry"))
        .args(["serve", "--addr", "127.0.0.1:0", "--log-format", "text", "--root"])
        .arg(root)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start regctl-registry");
    let mut server = Server(child);
    let stderr = server.0.stderr.take().expect("piped stderr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = BufReader::new(stderr).lines();
    while let Some(line) = lines.next() {
        let line = line.expect("a log line");
        if let Some((_, addr)) = line.split_once("registry listening on http://") {
            let addr = addr.split_whitespace().next().expect("an address").to_string();
            return (server, addr, lines);
        }
        assert!(Instant::now() < deadline, "no listening line within 30 s");
    }
    panic!("the server exited without listening");
}

/// `GET /v2/` over a fresh connection: the raw response.
fn get_v2(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[test]
fn serve_answers_the_distribution_api() {
    let root = tempfile::tempdir().expect("temp dir");
    let (_server, addr, log) = start(root.path());
    std::thread::spawn(move || log.for_each(drop));
    let response = get_v2(&addr);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("docker-distribution-api-version: registry/2.0"),
        "{response}"
    );
}

/// A log that can no longer be written (its pipe closed, say journald restarting) once made
/// every request that logged die without an answer: tracing reported the failed write with
/// `eprintln!`, which panics on that same closed stderr.
#[test]
fn requests_are_answered_when_the_log_pipe_is_closed() {
    let root = tempfile::tempdir().expect("temp dir");
    let (_server, addr, log) = start(root.path());
    drop(log);
    for _ in 0..3 {
        let response = get_v2(&addr);
        assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    }
}

#[test]
fn bad_options_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_regctl-registry"))
        .args(["serve", "--config", "/nonexistent/regctl.toml"])
        .output()
        .expect("run regctl-registry");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/regctl.toml"), "{stderr}");
}

/// A port already taken is one line naming the address and the cause, once.
#[test]
fn a_port_in_use_is_one_clear_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_regctl-registry"))
        .args(["serve", "--addr", &addr, "--root"])
        .arg(root.path())
        .stdin(Stdio::null())
        .output()
        .expect("run regctl-registry");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr.lines().find(|line| line.starts_with("error: ")).expect("an error line");
    assert!(error.starts_with(&format!("error: cannot listen on {addr}: ")), "{stderr}");
    assert_eq!(error.matches("os error 98").count(), 1, "{stderr}");
}
