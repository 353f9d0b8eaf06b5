//! The measurements. Each phase runs against our server, then against distribution, with the
//! same client and the same data, and yields rows of the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use regctl_bench::client::Registry;
use regctl_bench::workload::{Blob, Image, Workload};

use crate::report::{Better, Group, Row};
use crate::servers::{self, Balancer, Server};

/// One server under test and the client pointed at it.
pub struct Contender {
    /// The process.
    pub server: Server,
    /// The client.
    pub client: Registry,
}

/// Limits of the latency phase: each cell (method × concurrency) stops at whichever comes first.
#[derive(Clone, Copy)]
pub struct LatencyLimits {
    /// Requests measured per cell.
    pub requests: usize,
    /// Time per cell.
    pub time: Duration,
}

/// Concurrent image pushes or pulls in the many-small-images phase (docker pushes and pulls
/// three layers at a time; a CI job pushes several images).
const SMALL_IMAGE_CONCURRENCY: usize = 4;
/// Concurrent manifest clients of the latency phase.
const LATENCY_CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Time given to a fresh server before its first memory reading.
const STARTUP: Duration = Duration::from_secs(2);
/// Time given to a server, its clients gone, before the after-workload memory reading: past
/// tokio's 10 s keep-alive of idle blocking threads (Go's scavenger gets the same time).
const SETTLE: Duration = Duration::from_secs(12);

/// Runs every phase on one storage kind (`kind`: "fs" or "s3") and returns the rows. The
/// servers must be fresh: the first figures are their idle memory and their peak while taking
/// one large blob.
pub async fn run(
    kind: &str,
    ours: &mut Contender,
    theirs: &mut Contender,
    work: &Arc<Workload>,
    limits: LatencyLimits,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut both = [ours, theirs];

    tokio::time::sleep(STARTUP).await;
    let started = [both[0].server.memory()?, both[1].server.memory()?];
    rows.push(
        Row::new(format!("{kind} RSS after start, MiB"), mib(started[0].rss_kib), mib(started[1].rss_kib))
            .better(Better::Lower)
            .group(Group::IdleRss),
    );
    rows.push(
        Row::new(
            format!("{kind}   of which anonymous, MiB"),
            mib(started[0].anon_kib),
            mib(started[1].anon_kib),
        )
        .better(Better::Lower),
    );

    // First, on the fresh process: one large blob alone, and the peak RSS it causes (the peak
    // since start, which was just read as idle).
    rows.extend(single_blob(kind, &mut both, work).await?);
    let big_peak = [both[0].server.memory()?.hwm_kib, both[1].server.memory()?.hwm_kib];
    rows.push(
        Row::new(format!("{kind} peak RSS while pushing that blob, MiB"), mib(big_peak[0]), mib(big_peak[1]))
            .better(Better::Lower),
    );

    let large = &work.large;
    let large_bytes = large.bytes();
    let what =
        format!("{kind} push large image ({} x {} MiB), MB/s", large.layers.len(), large.layers[0].len >> 20);
    rows.push(
        pair(&what, Group::Push, &mut both, async |c| {
            timed_rate(large_bytes, c.client.push_image(large)).await
        })
        .await?,
    );
    let what = format!("{kind} pull large image, MB/s");
    rows.push(
        pair(&what, Group::Pull, &mut both, async |c| {
            timed_rate(large_bytes, c.client.pull_image(large)).await
        })
        .await?,
    );

    let small_bytes: u64 = work.small.iter().map(Image::bytes).sum();
    let what = format!(
        "{kind} push {} small images ({:.1} MB, {SMALL_IMAGE_CONCURRENCY} at a time), MB/s",
        work.small.len(),
        small_bytes as f64 / 1e6
    );
    rows.push(
        pair(&what, Group::Push, &mut both, async |c| {
            timed_rate(small_bytes, small_images(&c.client, work, Op::Push, SMALL_IMAGE_CONCURRENCY)).await
        })
        .await?,
    );
    let what = format!("{kind} pull {} small images, MB/s", work.small.len());
    rows.push(
        pair(&what, Group::Pull, &mut both, async |c| {
            timed_rate(small_bytes, small_images(&c.client, work, Op::Pull, SMALL_IMAGE_CONCURRENCY)).await
        })
        .await?,
    );

    let pushers_bytes: u64 = work.parallel.iter().map(|b| b.len).sum();
    let what = format!(
        "{kind} push {} blobs concurrently ({} x {} MiB), MB/s",
        work.parallel.len(),
        work.parallel.len(),
        work.parallel.first().map_or(0, |b| b.len >> 20)
    );
    rows.push(
        pair(&what, Group::Push, &mut both, async |c| timed_rate(pushers_bytes, pushers(c, work)).await)
            .await?,
    );

    for head in [false, true] {
        for concurrency in LATENCY_CONCURRENCY {
            let mut measured = Vec::new();
            for contender in both.iter_mut() {
                let samples =
                    latencies(&contender.client, work, work.small.len(), head, concurrency, limits).await?;
                contender.server.check_alive()?;
                measured.push(samples);
            }
            let method = if head { "HEAD" } else { "GET" };
            let what = format!("{kind} manifest {method}, {concurrency:>2} clients");
            let (a, b) = (&measured[0], &measured[1]);
            rows.push(
                Row::new(format!("{what}: p50 ms"), a.percentile(50.0), b.percentile(50.0))
                    .better(Better::Lower),
            );
            rows.push(
                Row::new(format!("{what}: p99 ms"), a.percentile(99.0), b.percentile(99.0))
                    .better(Better::Lower)
                    .group(Group::ManifestP99),
            );
            rows.push(Row::new(format!("{what}: requests/s"), a.rate(), b.rate()));
        }
    }

    rows.push(bearer(kind, both[0], work, limits).await?);

    let run_peak = [both[0].server.memory()?.hwm_kib, both[1].server.memory()?.hwm_kib];
    rows.push(
        Row::new(format!("{kind} peak RSS over the whole run, MiB"), mib(run_peak[0]), mib(run_peak[1]))
            .better(Better::Lower),
    );
    for contender in both.iter_mut() {
        contender.client = contender.client.reconnect();
    }
    tokio::time::sleep(SETTLE).await;
    let settled = [both[0].server.memory()?, both[1].server.memory()?];
    rows.push(
        Row::new(
            format!("{kind} RSS after the workload (settled), MiB"),
            mib(settled[0].rss_kib),
            mib(settled[1].rss_kib),
        )
        .better(Better::Lower)
        .group(Group::IdleRss),
    );
    rows.push(
        Row::new(
            format!("{kind}   of which anonymous, MiB"),
            mib(settled[0].anon_kib),
            mib(settled[1].anon_kib),
        )
        .better(Better::Lower),
    );
    rows.push(
        Row::new(
            format!("{kind} threads after the workload (settled)"),
            settled[0].threads as f64,
            settled[1].threads as f64,
        )
        .better(Better::Lower),
    );
    Ok(rows)
}

