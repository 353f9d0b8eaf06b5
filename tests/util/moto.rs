//! A real moto server (PyPI `moto[server]`) on a free loopback port: the AWS of the tests.

use std::process::{Child, Command, Stdio};
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
