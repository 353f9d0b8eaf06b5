//! CNCF distribution 2.8 (Debian's `docker-registry`) as a reference registry on loopback.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether `docker-registry` is installed (see [`super::require_tool`]).
pub fn available() -> bool {
    super::require_tool("docker-registry", "apt-get install docker-registry")
}

/// A `docker-registry serve` process with filesystem storage and no auth, killed when dropped.
pub struct DockerRegistry {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    child: Child,
    _config_dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Starts distribution on a free loopback port, storing under `root`, with deletes enabled.
    pub fn start_on(root: &Path) -> DockerRegistry {
        let root = yaml_string(root.to_str().expect("a UTF-8 path"));
        DockerRegistry::start_with_storage(&format!("  filesystem:\n    rootdirectory: {root}\n"))
    }

    /// Starts distribution on `bucket` of the S3 endpoint `endpoint` (moto), under
    /// `rootdirectory`, serving blobs itself (no redirects to S3).
    pub fn start_on_s3(endpoint: &str, bucket: &str, rootdirectory: &str) -> DockerRegistry {
        let storage = format!(
            "  s3:\n    region: us-east-1\n    bucket: {}\n    regionendpoint: {}\n    \
             forcepathstyle: true\n    rootdirectory: {}\n    accesskey: testing\n    \
             secretkey: testing\n    secure: false\n  redirect:\n    disable: true\n",
            yaml_string(bucket),
            yaml_string(endpoint),
            yaml_string(rootdirectory),
        );
        DockerRegistry::start_with_storage(&storage)
    }

    /// Starts distribution with `storage` as the YAML body of its `storage:` section.
    fn start_with_storage(storage: &str) -> DockerRegistry {
        let addr = super::free_addr();
        let config_dir = tempfile::tempdir().expect("temporary directory");
        let config = config_dir.path().join("config.yml");
        let yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n{storage}  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            addr = yaml_string(&addr.to_string()),
        );
        std::fs::write(&config, yaml).expect("write the docker-registry config");

        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config).stdin(Stdio::null()).stderr(Stdio::null());
        // distribution reads REGISTRY_* variables as overrides of its config file, and its AWS
        // SDK AWS_* ones (it refuses to start with AWS_CA_BUNDLE and a plain HTTP endpoint).
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("REGISTRY_") || key_str.starts_with("AWS_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().expect("start docker-registry");
        let registry = DockerRegistry { addr, child, _config_dir: config_dir };
        super::wait_for_port(addr, Duration::from_secs(20));
        registry
    }

    /// `host:port`, the form skopeo takes.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A full URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and waits for the process to exit, so the storage is quiescent.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

/// `s` as a YAML string: JSON is YAML, and serde_json quotes safely.
fn yaml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
