//! A real moto server (PyPI `moto[server]`) on a free loopback port: the AWS of the tests,
//! and the proxy in front of it that injects failures (`tests/moto_shim.py`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A running `moto_server`, killed when dropped.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Child,
}

impl Moto {
    /// Starts moto, or returns `None` locally when it is not installed (CI fails instead).
    pub fn start() -> Option<Moto> {
        if !super::require_tool("moto_server", "pip install 'moto[server]>=5.2.5' (tests/run-all does)") {
            return None;
        }
        let addr = super::free_addr();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
            // ACM issues a certificate requested with DNS validation after this many seconds
            // (moto's default is 60).
            .env("MOTO_ACM_VALIDATION_WAIT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { endpoint: format!("http://{addr}"), child };
        super::wait_for_port(addr, Duration::from_secs(60));
        Some(moto)
    }

    /// Creates a bucket with a unique name (path-style; moto takes unsigned requests).
    pub fn create_bucket(&self) -> String {
        let bucket = format!("registry-{}", std::process::id()) + &format!("-{}", rand_suffix());
        let resp = super::http().put(format!("{}/{bucket}", self.endpoint)).send().expect("create bucket");
        assert!(resp.status().is_success(), "create bucket: {}", resp.status());
        bucket
    }

    /// Turns on versioning of `bucket`, as `regctl provision` does (path-style, unsigned).
    pub fn enable_versioning(&self, bucket: &str) {
        let body = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
        let url = format!("{}/{bucket}?versioning", self.endpoint);
        let resp = super::http().put(url).body(body).send().expect("PutBucketVersioning");
        assert!(resp.status().is_success(), "enable versioning: {}", resp.status());
    }

    /// The environment that points `regctl serve` at `bucket` on this moto, the way a
    /// `registry:2` user configures S3 (distribution's variables, credentials from the chain).
    pub fn registry_env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", bucket),
            ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", &self.endpoint),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/image-registry"),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "5242880"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// `env` (as [`Moto::registry_env`] returns it) in the borrowed form a server's start takes.
pub fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn rand_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{nanos:x}")
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/moto_shim.py` in front of a moto server: forwards everything, and fails, holds or
/// disturbs the requests its arguments name (see its docstring). Killed when dropped.
pub struct Shim {
    /// `http://127.0.0.1:PORT`: the endpoint to give the code under test.
    pub endpoint: String,
    child: Child,
    /// The lines it prints, read by a thread of their own.
    lines: Receiver<String>,
}

impl Shim {
    /// Starts the shim in front of `upstream` (moto's endpoint) with `args`.
    pub fn start(upstream: &str, args: &[&str]) -> Shim {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto_shim.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", "0", "--upstream", upstream])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start moto_shim.py");
        let stdout = BufReader::new(child.stdout.take().expect("shim stdout"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_string()).is_err() {
                    break;
                }
            }
        });
        let mut shim = Shim { endpoint: String::new(), child, lines };
        let ready = shim.next_line();
        let port = ready.strip_prefix("READY ").unwrap_or_else(|| panic!("shim did not start: {ready:?}"));
        shim.endpoint = format!("http://127.0.0.1:{port}");
        shim
    }

    /// The next line the shim prints (e.g. `FAILED <action>`), waiting 120 s at most.
    pub fn next_line(&mut self) -> String {
        self.try_line(Duration::from_secs(120)).expect("the shim printed nothing for 120 s")
    }

    /// The next line the shim prints within `timeout`, if any.
    pub fn try_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits until the shim prints `what` (e.g. `HANG CreateSecurityGroup`), for 120 s at most.
    pub fn wait_for(&mut self, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while self.next_line() != what {
            assert!(std::time::Instant::now() < deadline, "the shim never printed {what:?}");
        }
    }

    /// The fault counts of `--s3-faults`, from the shim's `/__shim/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let url = format!("{}/__shim/stats", self.endpoint);
        super::http().get(&url).send().and_then(|r| r.json()).unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
