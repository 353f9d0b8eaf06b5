//! `regctl-bench`: our registry server and CNCF distribution side by side, on loopback, with
//! the same storage kind, the same htpasswd file, the same workload and the same client.
//! `bench/run` builds it and runs it; see the README's "Benchmarks" section.
//!
//! Map:
//! - `workload.rs` (library): deterministic random blobs and images, the SHA-256 rate;
//! - `client.rs` (library): the one HTTP client (push, pull, manifest GET/HEAD, every read
//!   verified);
//! - `soak.rs` (library): the bounded soak the integration tests run (not part of the benchmark);
//! - `servers.rs`: starting `regctl serve`, `docker-registry`, moto and HAProxy; RSS from `/proc`;
//! - `phases.rs`: the measurements, each run against both servers, and the scale-out phase
//!   (ours only: 1 vs 3 servers behind HAProxy, the manifest cache on and off);
//! - `report.rs`: the table and the summary line (which is the last line of stdout).
//!
//! Progress goes to stderr, results to stdout.

mod phases;
mod report;
mod servers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use regctl_bench::client::Registry;
use regctl_bench::workload::{self, Sizes, Workload};

use crate::phases::{Contender, LatencyLimits};
use crate::report::Row;
use crate::servers::{Balancer, Common, S3Server, Server, Storage};

/// Where the tmpfs run keeps its storage (skipped when the machine has no such directory).
const TMPFS: &str = "/dev/shm";

/// A file in the work directory that marks it as ours, so a rerun may wipe it.
const MARKER: &str = ".regctl-bench";

/// Benchmarks `regctl serve` against distribution's `docker-registry`.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Our server: the `regctl-registry` binary, or `regctl` (both run it with `serve`); a
    /// release build.
    #[arg(long, default_value = "target/release/regctl-registry")]
    regctl: PathBuf,
    /// distribution 2.8's binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// The `moto_server` binary: with it, every phase also runs on S3 storage through it.
    #[arg(long)]
    moto_server: Option<PathBuf>,
    /// HAProxy's binary: with it and `--moto-server`, the scale-out phase runs (several of our
    /// servers on one bucket behind it; the manifest cache on and off).
    #[arg(long)]
    haproxy: Option<PathBuf>,
    /// htpasswd file (bcrypt) that both servers use.
    #[arg(long)]
    htpasswd: PathBuf,
    /// User in that file.
    #[arg(long)]
    user: String,
    /// Its password.
    #[arg(long)]
    password: String,
    /// Scratch directory for storage, configs and logs; wiped before and after the run.
    #[arg(long, default_value = "target/bench-work")]
    work: PathBuf,
    /// Total size of the large image's 4 layers, in MiB; also the size of the single big blob.
    #[arg(long, default_value_t = 1024)]
    large_mib: u64,
    /// Number of small images (3 layers of 16 to 512 KiB each).
    #[arg(long, default_value_t = 100)]
    small_images: usize,
    /// Number of concurrent blob pushers.
    #[arg(long, default_value_t = 16)]
    pushers: usize,
    /// Size of each concurrent pusher's blob, in MiB.
    #[arg(long, default_value_t = 32)]
    pusher_mib: u64,
    /// Latency phase: requests measured per method, concurrency and server, at most.
    #[arg(long, default_value_t = 3000)]
    latency_requests: usize,
    /// Latency phase: seconds per method, concurrency and server, at most.
    #[arg(long, default_value_t = 8.0)]
    latency_seconds: f64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regctl-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    fresh_dir(&args.work)?;
    let work_dir = std::fs::canonicalize(&args.work)?;
    let common = Common { htpasswd: std::fs::canonicalize(&args.htpasswd)?, work: work_dir.clone() };
    let sizes = Sizes {
        large_mib: args.large_mib,
        small_images: args.small_images,
        pushers: args.pushers,
        pusher_mib: args.pusher_mib,
    };
    let limits = LatencyLimits {
        requests: args.latency_requests,
        time: Duration::from_secs_f64(args.latency_seconds),
    };

    eprintln!("generating the workload...");
    let work = Arc::new(Workload::generate(&sizes));
    let sha_rate = workload::sha256_rate(&work.large.layers[0]) / 1e6;
    eprintln!("single-core SHA-256: {sha_rate:.0} MB/s");

    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("a tokio runtime")?;
    let mut rows = Vec::new();
    // tmpfs: the single-blob push once more, with storage in memory: what the upload path
    // does when the disk's write-back speed is out of the picture.
    // A fixed name with the marker file, like the work directory, so a run that failed
    // half-way leaves nothing in memory past the next run.
    let tmpfs = Path::new(TMPFS).is_dir().then(|| Path::new(TMPFS).join("regctl-bench"));
    let mut kinds = vec!["fs"];
    if args.moto_server.is_some() {
        kinds.push("s3");
    }
    if tmpfs.is_some() {
        kinds.push("tmpfs");
    }
    for kind in kinds {
        eprintln!("== {kind} storage");
        flush_filesystems();
        let dir = match (kind, &tmpfs) {
            ("tmpfs", Some(tmpfs)) => {
                fresh_dir(tmpfs)?;
                tmpfs.clone()
            }
            _ => work_dir.join(kind),
        };
        let s3 = match (&args.moto_server, kind) {
            (Some(binary), "s3") => Some(S3Server::start(binary, &work_dir)?),
            _ => None,
        };
        let storage = |who: &str| -> Result<Storage> {
            match &s3 {
                Some(s3) => s3.bucket(who),
                None => Ok(Storage::Fs(dir.join(who))),
            }
        };
        let ours =
            Server::regctl(&args.regctl, &storage("regctl")?, &common, &format!("regctl-{kind}"), &[])?;
        let theirs = Server::distribution(
            &args.distribution,
            &storage("distribution")?,
            &common,
            &format!("distribution-{kind}"),
        )?;
        let contender = |server: Server| {
            let client = Registry::new(&server.base, &args.user, &args.password);
            Contender { server, client }
        };
        let (mut ours, mut theirs) = (contender(ours), contender(theirs));
        runtime.block_on(check_auth(&[&ours, &theirs]))?;
        if kind == "tmpfs" {
            rows.extend(runtime.block_on(phases::single_blob(kind, &mut [&mut ours, &mut theirs], &work))?);
        } else {
            rows.extend(runtime.block_on(phases::run(kind, &mut ours, &mut theirs, &work, limits))?);
        }
        drop((ours, theirs, s3));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    if let (Some(moto), Some(haproxy)) = (&args.moto_server, &args.haproxy) {
        eprintln!("== scale-out: our servers on one bucket");
        let s3 = S3Server::start(moto, &work_dir)?;
        let storage = s3.bucket("regctl-scale")?;
        let start =
            |label: &str, env: &[(&str, &str)]| Server::regctl(&args.regctl, &storage, &common, label, env);
        let balance = |servers: &[&Server], label: &str| Balancer::start(haproxy, servers, &common, label);
        let credentials = (args.user.as_str(), args.password.as_str());
        let storage_cpu = || s3.cpu_seconds();
        rows.extend(runtime.block_on(phases::scale_out(
            start,
            balance,
            storage_cpu,
            credentials,
            &work,
            limits,
        ))?);
    }
    std::fs::remove_dir_all(&work_dir).with_context(|| format!("removing {}", work_dir.display()))?;

    print_report(&rows, sha_rate, work.big_blob.len, args.moto_server.is_some(), started.elapsed());
    Ok(())
}

