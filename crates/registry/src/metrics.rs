//! Prometheus metrics, kept in process and rendered as Prometheus text at `/metrics`.
//!
//! Hand-written rather than a global recorder: every [`crate::AppState`] has its own
//! [`Metrics`], so tests that build several apps in one process do not share counters.
//! `prometheus-client` was measured against it (a scratch program recording one request, two
//! label sets and a histogram, release build, 2026-12-04): 71–150 ns per request against our
//! 76–270 ns, the same within the noise of a shared 2-core machine and far below a request's
//! cost. It would not remove code: several series here are derived at render time (sessions
//! in progress, storage errors, authentication's own counters), and its encoder writes
//! OpenMetrics, which would change the content type scrapers see. So the renderer stays.
//!
//! What is counted: requests by route, method and status; latency histograms by route and
//! method; bytes received and sent by route; upload sessions; storage operations and errors
//! (through [`InstrumentedStorage`]); authentication challenges, failures and verification
//! cache hits; notifications; garbage collection.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use bytes::Bytes;

use crate::registry::{Event, Happened, Subscriber};
use crate::storage::{ByteStream, Condition, ETag, ObjectMeta, Storage, StorageError, StoragePath};

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 13] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// What a request was for, as a metrics label (never a repository name: labels stay few).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags,
    /// `/v2/<name>/manifests/<reference>`
    Manifest,
    /// `/v2/<name>/blobs/<digest>`
    Blob,
    /// `/v2/<name>/blobs/uploads/...`
    BlobUpload,
    /// `/v2/<name>/referrers/<digest>`
    Referrers,
    /// A `/v2` path that is no API route.
    V2Unknown,
    /// The web UI (and `/`).
    Ui,
    /// `/metrics`
    Metrics,
    /// `/health`
    Health,
    /// Anything else.
    Other,
}

impl Route {
    const ALL: [Route; 12] = [
        Route::Base,
        Route::Catalog,
        Route::Tags,
        Route::Manifest,
        Route::Blob,
        Route::BlobUpload,
        Route::Referrers,
        Route::V2Unknown,
        Route::Ui,
        Route::Metrics,
        Route::Health,
        Route::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags => "tags_list",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::BlobUpload => "blob_upload",
            Route::Referrers => "referrers",
            Route::V2Unknown => "v2_unknown",
            Route::Ui => "ui",
            Route::Metrics => "metrics",
            Route::Health => "health",
            Route::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The metrics label of a request method: the methods the registry serves by name, every
/// other (including invented ones, which HTTP allows) as `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A latency histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Counts per bucket (not cumulative), the last for values above every bound.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// Why a request failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No credentials: answered with a challenge (a browser then asks for a password).
    Challenge,
    /// Credentials that did not verify.
    Invalid,
    /// Refused because the client failed too often.
    Throttled,
}

/// What happened to a notification event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventOutcome {
    /// Accepted into an endpoint's queue.
    Queued,
    /// Left out by the endpoint's filters.
    Ignored,
    /// Delivered (the endpoint answered 2xx).
    Sent,
    /// Dropped because the queue was full.
    Dropped,
}

impl EventOutcome {
    fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Queued => "queued",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Sent => "sent",
            EventOutcome::Dropped => "dropped",
        }
    }
}

/// What one garbage collection did, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcRun {
    /// Blobs deleted.
    pub blobs: u64,
    /// Bytes those blobs held.
    pub bytes: u64,
    /// Manifests deleted from repositories.
    pub manifests: u64,
    /// Upload sessions purged.
    pub uploads: u64,
    /// How long it took.
    pub duration: Duration,
}