/// The push of the one large blob, alone: the phase that shows how close a server's upload
/// path comes to the rate at which it can verify bytes (SHA-256). Also the CPU time the server
/// and the client spent on it: with both on one machine, they share its cores.
pub async fn single_blob(kind: &str, both: &mut [&mut Contender; 2], work: &Workload) -> Result<Vec<Row>> {
    let big = &work.big_blob;
    let what = format!("{kind} push one {} MiB blob, MB/s", big.len >> 20);
    let [ours, theirs] = each(&what, both, async |c| {
        let (server, client) = (c.server.cpu_seconds()?, servers::own_cpu_seconds()?);
        let rate = timed_rate(big.len, c.client.push_blob("bench/big", big)).await?;
        Ok([rate, c.server.cpu_seconds()? - server, servers::own_cpu_seconds()? - client])
    })
    .await?;
    Ok(vec![
        Row::new(what, ours[0], theirs[0]),
        Row::new(format!("{kind}   server CPU time for it, s"), ours[1], theirs[1]).better(Better::Lower),
        Row::new(format!("{kind}   client CPU time for it, s"), ours[2], theirs[2]).better(Better::Lower),
    ])
}

/// Runs `phase` on ours, then on theirs, and makes a higher-is-better row of the two figures.
async fn pair<F>(what: &str, group: Group, both: &mut [&mut Contender; 2], phase: F) -> Result<Row>
where
    F: AsyncFn(&Contender) -> Result<f64>,
{
    let [ours, theirs] = each(what, both, phase).await?;
    Ok(Row::new(what.to_string(), ours, theirs).group(group))
}

/// Runs `phase` on ours, then on theirs, checking after each that the server still runs.
async fn each<T, F>(what: &str, both: &mut [&mut Contender; 2], phase: F) -> Result<[T; 2]>
where
    F: AsyncFn(&Contender) -> Result<T>,
{
    let mut figures = Vec::with_capacity(2);
    for (i, contender) in both.iter_mut().enumerate() {
        let who = if i == 0 { "regctl" } else { "distribution" };
        eprintln!("  {what}: {who}...");
        figures.push(phase(contender).await.with_context(|| format!("{what}: {who}"))?);
        contender.server.check_alive().with_context(|| format!("{what}: {who}"))?;
    }
    figures.try_into().map_err(|_| anyhow::anyhow!("two figures"))
}

/// MB/s (10^6 bytes per second) of `bytes` moved by `work`.
async fn timed_rate(bytes: u64, work: impl Future<Output = Result<()>>) -> Result<f64> {
    let start = Instant::now();
    work.await?;
    Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
}

