//! Real container engines as registry clients: dockerd with the docker CLI, podman, and
//! containerd with `ctr`. Each daemon is private to one test: its socket, state and config live
//! in that test's temporary directory, and it is stopped by PID when its guard drops (also when
//! the test panics).
//!
//! Docker exempts 127.0.0.0/8 from TLS verification (it is an "insecure registry" by default,
//! and `insecure-registries` cannot take it out); newer releases exempt `::1` too (the docker
//! 28 CLI here does, for `docker manifest`). So a registry on loopback would never have its certificate checked by docker. Instead, the
//! test's thread moves into a network namespace of its own ([`PrivateNetwork`]) where
//! [`REGISTRY_IP`], a documentation address (RFC 5737) that nothing routes, sits on the
//! namespace's loopback device; every process the test starts (the registry, the daemons, the
//! clients) inherits that namespace, and no packet can leave it. Docker then verifies the
//! registry's certificate against `certs.d/<ip>:<port>/ca.crt` as it would for any remote
//! registry.
//!
//! Docker reads those certificates from `/etc/docker/certs.d` (daemon and CLI alike, with no
//! option for another directory), and dockerd also writes `/etc/docker/key.json`. Each
//! dockerd and docker CLI therefore runs in a private mount namespace (`unshare --mount`) where
//! a directory of the test is bind-mounted on `/etc/docker`; on the host, `/etc/docker` is at
//! most created, empty, as the mount point.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The registry's address inside a [`PrivateNetwork`]: TEST-NET-2, reserved for documentation
/// and never routed. Only the test's own namespace has it, on its loopback device.
pub const REGISTRY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// How long a daemon may take to answer on its socket after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether every engine in `tools` is installed. In CI a missing one fails the test (see
/// [`super::require_tool`]).
pub fn available(tools: &[&str]) -> bool {
    tools.iter().all(|tool| {
        let package = match *tool {
            "dockerd" | "docker" => "docker.io",
            "ctr" => "containerd",
            other => other,
        };
        super::require_tool(tool, &format!("apt-get install {package}"))
    })
}

/// The calling thread's stay in a network namespace of its own, with loopback up and
/// [`REGISTRY_IP`] on it. Processes started from this thread inherit the namespace. Dropping it
/// moves the thread back: create it first in a test, so that it drops after everything that
/// runs inside.
pub struct PrivateNetwork {
    previous: OwnedFd,
}

impl PrivateNetwork {
    /// Unshares the network namespace of the calling thread (a test's own thread; the other
    /// threads of the process keep theirs) and sets it up. `None` when that is not permitted
    /// (not root) outside CI: the test skips.
    pub fn enter() -> Option<PrivateNetwork> {
        let previous: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
            .expect("open this thread's network namespace")
            .into();
        if let Err(e) = unshare_network() {
            assert!(!super::in_ci(), "unshare(CLONE_NEWNET) failed in CI (the tests run as root): {e}");
            eprintln!("SKIPPED: the container engine tests need root for a network namespace: {e}");
            return None;
        }
        let net = PrivateNetwork { previous };
        run_ok(Command::new("ip").args(["link", "set", "lo", "up"]));
        run_ok(Command::new("ip").args(["addr", "add", &format!("{REGISTRY_IP}/32"), "dev", "lo"]));
        Some(net)
    }

    /// An address on [`REGISTRY_IP`] with a port that is free in this namespace.
    pub fn free_addr(&self) -> SocketAddr {
        let listener = TcpListener::bind((IpAddr::V4(REGISTRY_IP), 0)).expect("bind an ephemeral port");
        listener.local_addr().expect("local address")
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        if let Err(e) = set_network(&self.previous) {
            eprintln!("setns back to the previous network namespace: {e}");
        }
    }
}

