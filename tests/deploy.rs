//! `regctl deploy`, the user commands and `logs`, against a real OpenSSH server (Debian's
//! `openssh-server`) started on a loopback port with a generated host key and user key. The
//! "instance" is a scratch directory (`--remote-root`); systemd is the only stand-in: a
//! `systemctl` script on the SSH session's PATH that runs the unit's `ExecStart` line in the
//! background (and a `journalctl` that shows its output). SSH, the upload, the config, the
//! htpasswd file, the server process, S3 (moto) and HTTPS (a test CA) are real, and skopeo
//! pushes and pulls through the deployed registry with a user made by `add-user`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::layout::{self, ImageBuilder, MIB};
use crate::util::moto::Moto;
use crate::util::tls::{self, TestCa};
use crate::util::{free_addr, in_ci, require_tool, skopeo, wait_for_port};

const SSHD: &str = "/usr/sbin/sshd";
const DOMAIN: &str = "localhost";
const ADMIN_PASSWORD: &str = "first-user-Pa55word";
const BOB_PASSWORD: &str = "bob's secret: 7Hq!x";

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The registry server the `systemctl` stand-in started, killed when dropped.
struct Service {
    pidfile: PathBuf,
}

impl Service {
    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(&self.pidfile).ok().map(|p| p.trim().to_string())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg(&pid).status();
        }
    }
}

/// sshd on loopback with its scratch directory: keys, config, stand-ins, the instance root.
/// Fields drop in order: the service and sshd are stopped before the directory goes.
struct Instance {
    service: Service,
    sshd: Proc,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
}

impl Instance {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The instance's root directory (`--remote-root`).
    fn root(&self) -> PathBuf {
        self.path("instance")
    }

    fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// How often the stand-in started the service.
    fn starts(&self) -> usize {
        std::fs::read_to_string(self.path("standin/regctl-registry.starts")).map_or(0, |s| s.lines().count())
    }

    /// What the service wrote.
    fn service_log(&self) -> String {
        std::fs::read_to_string(self.path("standin/regctl-registry.log")).unwrap_or_default()
    }