/// Both servers must demand credentials, or the latency figures compare different work.
async fn check_auth(contenders: &[&Contender]) -> Result<()> {
    for c in contenders {
        let status = c.client.unauthenticated_ping().await?;
        if status != hyper::StatusCode::UNAUTHORIZED {
            bail!("{} answers GET /v2/ without credentials with {status}, not 401", c.client.base());
        }
    }
    Ok(())
}

/// Writes back what earlier runs (or phases) left dirty and commits their deletions, so that
/// neither server's first `fsync` pays for them. Best effort: `sync` only speeds things up.
fn flush_filesystems() {
    let _ = std::process::Command::new("sync").status();
}

/// Empties `dir`, which must be new or a previous run's (it holds the marker file).
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!("{} exists and is not a regctl-bench work directory; choose another --work", dir.display());
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "").with_context(|| format!("writing in {}", dir.display()))
}

fn print_report(rows: &[Row], sha_rate: f64, big_blob_bytes: u64, s3: bool, elapsed: Duration) {
    println!();
    println!(
        "regctl serve vs distribution 2.8 (docker-registry), loopback, bcrypt htpasswd, Basic auth on every request"
    );
    println!(
        "MB = 10^6 bytes; ratio = regctl / distribution; '+' where regctl is better, '-' where it is worse"
    );
    if s3 {
        println!(
            "s3 = both servers on one local moto server; both answer blob GETs with a redirect to it (distribution's default, regctl's `redirect = true`)"
        );
    }
    if rows.iter().any(|r| r.what.contains("cached | uncached")) {
        println!(
            "scale-out rows (ours only): 'A | B' names the two columns; 3 vs 1 servers behind HAProxy on one moto bucket (blobs through the servers), the manifest cache on vs off"
        );
    }
    println!();
    print!("{}", report::table(rows));
    println!();
    let fs_blob = rows.iter().find(|r| r.what.starts_with("fs push one "));
    if let Some(row) = fs_blob {
        println!(
            "single-core SHA-256 rate: {sha_rate:.0} MB/s; regctl's single-blob push (fs): {:.0} MB/s = {:.0} % of it",
            row.ours,
            100.0 * row.ours / sha_rate
        );
    }
    if let Some(row) = rows.iter().find(|r| r.what.starts_with("tmpfs push one ")) {
        println!(
            "regctl's single-blob push with storage on tmpfs (no disk write-back): {:.0} MB/s = {:.0} % of the SHA-256 rate",
            row.ours,
            100.0 * row.ours / sha_rate
        );
        let cpu = |what: &str| rows.iter().find(|r| r.what.starts_with(what)).map_or(f64::NAN, |r| r.ours);
        let (server, client) = (cpu("tmpfs   server CPU"), cpu("tmpfs   client CPU"));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wall = big_blob_bytes as f64 / 1e6 / row.ours;
        println!(
            "  that push: {wall:.2} s of wall time, {:.2} core-seconds on {cores} cores; regctl used {server:.2} s of CPU \
             (SHA-256 alone needs {:.2} s), the client {client:.2} s",
            wall * cores as f64,
            big_blob_bytes as f64 / 1e6 / sha_rate,
        );
    }
    if let Some(row) = rows.iter().find(|r| r.what.starts_with("s3 peak RSS while pushing")) {
        println!("regctl peak RSS while pushing the single large blob to S3: {:.1} MiB", row.ours);
    }
    println!("run time: {:.0} s", elapsed.as_secs_f64());
    println!("{}", report::summary(rows));
}
