//! The processes under test (`regctl serve`, distribution's `docker-registry`) and the local S3
//! server (moto): started on free loopback ports, watched through `/proc`, killed on drop.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Access key and secret given to both servers (moto accepts any).
const S3_KEY: (&str, &str) = ("testing", "testing");
/// The S3 region both servers are configured with.
const S3_REGION: &str = "us-east-1";

/// Where a server keeps its data.
#[derive(Clone)]
pub enum Storage {
    /// A directory of its own.
    Fs(PathBuf),
    /// A bucket of its own on the local S3 server.
    S3 {
        /// `http://127.0.0.1:PORT`.
        endpoint: String,
        /// The bucket.
        bucket: String,
    },
}

/// What every server gets in common.
pub struct Common {
    /// The htpasswd file (bcrypt entries).
    pub htpasswd: PathBuf,
    /// Where logs and configs go.
    pub work: PathBuf,
}

/// A server process, killed when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

/// Memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`, in KiB.
    pub rss_kib: u64,
    /// `RssAnon`: the part of `VmRSS` that is the process's own memory (heap, stacks), not
    /// pages of its executable and libraries shared with the page cache, in KiB.
    pub anon_kib: u64,
    /// `VmHWM` (peak RSS since start), in KiB.
    pub hwm_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

impl Server {
    /// Starts `regctl serve` (`binary`) on `storage`, logging warnings only; `env` is set
    /// last (e.g. `REGISTRY_STORAGE_S3_REDIRECT`).
    pub fn regctl(
        binary: &Path,
        storage: &Storage,
        common: &Common,
        label: &str,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let addr = free_addr()?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve").arg("--addr").arg(addr.to_string()).arg("--htpasswd").arg(&common.htpasswd);
        clear_config_env(&mut cmd);
        cmd.env("RUST_LOG", "warn");
        cmd.envs(unit_environment());
        match storage {
            Storage::Fs(root) => {
                cmd.arg("--root").arg(root);
            }
            Storage::S3 { endpoint, bucket } => {
                cmd.envs([
                    ("REGISTRY_STORAGE", "s3"),
                    ("REGISTRY_STORAGE_S3_BUCKET", bucket.as_str()),
                    ("REGISTRY_STORAGE_S3_REGION", S3_REGION),
                    ("REGISTRY_STORAGE_S3_REGIONENDPOINT", endpoint.as_str()),
                    ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
                    ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/registry"),
                    // Like distribution by default: blob GETs redirect to S3.
                    ("REGISTRY_STORAGE_S3_REDIRECT", "true"),
                    ("AWS_ACCESS_KEY_ID", S3_KEY.0),
                    ("AWS_SECRET_ACCESS_KEY", S3_KEY.1),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                ]);
            }
        }
        cmd.envs(env.iter().copied());
        Server::spawn(cmd, addr, &common.work.join(format!("{label}.log")))
    }

    /// Starts distribution (`binary serve CONFIG`) on `storage`, with the same htpasswd file,
    /// logging warnings only and no access log.
    pub fn distribution(binary: &Path, storage: &Storage, common: &Common, label: &str) -> Result<Server> {
        let addr = free_addr()?;
        let quote = |s: &str| serde_json::Value::from(s).to_string(); // JSON strings are YAML
        let storage_yaml = match storage {
            Storage::Fs(root) => format!("  filesystem:\n    rootdirectory: {}\n", quote(&path_str(root)?)),
            Storage::S3 { endpoint, bucket } => format!(
                "  s3:\n    region: {}\n    bucket: {}\n    regionendpoint: {}\n    forcepathstyle: true\n    \
                 rootdirectory: /registry\n    accesskey: {}\n    secretkey: {}\n    secure: false\n",
                quote(S3_REGION),
                quote(bucket),
                quote(endpoint),
                quote(S3_KEY.0),
                quote(S3_KEY.1),
            ),
        };
        let yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n{storage_yaml}  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: regctl-bench-secret\n\
             auth:\n  htpasswd:\n    realm: regctl-bench\n    path: {htpasswd}\n",
            addr = quote(&addr.to_string()),
            htpasswd = quote(&path_str(&common.htpasswd)?),
        );
        let config = common.work.join(format!("{label}.yml"));
        fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve").arg(&config);
        clear_config_env(&mut cmd);
        Server::spawn(cmd, addr, &common.work.join(format!("{label}.log")))
    }

    fn spawn(mut cmd: Command, addr: SocketAddr, log: &Path) -> Result<Server> {
        let log_file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
        let child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let mut server = Server { base: format!("http://{addr}"), addr, child, log: log.to_path_buf() };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited ({status}); its log, {}:\n{}", self.log.display(), self.log_tail());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the server did not listen on {} within 30 s; its log:\n{}", self.addr, self.log_tail())
    }

    /// The last lines of the server's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Current and peak resident memory.
    pub fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            let line =
                status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{name} in {path}"))?;
            let kib = line.split_whitespace().nth(1).with_context(|| format!("a value in {line:?}"))?;
            kib.parse().with_context(|| format!("a number in {line:?}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            anon_kib: field("RssAnon:")?,
            hwm_kib: field("VmHWM:")?,
            threads: field("Threads:")?,
        })
    }

    /// CPU time (user and system) the server has used since it started.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&self.child.id().to_string())
    }

    /// Whether the process is still running (a crash under load would otherwise look slow).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited ({status}); its log:\n{}", self.log_tail());
        }
        Ok(())
    }
}