    /// The SSH options every command takes.
    fn ssh_args(&self) -> Vec<String> {
        [
            "--host",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--user",
            &self.user,
            "--identity",
            &self.path("user_key").display().to_string(),
            "--known-hosts",
            &self.known_hosts().display().to_string(),
            "--remote-root",
            &self.root().display().to_string(),
            // The test must not add a system account to the machine it runs on.
            "--service-user",
            &self.user,
            "--state-file",
            &self.path("regctl.toml").display().to_string(),
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Starts sshd, or returns `None` locally when OpenSSH is missing (CI fails instead).
    fn start(env: &[(&str, &str)]) -> Option<Instance> {
        if !Path::new(SSHD).is_file() {
            assert!(
                !in_ci(),
                "{SSHD} is required in CI (apt-get install openssh-server; tests/run-all does)"
            );
            eprintln!("SKIPPED: {SSHD} is not installed; install it with: apt-get install openssh-server");
            return None;
        }
        if !require_tool("ssh-keygen", "apt-get install openssh-client") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let p = |rel: &str| dir.path().join(rel);
        for key in ["host_key", "user_key", "other_host_key"] {
            keygen(&p(key));
        }
        std::fs::copy(p("user_key.pub"), p("authorized_keys")).expect("authorized_keys");
        std::fs::create_dir_all(p("bin")).expect("bin");
        std::fs::create_dir_all(p("standin")).expect("standin");
        std::fs::create_dir_all(p("instance")).expect("instance root");
        let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
            .expect("a user name")
            .trim()
            .to_string();
        let root = p("instance").display().to_string();
        let state = p("standin").display().to_string();
        write_script(&p("bin/systemctl"), &SYSTEMCTL.replace("@STATE@", &state).replace("@ROOT@", &root));
        write_script(&p("bin/journalctl"), &JOURNALCTL.replace("@STATE@", &state));

        let addr = free_addr();
        let path =
            format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", p("bin").display());
        let mut setenv = format!("PATH={path}");
        for (k, v) in env {
            setenv.push_str(&format!(" {k}={v}"));
        }
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {pid}\n\
             AuthorizedKeysFile {authorized}\nPermitRootLogin yes\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             AllowAgentForwarding no\nX11Forwarding no\nPrintMotd no\nSetEnv {setenv}\n",
            port = addr.port(),
            host_key = p("host_key").display(),
            pid = p("sshd.pid").display(),
            authorized = p("authorized_keys").display(),
        );
        std::fs::write(p("sshd_config"), config).expect("sshd_config");
        // sshd running as root needs its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let sshd = spawn_sshd(dir.path());
        wait_for_port(addr, Duration::from_secs(20));
        let service = Service { pidfile: p("standin/regctl-registry.pid") };
        Some(Instance { service, sshd, dir, port: addr.port(), user })
    }
}

/// Runs sshd with the configuration in `dir`, logging to `dir/sshd.log`.
fn spawn_sshd(dir: &Path) -> Proc {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("sshd.log")).expect("sshd.log");
    let child = Command::new(SSHD)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sshd");
    Proc(child)
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "regctl-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// systemd's stand-in: `ExecStart` of the unit in the background, its pid in a file, a line
/// per start (so a test can tell whether a deploy restarted the service).
const SYSTEMCTL: &str = include_str!("standin/systemctl");

/// journald's stand-in: the service's output file.
const JOURNALCTL: &str = include_str!("standin/journalctl");

/// Runs regctl with `args`, `stdin` as its input, and no SSH agent.
fn regctl(args: &[String], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regctl"))
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start regctl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for regctl")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(args: &[String], stdin: &str) -> String {
    let out = regctl(args, stdin);
    assert!(out.status.success(), "regctl {} failed:\n{}", args.join(" "), text(&out));
    text(&out)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Status of `GET /v2/` with Basic credentials, over HTTPS trusting `ca`.
fn v2_status(port: u16, ca: &str, user: &str, password: &str) -> u16 {
    let url = format!("https://{DOMAIN}:{port}/v2/");
    tls::https_client(ca).get(&url).basic_auth(user, Some(password)).send().map_or(0, |r| r.status().as_u16())
}

/// Scans every process's command line until stopped; returns the ones containing a needle.
fn watch_cmdlines(needles: Vec<String>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if needles.iter().any(|n| cmdline.contains(n.as_str())) {
                    seen.push(cmdline);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

/// The whole life of a deployment on one instance: first deploy (host key trusted on first use
/// and recorded, binary uploaded, first user created, service started), a second deploy that
/// changes nothing, users added and removed while the server runs, an image pushed and pulled
/// by skopeo over verified HTTPS with S3 (moto) storage, logs, hashed known_hosts entries, an
/// SSH agent, and a changed host key refused.
#[test]
fn deploy_users_and_host_keys_over_real_ssh() {
    let Some(moto) = Moto::start() else { return };
    if !skopeo::available() {
        return;
    }
    let aws_env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let Some(instance) = Instance::start(&aws_env) else { return };
    let bucket = moto.create_bucket();
    let work = instance.path("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let ca = TestCa::new(&work, "deploy-ca");
    let (cert, key) = (work.join("cert.pem"), work.join("key.pem"));
    ca.issue(&[DOMAIN], &cert, &key);
    let registry = free_addr();
    let ssh = instance.ssh_args();
    let mut deploy = strings(&["deploy"]);
    deploy.extend(ssh.iter().cloned());
    deploy.extend(strings(&[
        "--domain",
        DOMAIN,
        "--listen",
        &registry.to_string(),
        "--bucket",
        &bucket,
        "--region",
        "us-east-1",
        "--s3-endpoint",
        &moto.endpoint,
        "--immutable-tag",
        "v*",
        "--tls-cert",
        &cert.display().to_string(),
        "--tls-key",
        &key.display().to_string(),
        "--ca-file",
        &ca.path.display().to_string(),
        "--wait",
        "60",
        "--anonymous-pull",
        "--password-stdin",
    ]));

    // Without a terminal and without --password-stdin, the first deploy cannot get the first
    // user's password: it stops with a clear error before changing anything. Its connection
    // already met the unknown host key: trusted on first use and recorded.
    let no_password: Vec<String> = deploy.iter().filter(|a| *a != "--password-stdin").cloned().collect();
    let out = regctl(&no_password, "");
    let refused = text(&out);
    assert!(!out.status.success(), "{refused}");
    assert!(refused.contains("--password-stdin"), "{refused}");
    assert!(refused.contains("First connection to [127.0.0.1]"), "{refused}");
    let root = instance.root();
    assert!(
        !root.join("usr/local/bin/regctl-registry").exists(),
        "nothing is installed without a first user"
    );
    let known = std::fs::read_to_string(instance.known_hosts()).expect("known_hosts written");
    assert!(
        known.trim_start().starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", instance.port)),
        "{known}"
    );
    let host_pub = std::fs::read_to_string(instance.path("host_key.pub")).expect("host key");
    assert!(
        known.contains(host_pub.split_whitespace().nth(1).expect("key")),
        "the server's own key is recorded"
    );

    // First deploy: known host key accepted, everything installed, first user created.
    let first = ok(&deploy, &format!("{ADMIN_PASSWORD}\n"));
    assert!(!first.contains("First connection"), "{first}");
    assert!(first.contains("created the first user, admin"), "{first}");
    assert_eq!(instance.starts(), 1, "{first}");
    // The server alone (`regctl-registry`, built beside `regctl`) is what deploy installs.
    let deployed = root.join("usr/local/bin/regctl-registry");
    let server = Path::new(env!("CARGO_BIN_EXE_regctl")).with_file_name("regctl-registry");
    assert_eq!(
        layout::sha256_file(&deployed),
        layout::sha256_file(&server),
        "the server binary arrived intact"
    );
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/regctl-registry.service")).expect("unit");
    for line in [
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "Environment=MALLOC_ARENA_MAX=2",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(line), "{line} missing from the unit:\n{unit}");
    }
    assert!(unit.contains(&format!("ReadWritePaths={}/var/lib/regctl", root.display())), "{unit}");
    let config = std::fs::read_to_string(root.join("etc/regctl/config.toml")).expect("config");
    assert!(config.contains(&format!("bucket = \"{bucket}\"")), "{config}");
    assert!(config.contains("immutable = [\"v*\"]"), "issue 21: the tag rules are deployed: {config}");
    assert!(config.contains("[auth]\nanonymous = \"pull\"\n"), "{config}");
    let htpasswd = root.join("etc/regctl/htpasswd");
    let mode = std::fs::metadata(&htpasswd).expect("htpasswd").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let throughput = first.lines().find(|l| l.starts_with("Upload: ")).expect("upload line").to_string();
    eprintln!("binary upload over loopback SSH: {throughput}");
    assert_eq!(v2_status(registry.port(), &ca.pem, "admin", ADMIN_PASSWORD), 200);
    assert_eq!(v2_status(registry.port(), &ca.pem, "admin", "wrong"), 401);
    let pid = instance.service.pid().expect("the service runs");

    // Second deploy: nothing uploaded, written or restarted; no password
    // is asked (stdin is empty).
    let second = ok(&deploy, "");
    assert!(!second.contains("First connection"), "{second}");
    assert!(second.contains("up to date (same SHA-256)"), "{second}");
    assert!(second.contains("Nothing to change"), "{second}");
    assert!(!second.contains("Upload: "), "{second}");
    assert_eq!(instance.starts(), 1, "a redeploy of the same build must not restart");
    assert_eq!(instance.service.pid().as_deref(), Some(pid.as_str()));

    // add-user while the server runs; no process ever shows the password or a hash.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher =
        watch_cmdlines(vec![BOB_PASSWORD.to_string(), "$2b$".to_string(), "$2y$".to_string()], stop.clone());
    let mut add = strings(&["add-user", "bob", "--password-stdin", "--repo", "deploy/*"]);
    add.extend(ssh.iter().cloned());
    let added = ok(&add, &format!("{BOB_PASSWORD}\n"));
    stop.store(true, Ordering::Relaxed);
    let leaked = watcher.join().expect("watcher");
    assert!(leaked.is_empty(), "a command line held a password or hash: {leaked:?}");
    assert!(added.contains("User bob created"), "{added}");
    let mut list = strings(&["list-users"]);
    list.extend(ssh.iter().cloned());
    let listed = ok(&list, "");
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().take(4).collect()).collect();
    // The first user administers (delete everywhere); add-user's default is push everywhere.
    assert_eq!(rows, [["admin", "user", "delete", "**"], ["bob", "user", "push", "deploy/*"]], "{listed}");
    wait_for_status(registry.port(), &ca.pem, "bob", BOB_PASSWORD, 200);

    // skopeo pushes and pulls through the deployed server (S3 on moto) as bob.
    let certs = tls::cert_dir(&work.join("certs"), &ca.pem);
    let certs_arg = certs.display().to_string();
    let creds = format!("bob:{BOB_PASSWORD}");
    let image = ImageBuilder::new(61, &[2 * MIB, 1000]).write(&work.join("image"), "v1");
    let remote = format!("docker://{DOMAIN}:{}/deploy/app:v1", registry.port());
    let mut push =
        vec!["copy", "--dest-tls-verify=true", "--dest-cert-dir", &certs_arg, "--dest-creds", &creds];
    push.extend_from_slice(skopeo::EXACT);
    let source = image.oci_ref();
    push.extend_from_slice(&[&source, &remote]);
    tls::skopeo_verified(&push, &certs);
    let back = work.join("back");
    let dest = format!("oci:{}:v1", back.display());
    let mut pull = vec!["copy", "--src-tls-verify=true", "--src-cert-dir", &certs_arg, "--src-creds", &creds];
    pull.extend_from_slice(skopeo::EXACT);
    pull.extend_from_slice(&[&remote, &dest]);
    tls::skopeo_verified(&pull, &certs);
    layout::assert_same_blobs(&image.dir.join("blobs/sha256"), &back.join("blobs/sha256"));

    // remove-user takes effect without a restart.
    let mut remove = strings(&["remove-user", "bob"]);
    remove.extend(ssh.iter().cloned());
    assert!(ok(&remove, "").contains("User bob removed"));
    wait_for_status(registry.port(), &ca.pem, "bob", BOB_PASSWORD, 401);
    assert_eq!(v2_status(registry.port(), &ca.pem, "admin", ADMIN_PASSWORD), 200);
    assert_eq!(instance.starts(), 1, "user changes must not restart the server");
    assert_eq!(instance.service.pid().as_deref(), Some(pid.as_str()));

    // logs: the service's output, over SSH.
    let mut logs = strings(&["logs", "-n", "200"]);
    logs.extend(ssh.iter().cloned());
    let log = ok(&logs, "");
    assert!(log.contains("htpasswd file reloaded"), "{log}");

    // Passwords never reach a log.
    for (what, content) in [
        ("the service log", instance.service_log()),
        ("sshd's log", std::fs::read_to_string(instance.path("sshd.log")).unwrap_or_default()),
        ("the systemctl calls", std::fs::read_to_string(instance.path("standin/calls")).unwrap_or_default()),
        ("regctl's output", format!("{refused}{first}{second}{added}{log}")),
    ] {
        for password in [ADMIN_PASSWORD, BOB_PASSWORD] {
            assert!(!content.contains(password), "{what} contains a password");
        }
    }

    // Hashed known_hosts entries are recognised.
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(instance.known_hosts())
        .output()
        .expect("ssh-keygen -H");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hashed = std::fs::read_to_string(instance.known_hosts()).expect("known_hosts");
    assert!(hashed.trim_start().starts_with("|1|"), "{hashed}");
    let listed = ok(&list, "");
    assert!(!listed.contains("First connection"), "a hashed entry must count as known: {listed}");
    assert_eq!(
        std::fs::read_to_string(instance.known_hosts()).expect("known_hosts"),
        hashed,
        "nothing added"
    );

    // The SSH agent's keys are used when no --identity is given.
    if require_tool("ssh-agent", "apt-get install openssh-client") {
        let sock = instance.path("agent.sock");
        let agent = Proc(
            Command::new("ssh-agent")
                .arg("-D")
                .arg("-a")
                .arg(&sock)
                .stdout(Stdio::null())
                .spawn()
                .expect("ssh-agent"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let added = Command::new("ssh-add")
            .arg(instance.path("user_key"))
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .expect("ssh-add");
        assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
        let mut via_agent: Vec<String> = Vec::new();
        let mut skip = false;
        for arg in &list {
            if skip {
                skip = false;
            } else if arg == "--identity" {
                skip = true;
            } else {
                via_agent.push(arg.clone());
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_regctl"))
            .args(&via_agent)
            .env("SSH_AUTH_SOCK", &sock)
            .env("HOME", instance.path("work"))
            .stdin(Stdio::null())
            .output()
            .expect("regctl");
        assert!(out.status.success(), "list-users with the agent's key:\n{}", text(&out));
        drop(agent);
    }

    // A changed host key is refused, and nothing runs.
    let other = std::fs::read_to_string(instance.path("other_host_key.pub")).expect("other key");
    let mut fields = other.split_whitespace();
    let (algorithm, key) = (fields.next().expect("algorithm"), fields.next().expect("key"));
    std::fs::write(instance.known_hosts(), format!("[127.0.0.1]:{} {algorithm} {key}\n", instance.port))
        .expect("write");
    let out = regctl(&list, "");
    assert!(!out.status.success(), "a changed host key must be refused");
    let message = text(&out);
    assert!(message.contains("has CHANGED"), "{message}");
    assert!(message.contains("ssh-keygen -R"), "{message}");
}

fn wait_for_status(port: u16, ca: &str, user: &str, password: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = v2_status(port, ca, user, password);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "GET /v2/ as {user}: {got}, expected {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Without a terminal and without --password-stdin, the first deploy stops with a clear error
/// before changing anything it would need a user for; a local htpasswd is edited with --file.
#[test]
fn first_user_needs_a_password_and_local_files_are_edited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    let arg = |s: &str| s.to_string();
    let add = vec![
        arg("add-user"),
        arg("carol"),
        arg("--password-stdin"),
        arg("--file"),
        file.display().to_string(),
    ];
    let out = ok(&add, "pw-carol\n");
    assert!(out.contains("User carol created"), "{out}");
    let again = ok(&add, "pw-carol-2\n");
    assert!(again.contains("User carol updated"), "{again}");
    let text_now = std::fs::read_to_string(&file).expect("htpasswd");
    let hash = text_now.trim().strip_prefix("carol:").expect("an entry");
    assert!(bcrypt_verify("pw-carol-2", hash), "{text_now}");
    assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);
    let list = vec![arg("list-users"), arg("--file"), file.display().to_string()];
    assert!(ok(&list, "").starts_with("carol  user   push    **  never expires\n"), "{}", ok(&list, ""));
    let remove = vec![arg("remove-user"), arg("carol"), arg("--file"), file.display().to_string()];
    assert!(ok(&remove, "").contains("removed"));
    assert_eq!(ok(&list, ""), "");
    // bcrypt reads 72 bytes: a longer password is refused, not silently cut, and nothing is written.
    let long = format!("{}\n", "p".repeat(73));
    let out = regctl(&add, &long);
    assert!(!out.status.success(), "a 73-byte password was accepted");
    assert!(text(&out).contains("72 bytes"), "{}", text(&out));
    assert_eq!(ok(&list, ""), "", "the refused user was not written");
    // ...and a password of exactly 72 bytes is taken whole: the server accepts it.
    let longest = "p".repeat(72);
    ok(&add, &format!("{longest}\n"));
    let text_now = std::fs::read_to_string(&file).expect("htpasswd");
    let hash = text_now.trim().strip_prefix("carol:").expect("an entry");
    assert!(bcrypt_verify(&longest, hash), "{text_now}");
    assert!(!bcrypt_verify(&"p".repeat(71), hash), "every one of the 72 bytes counts");
    ok(&remove, "");
    // Without a terminal, a prompt is impossible: the error says what to do.
    let prompt = vec![arg("add-user"), arg("dave"), arg("--file"), file.display().to_string()];
    let out = regctl(&prompt, "");
    assert!(!out.status.success());
    assert!(text(&out).contains("--password-stdin"), "{}", text(&out));
}

/// Checks a bcrypt hash with the registry server itself: `regctl serve` with this htpasswd.
fn bcrypt_verify(password: &str, hash: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, format!("u:{hash}\n")).expect("write");
    let server = crate::util::Server::start_with(&["--htpasswd", &file.display().to_string()]);
    let status = crate::util::http()
        .get(server.url("/v2/"))
        .basic_auth("u", Some(password))
        .send()
        .map_or(0, |r| r.status().as_u16());
    status == 200
}

/// A fresh instance's sshd refuses connections for a while after EC2 says "running": the SSH
/// commands try again (up to `--connect-wait`) instead of failing on the first refusal. Here
/// sshd is stopped and started again on its port 3 s after the command begins.
#[test]
fn ssh_commands_wait_for_an_sshd_that_is_still_starting() {
    let Some(mut instance) = Instance::start(&[]) else { return };
    let _ = instance.sshd.0.kill();
    let _ = instance.sshd.0.wait();
    let dir = instance.dir.path().to_path_buf();
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        spawn_sshd(&dir)
    });
    let args = [strings(&["list-users"]), instance.ssh_args()].concat();
    let out = regctl(&args, "");
    instance.sshd = later.join().expect("sshd restarted");
    let said = text(&out);
    assert!(said.contains("not answering yet"), "the wait is reported:\n{said}");
    assert!(out.status.success(), "list-users failed although sshd came up within the wait:\n{said}");

    // A wait that ends before sshd is back fails with the connection error, promptly.
    let _ = instance.sshd.0.kill();
    let _ = instance.sshd.0.wait();
    let args = [strings(&["list-users", "--connect-wait", "2"]), instance.ssh_args()].concat();
    let started = std::time::Instant::now();
    let out = regctl(&args, "");
    assert!(!out.status.success());
    assert!(text(&out).contains("cannot connect"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(30), "gave up after {:?}", started.elapsed());
}

/// The `kid` of the token `/token` issues to `user` of `server`: which key signed it.
fn token_kid(server: &crate::util::Server, (user, password): (&str, &str)) -> String {
    use base64::Engine as _;
    let body: serde_json::Value = crate::util::http()
        .get(server.url("/token?scope=repository:app:pull"))
        .basic_auth(user, Some(password))
        .send()
        .expect("GET /token")
        .json()
        .expect("JSON");
    let token = body["token"].as_str().unwrap_or_else(|| panic!("no token in {body}"));
    let header = token.split('.').next().expect("a header");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64url");
    serde_json::from_slice::<serde_json::Value>(&json).expect("JSON")["kid"]
        .as_str()
        .expect("a kid")
        .to_string()
}

/// `rotate-token-key --instance` over real SSH on an instance with filesystem storage: the
/// instance's configuration names the storage root, the key ring there is replaced (0600,
/// the previous key kept for its grace), and a server on that storage signs with the new key
/// within seconds while a token of the old one still verifies.
#[test]
fn rotate_token_key_over_ssh_replaces_the_key_on_the_instances_disk() {
    if !crate::auth::htpasswd_available() {
        return;
    }
    let Some(instance) = Instance::start(&[]) else { return };
    let root = instance.root();
    let data = root.join("var/lib/regctl/data");
    std::fs::create_dir_all(root.join("etc/regctl")).expect("the config directory");
    let config = format!("[storage.filesystem]\nrootdirectory = \"{}\"\n", data.display());
    std::fs::write(root.join("etc/regctl/config.toml"), config).expect("the instance's config");
    let htpasswd = instance.path("htpasswd");
    crate::auth::htpasswd_set(&htpasswd, "admin", ADMIN_PASSWORD, true);
    let server = crate::util::Server::start_on(&data, &["--htpasswd", htpasswd.to_str().expect("UTF-8")]);
    let admin = ("admin", ADMIN_PASSWORD);
    let before = token_kid(&server, admin);
    let old_token: serde_json::Value = crate::util::http()
        .get(server.url("/token"))
        .basic_auth(admin.0, Some(admin.1))
        .send()
        .expect("GET /token")
        .json()
        .expect("JSON");
    let old_token = old_token["token"].as_str().expect("a token").to_string();

    let mut rotate = strings(&["rotate-token-key", "--instance"]);
    rotate.extend(instance.ssh_args());
    let said = ok(&rotate, "");
    assert!(said.contains("token signing key rotated"), "{said}");
    let keys = data.join("regctl/token/keys.json");
    let ring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keys).expect("keys.json")).expect("JSON");
    assert_eq!(
        ring["previous"]["id"],
        before.as_str(),
        "the old key is kept for its grace: {}",
        ring["previous"]["id"]
    );
    let new = ring["current"]["id"].as_str().expect("a current key").to_string();
    assert_ne!(new, before);
    assert_eq!(std::fs::metadata(&keys).expect("keys.json").permissions().mode() & 0o777, 0o600);

    let deadline = Instant::now() + Duration::from_secs(15);
    while token_kid(&server, admin) != new {
        assert!(Instant::now() < deadline, "the server still signs with {before} 15 s after the rotation");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = crate::util::http()
        .get(server.url("/v2/"))
        .bearer_auth(&old_token)
        .send()
        .expect("GET /v2/")
        .status();
    assert_eq!(status, 200, "a token of the previous key still verifies");
}