#[derive(Debug, Default)]
struct Notifications {
    events: BTreeMap<(String, EventOutcome), u64>,
    failures: BTreeMap<String, u64>,
    pending: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Gc {
    runs_ok: u64,
    runs_failed: u64,
    /// Turns skipped because another server held the collection's lease.
    runs_skipped: u64,
    last_run: Option<SystemTime>,
    last: GcRun,
    total: GcRun,
}

/// The registry's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(Route, &'static str, u16), u64>>,
    requests_finished: AtomicU64,
    latency: Mutex<HashMap<(Route, &'static str), Histogram>>,
    bytes_in: [AtomicU64; Route::ALL.len()],
    bytes_out: [AtomicU64; Route::ALL.len()],
    uploads_started: AtomicU64,
    uploads_completed: AtomicU64,
    uploads_cancelled: AtomicU64,
    storage: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    auth_challenges: AtomicU64,
    auth_invalid: AtomicU64,
    auth_throttled: AtomicU64,
    notifications: Mutex<Notifications>,
    gc: Mutex<Gc>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Records a finished request. Every label comes from a fixed set (the route, the method
    /// as [`method_label`] names it, the status the server chose), so no client can add label
    /// values: a request with an invented method, answered 401 before authentication, must not
    /// grow the metrics.
    pub fn request(&self, route: Route, method: &Method, status: StatusCode, elapsed: Duration) {
        let method = method_label(method);
        self.requests_finished.fetch_add(1, Ordering::Relaxed);
        *lock(&self.requests).entry((route, method, status.as_u16())).or_default() += 1;
        lock(&self.latency).entry((route, method)).or_default().observe(elapsed.as_secs_f64());
    }

    /// Requests finished since start.
    pub fn requests_finished(&self) -> u64 {
        self.requests_finished.load(Ordering::Relaxed)
    }

    /// Counts bytes received in request bodies.
    pub fn bytes_in(&self, route: Route, n: u64) {
        self.bytes_in[route.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes sent in response bodies.
    pub fn bytes_out(&self, route: Route, n: u64) {
        self.bytes_out[route.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an upload session started.
    fn upload_started(&self) {
        self.uploads_started.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upload session committed as a blob.
    fn upload_completed(&self) {
        self.uploads_completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upload session cancelled.
    fn upload_cancelled(&self) {
        self.uploads_cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an authentication refusal.
    pub fn auth(&self, outcome: AuthOutcome) {
        let counter = match outcome {
            AuthOutcome::Challenge => &self.auth_challenges,
            AuthOutcome::Invalid => &self.auth_invalid,
            AuthOutcome::Throttled => &self.auth_throttled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a storage operation by its outcome (`ok`, `not_found`, `precondition`, `client_error` or `error`).
    fn storage_op(&self, op: &'static str, outcome: &'static str) {
        *lock(&self.storage).entry((op, outcome)).or_default() += 1;
    }

    /// Counts what happened to notification events of `endpoint`.
    pub fn notification(&self, endpoint: &str, outcome: EventOutcome, n: u64) {
        *lock(&self.notifications).events.entry((endpoint.to_string(), outcome)).or_default() += n;
    }

    /// Counts a failed delivery attempt to `endpoint`.
    pub fn notification_failure(&self, endpoint: &str) {
        *lock(&self.notifications).failures.entry(endpoint.to_string()).or_default() += 1;
    }

    /// Sets how many events wait for `endpoint`.
    pub fn notification_pending(&self, endpoint: &str, pending: u64) {
        lock(&self.notifications).pending.insert(endpoint.to_string(), pending);
    }

    /// Records a garbage collection run (`None`: it failed).
    pub fn gc_run(&self, run: Option<GcRun>) {
        let mut gc = lock(&self.gc);
        gc.last_run = Some(SystemTime::now());
        match run {
            Some(run) => {
                gc.runs_ok += 1;
                gc.last = run;
                gc.total.blobs += run.blobs;
                gc.total.bytes += run.bytes;
                gc.total.manifests += run.manifests;
                gc.total.uploads += run.uploads;
            }
            None => gc.runs_failed += 1,
        }
    }

    /// Counts a scheduled collection skipped because another server held its lease.
    pub fn gc_skipped(&self) {
        lock(&self.gc).runs_skipped += 1;
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    /// `auth` holds authentication's own counters when it is on.
    pub fn render(&self, auth: Option<AuthCounts>) -> String {
        let mut out = String::with_capacity(8192);
        let w = &mut out;
        header(w, "regctl_build_info", "gauge", "The running version.");
        line(w, "regctl_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);

        header(w, "regctl_http_requests_total", "counter", "HTTP requests by route, method and status.");
        let mut requests: Vec<_> = lock(&self.requests).iter().map(|(k, v)| (*k, *v)).collect();
        requests.sort();
        for ((route, method, status), n) in requests {
            let status = status.to_string();
            let labels = [("route", route.as_str()), ("method", method), ("status", status.as_str())];
            line(w, "regctl_http_requests_total", &labels, n);
        }

        let name = "regctl_http_request_duration_seconds";
        header(w, name, "histogram", "Time to answer HTTP requests (until the response head).");
        let mut latency: Vec<_> = lock(&self.latency).iter().map(|(k, v)| (*k, v.clone())).collect();
        latency.sort_by(|a, b| a.0.cmp(&b.0));
        for ((route, method), h) in latency {
            let mut cumulative = 0;
            for (i, count) in h.buckets.iter().enumerate() {
                cumulative += count;
                let le = LATENCY_BUCKETS.get(i).map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let labels = [("route", route.as_str()), ("method", method), ("le", le.as_str())];
                line(w, &format!("{name}_bucket"), &labels, cumulative);
            }
            let labels = [("route", route.as_str()), ("method", method)];
            let _ = writeln!(w, "{name}_sum{} {}", labels_text(&labels), h.sum);
            line(w, &format!("{name}_count"), &labels, h.count);
        }

        for (name, help, counters) in [
            (
                "regctl_http_request_bytes_total",
                "Bytes received in request bodies, by route.",
                &self.bytes_in,
            ),
            ("regctl_http_response_bytes_total", "Bytes sent in response bodies, by route.", &self.bytes_out),
        ] {
            header(w, name, "counter", help);
            for route in Route::ALL {
                let n = counters[route.index()].load(Ordering::Relaxed);
                if n > 0 {
                    line(w, name, &[("route", route.as_str())], n);
                }
            }
        }

        let (started, completed, cancelled) = (
            self.uploads_started.load(Ordering::Relaxed),
            self.uploads_completed.load(Ordering::Relaxed),
            self.uploads_cancelled.load(Ordering::Relaxed),
        );
        for (name, help, n) in [
            ("regctl_upload_sessions_started_total", "Blob upload sessions started.", started),
            ("regctl_upload_sessions_completed_total", "Upload sessions committed as blobs.", completed),
            ("regctl_upload_sessions_cancelled_total", "Upload sessions cancelled by clients.", cancelled),
        ] {
            header(w, name, "counter", help);
            line(w, name, &[], n);
        }
        let name = "regctl_upload_sessions_in_progress";
        header(w, name, "gauge", "Upload sessions started here and neither committed nor cancelled.");
        line(w, name, &[], started.saturating_sub(completed + cancelled));

        header(
            w,
            "regctl_storage_operations_total",
            "counter",
            "Storage operations by operation and outcome.",
        );
        let storage = lock(&self.storage).clone();
        for ((op, outcome), n) in &storage {
            line(w, "regctl_storage_operations_total", &[("operation", op), ("outcome", outcome)], *n);
        }
        header(
            w,
            "regctl_storage_errors_total",
            "counter",
            "Failed storage operations (not counting not-found).",
        );
        for ((op, outcome), n) in &storage {
            if *outcome == "error" {
                line(w, "regctl_storage_errors_total", &[("operation", op)], *n);
            }
        }

        let name = "regctl_auth_challenges_total";
        header(w, name, "counter", "Requests without credentials, answered with a Basic challenge.");
        line(w, name, &[], self.auth_challenges.load(Ordering::Relaxed));
        let name = "regctl_auth_failures_total";
        header(w, name, "counter", "Requests refused: wrong credentials, or too many failures (throttled).");
        line(w, name, &[("reason", "invalid")], self.auth_invalid.load(Ordering::Relaxed));
        line(w, name, &[("reason", "throttled")], self.auth_throttled.load(Ordering::Relaxed));
        if let Some(counts) = auth {
            let name = "regctl_auth_cache_hits_total";
            header(w, name, "counter", "Credential verifications answered from the cache.");
            line(w, name, &[], counts.cache_hits);
            let name = "regctl_auth_cache_misses_total";
            header(w, name, "counter", "Credential verifications that ran bcrypt.");
            line(w, name, &[], counts.cache_misses);
            let name = "regctl_auth_bearer_verified_total";
            header(w, name, "counter", "Requests whose Bearer token verified (no bcrypt).");
            line(w, name, &[], counts.bearer_verified);
            let name = "regctl_auth_tokens_issued_total";
            header(w, name, "counter", "Tokens issued by /token (access and refresh).");
            line(w, name, &[], counts.tokens_issued);
        }

        {
            let n = lock(&self.notifications);
            let name = "regctl_notification_events_total";
            header(w, name, "counter", "Notification events by endpoint and outcome.");
            for ((endpoint, outcome), count) in &n.events {
                line(w, name, &[("endpoint", endpoint), ("outcome", outcome.as_str())], *count);
            }
            let name = "regctl_notification_failures_total";
            header(w, name, "counter", "Failed deliveries (each retried) by endpoint.");
            for (endpoint, count) in &n.failures {
                line(w, name, &[("endpoint", endpoint)], *count);
            }
            let name = "regctl_notification_pending";
            header(w, name, "gauge", "Events waiting to be delivered, by endpoint.");
            for (endpoint, count) in &n.pending {
                line(w, name, &[("endpoint", endpoint)], *count);
            }
        }

        let gc = lock(&self.gc);
        let name = "regctl_gc_runs_total";
        header(w, name, "counter", "Garbage collections by outcome.");
        line(w, name, &[("outcome", "ok")], gc.runs_ok);
        line(w, name, &[("outcome", "failed")], gc.runs_failed);
        line(w, name, &[("outcome", "skipped")], gc.runs_skipped);
        if let Some(at) = gc.last_run {
            let name = "regctl_gc_last_run_timestamp_seconds";
            header(w, name, "gauge", "When the last garbage collection ended (Unix time).");
            let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            line(w, name, &[], secs);
            let name = "regctl_gc_last_duration_seconds";
            header(w, name, "gauge", "How long the last successful garbage collection took.");
            let _ = writeln!(w, "{name} {}", gc.last.duration.as_secs_f64());
        }
        for (name, help, n) in [
            ("regctl_gc_blobs_deleted_total", "Blobs deleted by garbage collection.", gc.total.blobs),
            ("regctl_gc_bytes_freed_total", "Bytes freed by garbage collection.", gc.total.bytes),
            ("regctl_gc_manifests_deleted_total", "Untagged manifests deleted.", gc.total.manifests),
            ("regctl_gc_uploads_purged_total", "Abandoned upload sessions purged.", gc.total.uploads),
        ] {
            header(w, name, "counter", help);
            line(w, name, &[], n);
        }
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn labels_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn line(w: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    let _ = writeln!(w, "{name}{} {value}", labels_text(labels));
}

/// Appends the manifest cache's counters (see `registry::cache`) to a rendering.
pub fn render_manifest_cache(w: &mut String, hits: u64, misses: u64) {
    let name = "regctl_manifest_cache_lookups_total";
    header(w, name, "counter", "Manifest lookups (tag, revision, body) by outcome: hit or miss.");
    line(w, name, &[("outcome", "hit")], hits);
    line(w, name, &[("outcome", "miss")], misses);
}

/// A [`Storage`] that counts every operation of the one it wraps, by outcome.
#[derive(Debug)]
pub struct InstrumentedStorage {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStorage {
    /// Wraps `inner`, counting into `metrics`.
    pub fn new(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> InstrumentedStorage {
        InstrumentedStorage { inner, metrics }
    }

    fn record<T>(&self, op: &'static str, result: Result<T, StorageError>) -> Result<T, StorageError> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.is_not_found() => "not_found",
            // A conditional write that lost its race: coordination working as meant.
            Err(e) if e.is_precondition() => "precondition",
            // The client's body failing is not the storage's fault.
            Err(StorageError::Body(_)) => "client_error",
            Err(e) => {
                tracing::warn!(operation = op, error = %e, "storage operation failed");
                "error"
            }
        };
        self.metrics.storage_op(op, outcome);
        result
    }
}

#[async_trait]
impl Storage for InstrumentedStorage {
    async fn get(&self, path: &StoragePath) -> Result<Bytes, StorageError> {
        self.record("get", self.inner.get(path).await)
    }

    async fn reader(
        &self,
        path: &StoragePath,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StorageError> {
        self.record("reader", self.inner.reader(path, range).await)
    }

    async fn stat(&self, path: &StoragePath) -> Result<ObjectMeta, StorageError> {
        self.record("stat", self.inner.stat(path).await)
    }

    async fn put(&self, path: &StoragePath, data: Bytes) -> Result<(), StorageError> {
        self.record("put", self.inner.put(path, data).await)
    }

    async fn get_tagged(&self, path: &StoragePath) -> Result<(Bytes, ETag), StorageError> {
        self.record("get", self.inner.get_tagged(path).await)
    }

    async fn put_if(
        &self,
        path: &StoragePath,
        data: Bytes,
        condition: Condition<'_>,
    ) -> Result<ETag, StorageError> {
        self.record("put", self.inner.put_if(path, data, condition).await)
    }

    async fn list(&self, dir: &StoragePath) -> Result<Vec<String>, StorageError> {
        self.record("list", self.inner.list(dir).await)
    }

    async fn list_page(
        &self,
        dir: &StoragePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.record("list", self.inner.list_page(dir, after, limit).await)
    }

    async fn list_many(&self, dirs: &[StoragePath]) -> Result<Vec<Vec<String>>, StorageError> {
        if dirs.is_empty() {
            return Ok(Vec::new());
        }
        let listed = self.inner.list_many(dirs).await;
        // Counted per directory, as `list` would be: the count is the work, whatever the batching.
        if listed.is_ok() {
            for _ in 1..dirs.len() {
                self.metrics.storage_op("list", "ok");
            }
        }
        self.record("list", listed)
    }

    async fn append(&self, path: &StoragePath, offset: u64, data: ByteStream) -> Result<u64, StorageError> {
        self.record("append", self.inner.append(path, offset, data).await)
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath, size: u64) -> Result<(), StorageError> {
        self.record("rename", self.inner.rename(from, to, size).await)
    }

    async fn delete(&self, path: &StoragePath) -> Result<(), StorageError> {
        self.record("delete", self.inner.delete(path).await)
    }

    async fn walk(&self, dir: &StoragePath) -> Result<Vec<(String, ObjectMeta)>, StorageError> {
        self.record("walk", self.inner.walk(dir).await)
    }

    async fn visit(
        &self,
        dir: &StoragePath,
        visitor: &mut (dyn FnMut(String, ObjectMeta) + Send),
    ) -> Result<(), StorageError> {
        self.record("walk", self.inner.visit(dir, visitor).await)
    }

    async fn redirect_url(&self, path: &StoragePath) -> Result<Option<String>, StorageError> {
        self.record("redirect_url", self.inner.redirect_url(path).await)
    }

    async fn tidy(&self, abandoned_before: std::time::SystemTime) -> Result<u64, StorageError> {
        self.record("tidy", self.inner.tidy(abandoned_before).await)
    }
}

/// Upload sessions are counted from the registry's events: started, committed as a blob
/// (a monolithic upload counts as both), cancelled by their client.
impl Subscriber for Metrics {
    fn publish(&self, event: Event<'_>) {
        match event.happened {
            Happened::UploadStarted => self.upload_started(),
            Happened::BlobPushed { .. } => self.upload_completed(),
            Happened::UploadCancelled => self.upload_cancelled(),
            _ => {}
        }
    }
}

/// Authentication's own counters, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthCounts {
    /// Verifications answered from the cache.
    pub cache_hits: u64,
    /// Verifications that ran bcrypt (or a token's SHA-256).
    pub cache_misses: u64,
    /// Requests whose Bearer token verified.
    pub bearer_verified: u64,
    /// Tokens `/token` issued.
    pub tokens_issued: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_text() {
        let m = Metrics::default();
        m.request(Route::Manifest, &Method::PUT, StatusCode::CREATED, Duration::from_millis(30));
        m.request(Route::Manifest, &Method::PUT, StatusCode::CREATED, Duration::from_secs(100));
        m.bytes_in(Route::BlobUpload, 1234);
        m.upload_started();
        m.auth(AuthOutcome::Invalid);
        m.notification("ci \"x\"", EventOutcome::Sent, 2);
        let text = m.render(Some(AuthCounts {
            cache_hits: 3,
            cache_misses: 1,
            bearer_verified: 5,
            tokens_issued: 2,
        }));
        assert!(
            text.contains("regctl_http_requests_total{route=\"manifest\",method=\"PUT\",status=\"201\"} 2")
        );
        assert!(text.contains(
            "regctl_http_request_duration_seconds_bucket{route=\"manifest\",method=\"PUT\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "regctl_http_request_duration_seconds_bucket{route=\"manifest\",method=\"PUT\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("regctl_http_request_bytes_total{route=\"blob_upload\"} 1234"));
        assert!(text.contains("regctl_upload_sessions_in_progress 1"));
        assert!(text.contains("regctl_auth_failures_total{reason=\"invalid\"} 1"));
        assert!(text.contains("regctl_auth_cache_hits_total 3"));
        assert!(text.contains("regctl_auth_bearer_verified_total 5"));
        assert!(text.contains(r#"regctl_notification_events_total{endpoint="ci \"x\"",outcome="sent"} 2"#));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "not a sample line: {l}");
        }
    }

    #[test]
    fn invented_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            let method =
                Method::from_bytes(format!("M{i:08}{}", "X".repeat(1000)).as_bytes()).expect("a token");
            m.request(Route::Base, &method, StatusCode::UNAUTHORIZED, Duration::from_millis(1));
        }
        assert_eq!(lock(&m.requests).len(), 1);
        assert_eq!(lock(&m.latency).len(), 1);
        let text = m.render(None);
        assert!(
            text.contains("regctl_http_requests_total{route=\"base\",method=\"other\",status=\"401\"} 100")
        );
        assert!(!text.contains("XXXX"));
    }

    #[tokio::test]
    async fn instrumented_storage_counts_outcomes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let storage =
            InstrumentedStorage::new(Arc::new(crate::storage::FsStorage::new(dir.path())), metrics.clone());
        let p = StoragePath::new(["x"]);
        assert!(storage.get(&p).await.is_err());
        storage.put(&p, Bytes::from_static(b"1")).await.expect("put");
        // A path below a regular file cannot be written: a storage error.
        assert!(storage.put(&StoragePath::new(["x/y"]), Bytes::new()).await.is_err());
        let text = metrics.render(None);
        assert!(text.contains(r#"regctl_storage_errors_total{operation="put"} 1"#), "{text}");
        assert!(
            text.contains(r#"regctl_storage_operations_total{operation="get",outcome="not_found"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"regctl_storage_operations_total{operation="put",outcome="ok"} 1"#));
    }
}
