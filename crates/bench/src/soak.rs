//! A bounded soak: many clients at once push new images and pull images pushed before (their
//! own and the others'), every byte read checked against its digest. Each push carries one of a
//! few shared layers, so the same blob is pushed by many clients at the same moment.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::client::Registry;
use crate::workload::{Blob, Image, Rng, random_blob};

/// Failures kept word for word in a [`Report`]; beyond that they are only counted.
const KEPT_ERRORS: usize = 50;
/// Layers shared by every client's images.
const SHARED_LAYERS: u64 = 6;

/// How long and how hard to soak.
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent clients.
    pub clients: usize,
    /// Each client stops after this long...
    pub duration: Duration,
    /// ...or after this many operations, whichever comes first.
    pub ops_per_client: usize,
    /// Seed of every byte pushed: another seed pushes other content.
    pub seed: u64,
    /// Size of the occasional large layer (one push in 16 has one), in bytes; the other unique
    /// layers have 4 to 256 KiB.
    pub large_layer: u64,
}

/// What a soak did.
#[derive(Default)]
pub struct Report {
    /// Images pushed (each: its blobs, then its manifest).
    pub pushes: u64,
    /// Images pulled and verified.
    pub pulls: u64,
    /// Operations that failed.
    pub failures: u64,
    /// The first failures, each with the operation and image it concerned.
    pub errors: Vec<String>,
    /// Every image whose push succeeded, without its bytes ([`Image::skeleton`]).
    pub images: Vec<Image>,
}

/// Shared state of the clients.
struct Soak {
    registry: Registry,
    options: Options,
    shared: Vec<Blob>,
    pushed: Mutex<Vec<Image>>,
    report: Mutex<Report>,
}

impl Soak {
    fn record(&self, result: anyhow::Result<()>, what: impl FnOnce() -> String) {
        let mut report = self.report.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = result {
            report.failures += 1;
            if report.errors.len() < KEPT_ERRORS {
                report.errors.push(format!("{}: {e:#}", what()));
            }
        }
    }

    /// A new image of client `client`'s `op`th operation: a shared layer and one or two of
    /// its own, in its own repository or (one in four) the common one.
    fn new_image(&self, client: usize, op: usize, rng: &mut Rng) -> Image {
        let seed = self.options.seed.wrapping_mul(1_000_003) ^ ((client as u64) << 32 | op as u64);
        let mut layers = vec![self.shared[(rng.next_u64() % SHARED_LAYERS) as usize].clone()];
        for j in 0..1 + rng.next_u64() % 2 {
            let len = if rng.next_u64().is_multiple_of(16) {
                self.options.large_layer
            } else {
                4096 + rng.next_u64() % (252 << 10)
            };
            layers.push(random_blob(seed.wrapping_mul(31).wrapping_add(j), len));
        }
        let (repo, tag) = if rng.next_u64().is_multiple_of(4) {
            ("soak/common".to_string(), format!("c{client}-{}-{op}", self.options.seed))
        } else {
            (format!("soak/client-{client:02}"), format!("s{}-{op}", self.options.seed))
        };
        Image::new(repo, layers).with_tag(tag)
    }

    async fn client(self: Arc<Self>, client: usize) {
        let mut rng = Rng::new(self.options.seed ^ (client as u64).wrapping_mul(0x5851_F42D));
        let deadline = Instant::now() + self.options.duration;
        for op in 0..self.options.ops_per_client {
            if Instant::now() >= deadline {
                break;
            }
            let target = {
                let pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
                // Two pulls for each push, once there is something to pull.
                (!rng.next_u64().is_multiple_of(3) && !pushed.is_empty())
                    .then(|| pushed[(rng.next_u64() % pushed.len() as u64) as usize].skeleton())
            };
            match target {
                Some(image) => {
                    let pulled = self.registry.pull_image(&image).await;
                    let ok = pulled.is_ok();
                    self.record(pulled, || format!("pull {}:{}", image.repo, image.tag));
                    if ok {
                        self.report.lock().unwrap_or_else(|p| p.into_inner()).pulls += 1;
                    }
                }
                None => {
                    let image = self.new_image(client, op, &mut rng);
                    let pushed = self.registry.push_image(&image).await;
                    let ok = pushed.is_ok();
                    self.record(pushed, || format!("push {}:{}", image.repo, image.tag));
                    if ok {
                        self.report.lock().unwrap_or_else(|p| p.into_inner()).pushes += 1;
                        self.pushed.lock().unwrap_or_else(|p| p.into_inner()).push(image.skeleton());
                    }
                }
            }
        }
    }
}

/// Runs `options.clients` clients against `registry` until the time or operation limit. They
/// may also pull the images of `earlier` (the [`Report::images`] of an earlier soak).
pub async fn run(registry: &Registry, options: &Options, earlier: &[Image]) -> Report {
    let shared = (0..SHARED_LAYERS).map(|i| random_blob(900 + i, (64 << 10) << i)).collect();
    let soak = Arc::new(Soak {
        registry: registry.clone(),
        options: options.clone(),
        shared,
        pushed: Mutex::new(earlier.iter().map(Image::skeleton).collect()),
        report: Mutex::default(),
    });
    let mut tasks = JoinSet::new();
    for client in 0..options.clients {
        tasks.spawn(soak.clone().client(client));
    }
    while let Some(done) = tasks.join_next().await {
        soak.record(done.context("a client task panicked"), || "client".into());
    }
    let mut report = std::mem::take(&mut *soak.report.lock().unwrap_or_else(|p| p.into_inner()));
    let pushed = std::mem::take(&mut *soak.pushed.lock().unwrap_or_else(|p| p.into_inner()));
    report.images = pushed.into_iter().skip(earlier.len()).collect();
    report
}

/// Pulls every image of `images` once, `concurrency` at a time, and returns the failures.
pub async fn verify_all(registry: &Registry, images: &[Image], concurrency: usize) -> Vec<String> {
    let queue = Arc::new(Mutex::new(images.iter().map(Image::skeleton).collect::<Vec<_>>()));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (registry, queue) = (registry.clone(), queue.clone());
        tasks.spawn(async move {
            let mut errors = Vec::new();
            loop {
                let Some(image) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                    return errors;
                };
                if let Err(e) = registry.pull_image(&image).await {
                    errors.push(format!("pull {}:{}: {e:#}", image.repo, image.tag));
                }
            }
        });
    }
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(found) => errors.extend(found),
            Err(e) => errors.push(format!("a verifying task panicked: {e}")),
        }
    }
    errors
}