#[derive(Clone, Copy)]
enum Op {
    Push,
    Pull,
}

/// Pushes or pulls every small image, `concurrency` at a time, each worker on its own task.
async fn small_images(client: &Registry, work: &Arc<Workload>, op: Op, concurrency: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, work, next) = (client.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let Some(image) = work.small.get(next.fetch_add(1, Ordering::Relaxed)) else { return Ok(()) };
                match op {
                    Op::Push => client.push_image(image).await,
                    Op::Pull => client.pull_image(image).await,
                }
                .with_context(|| format!("image {}", image.repo))?;
            }
        });
    }
    join_all(tasks).await
}

/// Pushes every blob of the concurrent-pushers phase at once, each on its own task.
async fn pushers(contender: &Contender, work: &Arc<Workload>) -> Result<()> {
    let mut tasks = JoinSet::new();
    for i in 0..work.parallel.len() {
        let (client, work) = (contender.client.clone(), work.clone());
        tasks.spawn(async move {
            let blob: &Blob = &work.parallel[i];
            client.push_blob("bench/parallel", blob).await.with_context(|| format!("pusher {i}"))
        });
    }
    join_all(tasks).await
}

async fn join_all(mut tasks: JoinSet<Result<()>>) -> Result<()> {
    while let Some(done) = tasks.join_next().await {
        done.context("a client task panicked")??;
    }
    Ok(())
}

/// Concurrent clients of the Bearer cell: the target is the manifest GET p99 at 16.
const BEARER_CONCURRENCY: usize = 16;
/// Images the Bearer cell reads, each in a repository of its own: the token names them all,
/// as docker's token for a pull names its repository (two with a mount's source). Every
/// request verifies the whole token, so a token of 64 repositories (the endpoint's most)
/// measured 2.68 ms against Basic's 2.01: the cell measures what clients send.
const BEARER_IMAGES: usize = 2;

/// Our server only (distribution has no token endpoint of its own): manifest GETs with a
/// Bearer token from `/token` against the same GETs with Basic, back to back, over the same
/// [`BEARER_IMAGES`] images, [`BEARER_CONCURRENCY`] clients. The row holds the Bearer p99 and the Basic p99
/// (columns ours and theirs, so its ratio is Bearer / Basic); it joins no summary group.
async fn bearer(
    kind: &str,
    ours: &mut Contender,
    work: &Arc<Workload>,
    limits: LatencyLimits,
) -> Result<Row> {
    let images = work.small.len().min(BEARER_IMAGES);
    let repos: Vec<&str> = work.small[..images].iter().map(|image| image.repo.as_str()).collect();
    let basic = latencies(&ours.client, work, images, false, BEARER_CONCURRENCY, limits).await?;
    let with_token = ours.client.with_bearer_token(&repos).await?;
    let bearer = latencies(&with_token, work, images, false, BEARER_CONCURRENCY, limits).await?;
    ours.server.check_alive()?;
    let what = format!("{kind} regctl manifest GET, {BEARER_CONCURRENCY} clients: p99 ms, Bearer | Basic");
    eprintln!(
        "  {what}: {:.3} | {:.3} ({:.0} | {:.0} requests/s)",
        bearer.percentile(99.0),
        basic.percentile(99.0),
        bearer.rate(),
        basic.rate()
    );
    Ok(Row::new(what, bearer.percentile(99.0), basic.percentile(99.0)).better(Better::Lower))
}

/// Concurrent image pulls through the balancer in the scale-out phase: enough to keep three
/// servers busy.
const SCALE_CONCURRENCY: usize = 16;
/// How many times the scale-out phase pulls every small image per server count.
const SCALE_ROUNDS: usize = 3;
/// Concurrent manifest clients of the manifest cache cells.
const CACHE_CONCURRENCY: [usize; 2] = [1, 16];

