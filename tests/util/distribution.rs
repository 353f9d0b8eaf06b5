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
        let addr = super::free_addr();
        let config_dir = tempfile::tempdir().expect("temporary directory");
        let config = config_dir.path().join("config.yml");
        // JSON is YAML: serde_json quotes the path and address safely.
        let yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            root = serde_json::Value::from(root.to_str().expect("a UTF-8 path")),
            addr = serde_json::Value::from(addr.to_string()),
        );
        std::fs::write(&config, yaml).expect("write the docker-registry config");

        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config).stdin(Stdio::null()).stderr(Stdio::null());
        // distribution reads REGISTRY_* variables as overrides of its config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
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

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