/// CPU time (user and system) this process has used so far.
pub fn own_cpu_seconds() -> Result<f64> {
    cpu_seconds("self")
}

/// CPU time of process `pid` from `/proc/PID/stat`: every thread, ended ones included.
fn cpu_seconds(pid: &str) -> Result<f64> {
    /// `USER_HZ`: the unit of `/proc`'s times, 100 on every Linux architecture.
    const TICKS_PER_SECOND: f64 = 100.0;
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The fields after the command name, which is in parentheses and may hold spaces: state
    // is the first of them (field 3), utime and stime the 12th and 13th (fields 14 and 15).
    let after_name =
        stat.rsplit_once(')').map(|(_, rest)| rest).with_context(|| format!("parsing {path}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        let field = fields.get(i).with_context(|| format!("field {} of {path}", i + 3))?;
        Ok(field.parse::<u64>().with_context(|| format!("a number in {path}"))? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local S3 server: moto (`moto_server`). s3s-fs would be faster, but distribution 2.8
/// resumes every upload with `ListMultipartUploads`, which s3s-fs 0.14 does not implement.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    addr: SocketAddr,
    process: Server,
}

impl S3Server {
    /// Starts `moto_server` (`binary`), logging to the work directory.
    pub fn start(binary: &Path, work: &Path) -> Result<S3Server> {
        let addr = free_addr()?;
        let mut cmd = Command::new(binary);
        cmd.args(["-H", "127.0.0.1", "-p", &addr.port().to_string()]);
        let process = Server::spawn(cmd, addr, &work.join("moto.log"))?;
        Ok(S3Server { endpoint: process.base.clone(), addr, process })
    }

    /// CPU time moto has used since it started.
    pub fn cpu_seconds(&self) -> Result<f64> {
        self.process.cpu_seconds()
    }

    /// Creates an empty bucket (moto takes an unsigned path-style `PUT /BUCKET`).
    pub fn bucket(&self, name: &str) -> Result<Storage> {
        let mut stream = TcpStream::connect(self.addr).context("connecting to moto")?;
        let request = format!(
            "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).context("creating a bucket")?;
        let mut response = String::new();
        stream.read_to_string(&mut response).context("creating a bucket")?;
        let status = response.lines().next().unwrap_or_default();
        if !status.contains(" 200 ") {
            bail!("creating bucket {name}: {status}");
        }
        Ok(Storage::S3 { endpoint: self.endpoint.clone(), bucket: name.to_string() })
    }
}

/// HAProxy (`binary`) balancing round-robin over some of our servers, with keep-alive
/// connections to them, as an operator runs it in front of several servers on one bucket.
pub struct Balancer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _process: Server,
}

impl Balancer {
    /// Starts HAProxy in front of `servers`; its configuration and log go to the work directory.
    pub fn start(binary: &Path, servers: &[&Server], common: &Common, label: &str) -> Result<Balancer> {
        let addr = free_addr()?;
        let mut config = format!(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n\
             frontend registry\n  bind {addr}\n  default_backend servers\n\
             backend servers\n  balance roundrobin\n"
        );
        for (i, server) in servers.iter().enumerate() {
            config.push_str(&format!("  server s{i} {}\n", server.addr));
        }
        let file = common.work.join(format!("{label}.cfg"));
        fs::write(&file, config).with_context(|| format!("writing {}", file.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-db").arg("-f").arg(&file);
        let process = Server::spawn(cmd, addr, &common.work.join(format!("{label}.log")))?;
        Ok(Balancer { base: process.base.clone(), _process: process })
    }
}

/// A loopback port nobody listens on right now.
fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(listener.local_addr()?)
}

/// The `Environment=` settings of the systemd unit `regctl deploy` installs: our server runs
/// here as it runs on the instance.
fn unit_environment() -> Vec<(&'static str, &'static str)> {
    include_str!("../../../templates/regctl-registry.service")
        .lines()
        .filter_map(|line| line.strip_prefix("Environment=")?.split_once('='))
        .collect()
}

/// Both servers read `REGISTRY_*` variables as configuration, and their AWS SDKs `AWS_*` ones
/// (distribution's refuses to start with `AWS_CA_BUNDLE` and a plain HTTP endpoint): none may
/// leak in from outside.
fn clear_config_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("REGISTRY_") || key_str.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str().map(str::to_string).with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_server_gets_the_units_environment() {
        assert!(unit_environment().contains(&("MALLOC_ARENA_MAX", "2")), "{:?}", unit_environment());
    }
}
