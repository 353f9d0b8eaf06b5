//! One endpoint's queue: events are batched, written to storage, POSTed oldest first, and
//! deleted from storage once the endpoint accepts them.
//!
//! ```text
//! docker/registry/v2/_regctl/notifications/<endpoint>/<nanos>-<uuid>.json   one envelope
//! ```
//!
//! A stored batch is exactly the envelope that is POSTed. A failed delivery is retried: at once
//! (after 100 ms) until `threshold` failures in a row, then after `backoff`, doubled with each
//! further failure up to five minutes. The queue holds at most `queuesize` events; beyond that
//! the oldest batches are dropped (and counted), so a dead endpoint cannot fill the storage.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{EVENTS_MEDIA_TYPE, Envelope, Event};
use crate::config::EndpointConfig;
use crate::layout;
use crate::metrics::{EventOutcome, Metrics};
use crate::storage::{Storage, StoragePath};

/// Most events in one POST.
const MAX_BATCH: usize = 100;
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The pause between retries before the threshold is reached.
const QUICK_RETRY: Duration = Duration::from_millis(100);

/// What the queue's task is asked to do.
#[derive(Debug)]
pub(super) enum Command {
    /// Queue these events (already filtered for this endpoint).
    Events(Vec<Event>),
    /// Persist what is in memory, then answer.
    Flush(oneshot::Sender<()>),
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A stored batch.
#[derive(Debug)]
struct Batch {
    /// Its object's name in the queue directory.
    name: String,
    /// How many events it holds.
    events: usize,
    /// The envelope, as stored and sent.
    body: Bytes,
}

/// The queue directory of an endpoint.
fn queue_dir(endpoint: &str) -> StoragePath {
    layout::regctl_state().join("notifications").join(endpoint)
}

/// Starts the queue's task; events go in through the returned sender.
pub(super) fn spawn(
    config: EndpointConfig,
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker {
        dir: queue_dir(&config.name),
        client: https_client(),
        config,
        storage,
        metrics,
        queue: VecDeque::new(),
        pending: 0,
        failures: 0,
    };
    tokio::spawn(worker.run(rx));
    tx
}

/// An HTTP(S) client trusting the system's roots.
fn https_client() -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

struct Worker {
    config: EndpointConfig,
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    dir: StoragePath,
    client: HttpsClient,
    queue: VecDeque<Batch>,
    /// Events in `queue`.
    pending: usize,
    /// Failed deliveries in a row.
    failures: u32,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        self.load().await;
        let mut retry_at: Option<Instant> = None;
        loop {
            let ready = !self.queue.is_empty() && retry_at.is_none_or(|t| t <= Instant::now());
            let mut incoming = Vec::new();
            let mut flushed = Vec::new();
            if !ready {
                let command = match retry_at.filter(|_| !self.queue.is_empty()) {
                    Some(at) => tokio::select! {
                        command = rx.recv() => command,
                        () = tokio::time::sleep_until(at) => Some(Command::Events(Vec::new())),
                    },
                    None => rx.recv().await,
                };
                match command {
                    Some(Command::Events(events)) => incoming.extend(events),
                    Some(Command::Flush(done)) => flushed.push(done),
                    None => return, // the notifier is gone: everything received is stored
                }
            }
            // Take everything else waiting, so one push's events travel together.
            while let Ok(command) = rx.try_recv() {
                match command {
                    Command::Events(events) => incoming.extend(events),
                    Command::Flush(done) => flushed.push(done),
                }
            }
            for chunk in incoming.chunks(MAX_BATCH) {
                self.store(chunk.to_vec()).await;
            }
            for done in flushed {
                let _ = done.send(());
            }
            if !self.queue.is_empty() && retry_at.is_none_or(|t| t <= Instant::now()) {
                retry_at = self.deliver_front().await;
            }
        }
    }