/// Moves the calling thread into a new network namespace (unshare(2); std has no wrapper).
#[expect(unsafe_code, reason = "unshare(2) is a C function; std has no wrapper")]
fn unshare_network() -> std::io::Result<()> {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET changes only the calling thread's
    // network namespace, which the other threads of the process do not share.
    match unsafe { libc::unshare(libc::CLONE_NEWNET) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Moves the calling thread into the network namespace `ns` (setns(2); std has no wrapper).
#[expect(unsafe_code, reason = "setns(2) is a C function; std has no wrapper")]
fn set_network(ns: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: the descriptor is open for the lifetime of `ns`, and setns with CLONE_NEWNET
    // changes only the calling thread's network namespace.
    match unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Runs `cmd` with no stdin and panics with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert_success(&format!("{cmd:?}"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with stdout and stderr unless `out` is a success.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd`, writing `stdin` (when given) to it, and returns its output whatever its status.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for the command")
}

/// A daemon process, stopped with SIGTERM (then SIGKILL after [`STOP_TIMEOUT`]) and waited
/// for when dropped.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with its output in `log`, and waits until `ready` holds.
    fn start(name: &'static str, mut cmd: Command, log: PathBuf, ready: impl Fn() -> bool) -> Daemon {
        let file = std::fs::File::create(&log).expect("create the daemon's log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut daemon = Daemon { name, child, log };
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{name} exited ({status}) before it answered:\n{}", daemon.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not answer within {START_TIMEOUT:?}:\n{}",
                daemon.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    /// The last lines of the daemon's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The PID of a child not yet waited for: it cannot have been reused.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                eprintln!("{} did not stop within {STOP_TIMEOUT:?} of SIGTERM: killing it", self.name);
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

/// `cmd` run in a private mount namespace where `etc_docker` is bind-mounted on `/etc/docker`.
fn with_etc_docker(etc_docker: &Path, program: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/docker && exec "$@""#,
    ])
    .arg(etc_docker)
    .arg(program);
    cmd
}

/// A containerd daemon with its root, state, sockets and plugin directory in a test directory.
pub struct Containerd {
    /// Its gRPC socket (`ctr --address`, `dockerd --containerd`).
    pub socket: PathBuf,
    _daemon: Daemon,
}

impl Containerd {
    /// Starts containerd with a minimal generated config under `dir` (created), in a private
    /// mount namespace so that the mounts it makes to unpack layers stay its own.
    pub fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).expect("create containerd's directory");
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {socket:?}\n[ttrpc]\n  address = {ttrpc:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = dir.join("root"),
            state = dir.join("state"),
            ttrpc = dir.join("containerd.sock.ttrpc"),
            opt = dir.join("opt"),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("write containerd's config");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "containerd", "--config"]).arg(&config_path);
        let ready_socket = socket.clone();
        let daemon = Daemon::start("containerd", cmd, dir.join("containerd.log"), move || {
            UnixStream::connect(&ready_socket).is_ok()
        });
        Containerd { socket, _daemon: daemon }
    }

    /// Runs `ctr --address <socket> <args>` and returns its output, whatever its status.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(args);
        run_with_stdin(&mut cmd, None)
    }

    /// [`Containerd::ctr`], panicking unless it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_success(&format!("ctr {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `<dir>/<host>/hosts.toml` trusting `ca` (a PEM file) for `https://<host>`, and
    /// returns `dir`, for `ctr --hosts-dir`.
    pub fn hosts_dir(dir: &Path, host: &str, ca: &Path) -> PathBuf {
        let host_dir = dir.join(host);
        std::fs::create_dir_all(&host_dir).expect("create the hosts directory");
        // The host entry is what ctr pushes to and pulls from; containerd 1.6 ignores a
        // top-level `ca` when it pushes.
        let toml = format!(
            "server = \"https://{host}\"\n[host.\"https://{host}\"]\n  \
             capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = {ca:?}\n"
        );
        std::fs::write(host_dir.join("hosts.toml"), toml).expect("write hosts.toml");
        dir.to_path_buf()
    }
}

/// A dockerd on top of a [`Containerd`], with its own socket, data, exec root and
/// `/etc/docker`, and a docker CLI configuration of its own.
pub struct Dockerd {
    /// The daemon's socket (`DOCKER_HOST=unix://…`).
    pub socket: PathBuf,
    /// The CLI's configuration directory (`DOCKER_CONFIG`), where `docker login` stores
    /// credentials.
    pub config: PathBuf,
    etc_docker: PathBuf,
    _daemon: Daemon,
}

impl Dockerd {
    /// Starts dockerd with the vfs storage driver (no overlay mounts), no bridge and no
    /// iptables rules, its state under `dir` (created), using `containerd`.
    pub fn start(dir: &Path, containerd: &Containerd) -> Dockerd {
        let etc_docker = dir.join("etc-docker");
        let config = dir.join("cli-config");
        for d in [&etc_docker.join("certs.d"), &config, &dir.join("data"), &dir.join("exec")] {
            std::fs::create_dir_all(d).expect("create dockerd's directories");
        }
        // The mount point for the private /etc/docker (Debian's docker.io may not ship it).
        std::fs::create_dir_all("/etc/docker").expect("create /etc/docker");
        let daemon_json = dir.join("daemon.json");
        std::fs::write(&daemon_json, "{}").expect("write daemon.json");
        let socket = dir.join("docker.sock");
        let mut cmd = with_etc_docker(&etc_docker, "dockerd");
        cmd.arg("--config-file")
            .arg(&daemon_json)
            .args(["--storage-driver", "vfs", "--iptables=false", "--ip-masq=false", "--bridge=none"])
            .arg("--containerd")
            .arg(&containerd.socket)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()));
        let ready_socket = socket.clone();
        let daemon = Daemon::start("dockerd", cmd, dir.join("dockerd.log"), move || ping(&ready_socket));
        Dockerd { socket, config, etc_docker, _daemon: daemon }
    }

    /// Makes docker trust `ca_pem` for the registry at `host` (`ip:port`):
    /// `/etc/docker/certs.d/<host>/ca.crt` as the daemon and the CLI see it.
    pub fn trust(&self, host: &str, ca_pem: &str) {
        let dir = self.etc_docker.join("certs.d").join(host);
        std::fs::create_dir_all(&dir).expect("create the certs.d directory");
        std::fs::write(dir.join("ca.crt"), ca_pem).expect("write ca.crt");
    }

    /// Runs the docker CLI on this daemon with `stdin` (when given), whatever its exit status.
    /// The legacy builder is used (`DOCKER_BUILDKIT=0`): it builds `COPY` layers without
    /// running a container, and needs no buildx plugin.
    pub fn docker(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = with_etc_docker(&self.etc_docker, "docker");
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", &self.config)
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        run_with_stdin(&mut cmd, stdin)
    }

    /// [`Dockerd::docker`] with no stdin, panicking unless it succeeds; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args, None);
        assert_success(&format!("docker {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ID of a local image (its config digest).
    pub fn image_id(&self, image: &str) -> String {
        self.docker_ok(&["image", "inspect", "--format", "{{.Id}}", image]).trim().to_string()
    }
}

/// Whether the Docker API answers `GET /_ping` on `socket`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// Rootful podman with its storage (vfs), run root, temporary files and auth file in a test
/// directory.
pub struct Podman {
    dir: PathBuf,
    /// The auth file that `podman login` writes (`REGISTRY_AUTH_FILE`).
    pub authfile: PathBuf,
    /// A `--cert-dir` trusting the test's CA.
    pub cert_dir: PathBuf,
}

impl Podman {
    /// Podman state under `dir` (created), trusting `ca_pem` through `--cert-dir`.
    pub fn new(dir: &Path, ca_pem: &str) -> Podman {
        std::fs::create_dir_all(dir).expect("create podman's directory");
        let cert_dir = super::tls::cert_dir(&dir.join("certs"), ca_pem);
        Podman { dir: dir.to_path_buf(), authfile: dir.join("auth.json"), cert_dir }
    }

    /// Runs `podman <args>` with this state and `stdin` (when given), whatever its exit status.
    /// `SSL_CERT_FILE` is the test's CA too, for `podman search`, which takes no `--cert-dir`.
    pub fn podman(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .env("REGISTRY_AUTH_FILE", &self.authfile)
            .env("SSL_CERT_FILE", self.cert_dir.join("ca.crt"))
            .env_remove("CONTAINERS_CONF")
            .env_remove("CONTAINERS_STORAGE_CONF");
        run_with_stdin(&mut cmd, stdin)
    }

    /// [`Podman::podman`] with no stdin, panicking unless it succeeds; returns stdout.
    pub fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args, None);
        assert_success(&format!("podman {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ID of a local image (its config digest, without `sha256:`).
    pub fn image_id(&self, image: &str) -> String {
        self.podman_ok(&["image", "inspect", "--format", "{{.Id}}", image]).trim().to_string()
    }
}
