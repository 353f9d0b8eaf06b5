//! HAProxy (Debian's `haproxy`) on loopback in front of registry servers: the load balancer
//! of the scale-out tests (tests/scale.rs, tests/rolling.rs).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// HAProxy running a configuration, killed when dropped.
pub struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The statistics page (`/stats;csv`), when the configuration has one.
    pub stats: Option<SocketAddr>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// HAProxy round-robin per request over `servers`: `http-server-close` and `http-reuse
    /// never` balance every request on its own, so one push's POST, PATCH and PUT go to
    /// different servers. A server is out after one failed check (every 300 ms); a request
    /// whose connection is refused goes to another. `None` locally when HAProxy is missing.
    pub fn per_request(servers: &[SocketAddr]) -> Option<Balancer> {
        let addr = super::free_addr();
        let mut config = format!(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  \
             option http-server-close\n  http-reuse never\n  retries 3\n  option redispatch 1\n\
             frontend registry\n  bind {addr}\n  default_backend servers\n\
             backend servers\n  balance roundrobin\n  option httpchk GET /health\n"
        );
        for (i, server) in servers.iter().enumerate() {
            config.push_str(&format!("  server s{i} {server} check inter 300ms fall 1 rise 2\n"));
        }
        Balancer::start(addr, None, &config)
    }

    /// Starts `/usr/sbin/haproxy` on `config`, whose frontend listens on `addr` (and whose
    /// statistics page, if any, on `stats`), once `haproxy -c` accepts it; `None` locally when
    /// HAProxy is not installed (CI fails instead).
    pub fn start(addr: SocketAddr, stats: Option<SocketAddr>, config: &str) -> Option<Balancer> {
        let haproxy = Path::new("/usr/sbin/haproxy");
        if !haproxy.is_file() {
            assert!(
                !super::in_ci(),
                "haproxy is required in CI (apt-get install haproxy; tests/run-all does)"
            );
            eprintln!("SKIPPED: haproxy is not installed; install it with: apt-get install haproxy");
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let check = Command::new(haproxy).arg("-c").arg("-f").arg(&file).output().expect("haproxy -c");
        assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        super::wait_for_port(addr, Duration::from_secs(20));
        Some(Balancer { addr, stats, child, _dir: dir })
    }

    /// `host:port`, the form skopeo takes.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The status HAProxy gives server `name` of backend `backend` (`UP`, `DOWN`, `MAINT`,
    /// `UP 1/2` while rising...), from the statistics page.
    pub fn server_status(&self, backend: &str, name: &str) -> String {
        let stats = self.stats.expect("a balancer with a statistics page");
        let csv = super::http()
            .get(format!("http://{stats}/stats;csv"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        csv.lines()
            .map(|line| line.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > 17 && f[0] == backend && f[1] == name)
            .map(|f| f[17].to_string())
            .unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