    /// Loads batches left by an earlier run, oldest first.
    async fn load(&mut self) {
        let mut names = match self.storage.list(&self.dir).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(endpoint = %self.config.name, error = %e, "cannot read the stored notification queue");
                return;
            }
        };
        names.sort();
        for name in names {
            let Some(path) = self.dir.join_listed(&name) else {
                tracing::warn!(endpoint = %self.config.name, name = ?name, "skipping a stored event whose name cannot be a path");
                continue;
            };
            let body = match self.storage.get(&path).await {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(endpoint = %self.config.name, error = %e, "skipping a stored notification batch");
                    continue;
                }
            };
            match serde_json::from_slice::<Envelope>(&body) {
                Ok(envelope) => {
                    self.pending += envelope.events.len();
                    self.queue.push_back(Batch { name, events: envelope.events.len(), body });
                }
                Err(e) => {
                    tracing::warn!(endpoint = %self.config.name, batch = %name, error = %e, "dropping a corrupt notification batch");
                    let _ = self.storage.delete(&path).await;
                }
            }
        }
        if self.pending > 0 {
            tracing::info!(endpoint = %self.config.name, events = self.pending, "resuming stored notifications");
        }
        self.enforce_bound().await;
        self.metrics.notification_pending(&self.config.name, self.pending as u64);
    }

    /// Writes a batch to storage and queues it; if storage fails, it is queued in memory only.
    async fn store(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let count = events.len();
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("{nanos:020}-{}.json", uuid::Uuid::new_v4().simple());
        let body = match serde_json::to_vec(&Envelope { events }) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(endpoint = %self.config.name, error = %e, "cannot encode notification events");
                return;
            }
        };
        if let Err(e) = self.storage.put(&self.dir.join(&name), body.clone()).await {
            tracing::warn!(endpoint = %self.config.name, error = %e, "cannot store notification events; they will not survive a restart");
        }
        self.metrics.notification(&self.config.name, EventOutcome::Queued, count as u64);
        self.pending += count;
        self.queue.push_back(Batch { name, events: count, body });
        self.enforce_bound().await;
        self.metrics.notification_pending(&self.config.name, self.pending as u64);
    }

    /// Drops the oldest batches beyond the queue size, from memory and storage.
    async fn enforce_bound(&mut self) {
        while self.pending > self.config.queuesize && self.queue.len() > 1 {
            let Some(batch) = self.queue.pop_front() else { break };
            self.pending -= batch.events;
            self.metrics.notification(&self.config.name, EventOutcome::Dropped, batch.events as u64);
            tracing::warn!(endpoint = %self.config.name, events = batch.events, "notification queue full: dropped the oldest events");
            let _ = self.storage.delete(&self.dir.join(&batch.name)).await;
        }
    }

    /// POSTs the oldest batch. Returns when to try again after a failure.
    async fn deliver_front(&mut self) -> Option<Instant> {
        let batch = self.queue.front()?;
        let (name, events, body) = (batch.name.clone(), batch.events, batch.body.clone());
        match self.post(body).await {
            Ok(()) => {
                self.failures = 0;
                self.queue.pop_front();
                self.pending -= events;
                self.metrics.notification(&self.config.name, EventOutcome::Sent, events as u64);
                self.metrics.notification_pending(&self.config.name, self.pending as u64);
                if let Err(e) = self.storage.delete(&self.dir.join(&name)).await
                    && !e.is_not_found()
                {
                    tracing::warn!(endpoint = %self.config.name, error = %e, "cannot remove a delivered notification batch; it may be sent again");
                }
                None
            }
            Err(message) => {
                self.failures += 1;
                self.metrics.notification_failure(&self.config.name);
                let wait = retry_delay(self.failures, self.config.threshold, self.config.backoff);
                tracing::warn!(
                    endpoint = %self.config.name,
                    failures = self.failures,
                    retry_in = ?wait,
                    "notification delivery failed: {message}"
                );
                Some(Instant::now() + wait)
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), String> {
        let mut request = axum::http::Request::post(&self.config.url)
            .header(axum::http::header::CONTENT_TYPE, EVENTS_MEDIA_TYPE)
            .header(axum::http::header::USER_AGENT, concat!("regctl/", env!("CARGO_PKG_VERSION")));
        for (name, values) in &self.config.headers {
            for value in &values.0 {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let request =
            request.body(Full::new(body)).map_err(|e| format!("bad request to {}: {e}", self.config.url))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status();
            // Read the answer so the connection can be reused; its content does not matter.
            let _ = response.into_body().collect().await;
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("the endpoint answered {status}"))
            }
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.config.timeout)),
        }
    }
}

/// An error and its causes, `: `-separated (the client's own message is only "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long to wait after `failures` failed deliveries in a row.
fn retry_delay(failures: u32, threshold: u32, backoff: Duration) -> Duration {
    if failures < threshold.max(1) {
        return QUICK_RETRY.min(backoff.max(Duration::from_millis(1)));
    }
    let doublings = (failures - threshold.max(1)).min(16);
    backoff.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_after_the_threshold() {
        let b = Duration::from_secs(1);
        assert_eq!(retry_delay(1, 3, b), QUICK_RETRY);
        assert_eq!(retry_delay(3, 3, b), b);
        assert_eq!(retry_delay(4, 3, b), 2 * b);
        assert_eq!(retry_delay(60, 3, b), MAX_BACKOFF);
        assert_eq!(retry_delay(1, 0, b), b, "threshold 0 backs off at once");
    }
}