/// Our servers only, several on one bucket (`storage`): what a scaled deployment gains.
/// - Pull throughput through HAProxy with 1 server, then with 3, on one bucket: every small
///   image [`SCALE_ROUNDS`] times, [`SCALE_CONCURRENCY`] at a time, blobs through the servers
///   (no redirect to S3). The row holds the 3-server rate and the 1-server rate, so its ratio
///   is the gain of scaling out.
/// - Manifest GET latency on S3 with the manifest cache (the default) and without it
///   (`manifestcachettl = 0`: every GET is three S3 requests), p50 and p99: rows of cached and
///   uncached figures, the ratio cached / uncached.
///
/// `storage_cpu` is the S3 server's CPU time so far, printed beside the servers'. No row joins
/// a summary group.
pub async fn scale_out(
    start: impl Fn(&str, &[(&str, &str)]) -> Result<Server>,
    balance: impl Fn(&[&Server], &str) -> Result<Balancer>,
    storage_cpu: impl Fn() -> Result<f64>,
    credentials: (&str, &str),
    work: &Arc<Workload>,
    limits: LatencyLimits,
) -> Result<Vec<Row>> {
    let (user, password) = credentials;
    let no_redirect = [("REGISTRY_STORAGE_S3_REDIRECT", "false")];
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(start(&format!("regctl-scale-{i}"), &no_redirect)?);
    }
    let direct = Registry::new(&servers[0].base, user, password);
    eprintln!("  pushing {} small images once...", work.small.len());
    small_images(&direct, work, Op::Push, SMALL_IMAGE_CONCURRENCY).await?;

    let bytes = SCALE_ROUNDS as u64 * work.small.iter().map(Image::bytes).sum::<u64>();
    let mut rates = Vec::new();
    for n in [1, 3] {
        let behind: Vec<&Server> = servers.iter().take(n).collect();
        let balancer = balance(&behind, &format!("haproxy-{n}"))?;
        let client = Registry::new(&balancer.base, user, password);
        eprintln!("  pulling through HAProxy with {n} server(s)...");
        small_images(&client, work, Op::Pull, SCALE_CONCURRENCY).await?; // warm-up
        let cpu_before: f64 = behind.iter().map(|s| s.cpu_seconds()).sum::<Result<f64>>()?;
        let storage_before = storage_cpu()?;
        let rate = timed_rate(bytes, async {
            for _ in 0..SCALE_ROUNDS {
                small_images(&client, work, Op::Pull, SCALE_CONCURRENCY).await?;
            }
            Ok(())
        })
        .await?;
        let cpu: f64 = behind.iter().map(|s| s.cpu_seconds()).sum::<Result<f64>>()? - cpu_before;
        let storage = storage_cpu()? - storage_before;
        let wall = bytes as f64 / 1e6 / rate;
        eprintln!(
            "  {n} server(s): {rate:.1} MB/s in {wall:.1} s; CPU: servers {cpu:.1} s, S3 (moto) {storage:.1} s"
        );
        rates.push(rate);
    }
    let mut rows = vec![Row::new(
        format!(
            "s3 pull {} small images x{SCALE_ROUNDS} via HAProxy, {SCALE_CONCURRENCY} at a time, MB/s: 3 servers | 1",
            work.small.len()
        ),
        rates[1],
        rates[0],
    )];

    let uncached_server = start("regctl-scale-uncached", &[("REGISTRY_STORAGE_S3_MANIFESTCACHETTL", "0")])?;
    let uncached = Registry::new(&uncached_server.base, user, password);
    for concurrency in CACHE_CONCURRENCY {
        let cached = latencies(&direct, work, work.small.len(), false, concurrency, limits).await?;
        let plain = latencies(&uncached, work, work.small.len(), false, concurrency, limits).await?;
        let what = format!("s3 manifest GET, {concurrency:>2} clients");
        for p in [50.0, 99.0] {
            rows.push(
                Row::new(
                    format!("{what}: p{p:.0} ms, cached | uncached"),
                    cached.percentile(p),
                    plain.percentile(p),
                )
                .better(Better::Lower),
            );
        }
    }
    Ok(rows)
}

/// Request latencies of one cell of the latency phase, and its wall time.
struct Samples {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Samples {
    /// The `p`th percentile (nearest rank), in milliseconds.
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1].as_secs_f64() * 1e3
    }

    /// Requests per second.
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` clients sending manifest GETs (or HEADs) by tag round the first `images` small
/// images, each with the contender's credentials, until `limits` are reached; one unmeasured
/// request per client first.
async fn latencies(
    client: &Registry,
    work: &Arc<Workload>,
    images: usize,
    head: bool,
    concurrency: usize,
    limits: LatencyLimits,
) -> Result<Samples> {
    let method = if head { "HEAD" } else { "GET" };
    eprintln!("  manifest {method} with {concurrency} clients: {}...", client.base());
    let one = move |client: Registry, work: Arc<Workload>, i: usize| async move {
        let image = &work.small[i % images];
        if head {
            client.head_manifest(&image.repo, &image.tag, &image.manifest_digest).await
        } else {
            client.get_manifest(&image.repo, &image.tag, &image.manifest_digest).await
        }
    };
    let mut warmup = JoinSet::new();
    for i in 0..concurrency {
        warmup.spawn(one(client.clone(), work.clone(), i));
    }
    join_all(warmup).await.context("warm-up")?;

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limits.time;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, work, next) = (client.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limits.requests || Instant::now() >= deadline {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let sent = Instant::now();
                one(client.clone(), work.clone(), i).await?;
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.context("a client task panicked")??);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Samples { latencies, elapsed })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
