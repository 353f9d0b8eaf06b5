//! Shared helpers for the integration tests: start `regctl serve` on a free loopback port,
//! find external tools, and fail loudly in CI when one is missing.

#![allow(dead_code)]

pub mod distribution;
pub mod engines;
pub mod haproxy;
pub mod layout;
pub mod moto;
pub mod skopeo;
pub mod tls;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Returns a loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// True when running under CI, where every tool the tests need must be installed.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Reports whether `tool` is on `PATH`. When it is absent, CI fails the test; a local run skips
/// it with a message naming what to install.
pub fn require_tool(tool: &str, install_hint: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        assert!(!in_ci(), "{tool} is required in CI but is not installed ({install_hint})");
        eprintln!("SKIPPED: {tool} is not installed; install it with: {install_hint}");
    }
    found
}

/// A `regctl serve` process on a loopback port, killed when dropped.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The storage root directory it serves.
    pub root: PathBuf,
    child: Child,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with filesystem storage in a fresh temporary directory and no auth.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server in a fresh temporary directory with extra `regctl serve` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let root = tmp.path().join("data");
        let mut server = Server::start_on(&root, extra);
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server on an existing storage root (kept after the server stops).
    pub fn start_on(root: &Path, extra: &[&str]) -> Server {
        Server::start_on_env(root, extra, &[])
    }

    /// Like [`Server::start_on`], with `env` set in the server's environment after the
    /// `REGISTRY_*` variables of the test's own environment are removed.
    pub fn start_on_env(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_at(free_addr(), root, extra, env)
    }

    /// Like [`Server::start_on_env`], listening on `addr`: for peers that must know the port
    /// before the server starts (Pebble validates ACME challenges on it).
    pub fn start_at(addr: SocketAddr, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regctl"));
        cmd.arg("serve")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--root")
            .arg(root)
            .args(extra)
            .env_remove("REGISTRY_HTTP_ADDR")
            .env_remove("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
            .env_remove("REGISTRY_AUTH_HTPASSWD_PATH")
            .env_remove("REGISTRY_AUTH_HTPASSWD_REALM")
            .env_remove("REGISTRY_AUTH_ANONYMOUS")
            // Request logs drown test output; REGCTL_TEST_LOG=info brings them back.
            .env("RUST_LOG", std::env::var("REGCTL_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        let child = cmd.spawn().expect("start regctl serve");
        let server = Server { addr, root: root.to_path_buf(), child, _tmp: None };
        wait_for_port(addr, Duration::from_secs(20));
        server
    }

    /// The server's base URL, e.g. `http://127.0.0.1:5000`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A full URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process id (for `/proc/PID/status`, or a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port`, the form skopeo and oras take.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sends SIGTERM and waits for the process to exit, returning whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait for regctl serve");
        status.success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking HTTP client for the tests (no redirects followed, so 3xx can be checked).
pub fn http() -> reqwest::blocking::Client {
    client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client")
}

/// A blocking client builder; every test client starts here. reqwest's rustls has no built-in
/// crypto provider, so this installs the process-wide aws-lc-rs one first.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::blocking::Client::builder()
}

/// The `sha256:<hex>` digest of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// An `Accept` header naming every manifest type the tests push (OCI and Docker schema 2).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// GETs `url` and returns the status and the body parsed as JSON (`Null` when it is not JSON).
pub fn get_json(url: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let resp = http().get(url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp.bytes().expect("response body");
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// Reads a paginated list (`/v2/_catalog` with key `repositories`, or `/v2/<name>/tags/list`
/// with key `tags`) from `base` + `first`, following `Link: <…>; rel="next"` headers, and
/// returns all entries in the order served. Each page must be a 200 with at most `n` entries
/// when `first` asks for `n`.
pub fn get_all_pages(base: &str, first: &str, key: &str) -> Vec<String> {
    get_all_pages_as(base, first, key, None)
}

/// [`get_all_pages`] with Basic credentials `user:password` on every request.
pub fn get_all_pages_as(base: &str, first: &str, key: &str, creds: Option<(&str, &str)>) -> Vec<String> {
    let mut all = Vec::new();
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages <= 100, "more than 100 pages from {base}{first}: the Link chain loops");
        let url = if path.starts_with("http") { path.clone() } else { format!("{base}{path}") };
        let mut request = http().get(&url);
        if let Some((user, password)) = creds {
            request = request.basic_auth(user, Some(password));
        }
        let resp = request.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
        next = resp.headers().get("link").map(|v| v.to_str().expect("an ASCII Link header").to_string()).map(
            |link| {
                assert!(link.contains(r#"rel="next""#), "Link without rel=\"next\": {link}");
                let start = link.find('<').expect("Link has <url>") + 1;
                let end = link.find('>').expect("Link has <url>");
                link[start..end].to_string()
            },
        );
        let body: serde_json::Value = resp.json().expect("a JSON page");
        let entries = match &body[key] {
            serde_json::Value::Null => Vec::new(),
            v => v.as_array().unwrap_or_else(|| panic!("{key} is not a list: {body}")).clone(),
        };
        if let Some(n) = query_param(&url, "n") {
            let n: usize = n.parse().expect("n is a number");
            assert!(entries.len() <= n, "{url} returned {} entries: {body}", entries.len());
        }
        all.extend(entries.iter().map(|e| e.as_str().expect("a string entry").to_string()));
    }
    all
}

/// The value of the query parameter `name` in `url`, if present (no percent-decoding).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Finds a Python interpreter that can import `module`: the project's test venv
/// (`.venv-test`, made by `tests/run-all`) first, then `python3` on `PATH`. When there is none,
/// CI fails the test and a local run skips it with a message.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python3");
    let found = [venv, PathBuf::from("python3")].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(!in_ci(), "Python module {module} is required in CI (tests/run-all installs it)");
        eprintln!("SKIPPED: no Python with {module}; run tests/run-all, or pip install {module}");
    }
    found
}

/// GETs a Prometheus endpoint and parses every sample line into `name{labels}` -> value.
/// Returns the status too.
pub fn scrape(url: &str, creds: Option<(&str, &str)>) -> (u16, HashMap<String, f64>) {
    scrape_with(&http(), url, creds)
}

/// [`scrape`] with a given client (e.g. one that trusts a test CA, for HTTPS).
pub fn scrape_with(
    client: &reqwest::blocking::Client,
    url: &str,
    creds: Option<(&str, &str)>,
) -> (u16, HashMap<String, f64>) {
    let mut request = client.get(url);
    if let Some((user, password)) = creds {
        request = request.basic_auth(user, Some(password));
    }
    let resp = request.send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().expect("metrics text");
    let mut samples = HashMap::new();
    if status != 200 {
        return (status, samples);
    }
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in: {line}"));
        assert!(samples.insert(series.to_string(), value).is_none(), "series twice: {series}");
    }
    (status, samples)
}

/// The sum of every sample of `name` whose labels include all of `labels`.
pub fn sum(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Runs `regctl ARGS` with `stdin` and `env`, without waiting.
pub fn spawn_regctl(args: &[&str], stdin: &str, env: &[(String, String)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regctl"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start regctl");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child
}
