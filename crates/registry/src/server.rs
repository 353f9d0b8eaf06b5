//! Running the server: build the state from a [`Config`], start the background tasks, bind,
//! serve (plain HTTP here, HTTPS through [`crate::tls`]) until a shutdown signal, then let
//! in-flight requests finish. Connections are served by [`crate::connection`].

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::auth::{self, Htpasswd, HtpasswdError};
use crate::config::Config;
use crate::connection::{self, ConnLimits};
use crate::storage::{FsStorage, Storage};
use crate::{AppState, Registry, app};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The htpasswd file could not be loaded.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
    /// The token signing keys could not be read or created in storage.
    #[error(transparent)]
    TokenKeys(#[from] auth::keys::KeyError),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// S3 storage is configured but this build has none (built without the `s3` feature).
    #[error(
        "S3 storage is configured but this server was built without S3 support: rebuild with the \
         default features (cargo build --release -p regctl-registry), or store on a filesystem"
    )]
    NoS3,
    /// `[auth.htpasswd]` names no users: neither a file nor the storage.
    #[error("[auth.htpasswd] needs `path = \"FILE\"` or `instorage = true`")]
    NoUsers,
    /// HTTPS could not be set up (settings, certificate files, ACME cache, port 80).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Builds the shared state from `config`: storage (counted into the metrics), users, and the
/// notification queues (started here, so this needs a Tokio runtime).
pub async fn state(config: &Config) -> Result<AppState, ServeError> {
    let storage: Arc<dyn Storage> = match &config.storage.s3 {
        #[cfg(feature = "s3")]
        Some(s3) => Arc::new(crate::storage::S3Storage::new(s3).await),
        #[cfg(not(feature = "s3"))]
        Some(_) => return Err(ServeError::NoS3),
        None => Arc::new(FsStorage::new(&config.storage.filesystem.rootdirectory)),
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let storage: Arc<dyn Storage> =
        Arc::new(crate::metrics::InstrumentedStorage::new(storage, metrics.clone()));
    let auth = match &config.auth.htpasswd {
        Some(h) => {
            let anonymous_pull = config.auth.anonymous == Some(crate::config::Anonymous::Pull);
            let token = &config.auth.token;
            let settings = auth::token_endpoint::TokenSettings {
                bearer: token.bearer,
                anonymous_pull,
                lifetime: token.lifetime,
            };
            let tokens = auth::token_endpoint::TokenService::start(storage.clone(), settings).await?;
            let users = match &h.path {
                _ if h.instorage => Htpasswd::load_from_storage(storage.clone(), &h.realm).await?,
                Some(path) => Htpasswd::load(path, &h.realm)?,
                None => return Err(ServeError::NoUsers),
            };
            Some(Arc::new(users.with_tokens(tokens)))
        }
        None => None,
    };
    let settings = crate::ops::OpsSettings::from_config(config);
    let notifier = crate::notify::Notifier::start(
        &config.notifications,
        storage.clone(),
        config.http.addr.clone(),
        settings.scheme,
        metrics.clone(),
    );
    let mut registry = Registry::new(storage)
        .with_max_blob_size(config.storage.maxblobsize)
        .with_tag_rules(config.tags.clone())
        .with_subscriber(metrics.clone());
    if let Some(notifier) = &notifier {
        registry = registry.with_subscriber(notifier.clone());
    }
    if let Some(s3) = &config.storage.s3
        && !s3.manifestcachettl.is_zero()
    {
        // Each manifest read is three S3 round trips otherwise; see registry::cache.
        registry = registry.with_manifest_cache(s3.manifestcachettl);
    }
    let ops = crate::ops::Ops { metrics, notifier, settings, draining: Default::default() };
    Ok(AppState { registry: Arc::new(registry), auth, ops: Arc::new(ops) })
}

/// Serves the registry described by `config` until the first of `signals` (normally
/// [`crate::shutdown::signals`]) and the drain after it ([`crate::shutdown`]), then lets
/// in-flight requests finish.
pub async fn serve(config: Config, signals: mpsc::UnboundedReceiver<()>) -> Result<(), ServeError> {
    let state = state(&config).await?;
    let ops = state.ops.clone();
    let shutdown = crate::shutdown::after_drain(signals, ops.draining.clone(), config.http.draintime);
    crate::registry::spawn_watch(state.registry.clone());
    crate::registry::spawn_tidy(state.registry.clone(), config.gc.uploadmaxage, config.gc.leasettl);
    crate::memory::spawn_idle_trim(ops.metrics.clone());
    if let Some(interval) = config.gc.interval {
        let options = crate::gc::GcOptions::from_config(&config.gc, &config.tags);
        crate::gc::spawn_scheduled(state.registry.clone(), options, interval, ops.metrics.clone());
    }
    let tls = crate::tls::TlsSettings::from_config(&config.http.tls)?;
    let limits = ConnLimits::from_config(&config.http);
    let listener = tokio::net::TcpListener::bind(&config.http.addr)
        .await
        .map_err(|source| ServeError::Bind { addr: config.http.addr.clone(), source })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    let root = match &config.storage.s3 {
        Some(s3) => format!("s3://{}/{}", s3.bucket, s3.rootdirectory.trim_matches('/')),
        None => config.storage.filesystem.rootdirectory.display().to_string(),
    };
    match &state.auth {
        Some(auth) => {
            tracing::info!(
                users = auth.user_count(),
                realm = auth.realm(),
                anonymous_pull = auth.anonymous_pull(),
                "htpasswd authentication on"
            );
            let auth = Arc::clone(auth);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(auth::RELOAD_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    auth.reload().await;
                }
            });
        }
        None => tracing::warn!(
            "authentication is off: anyone who can reach {local} can push and pull (set auth.htpasswd or --htpasswd)"
        ),
    }
    if let Some(tls) = tls {
        tracing::info!(storage = %root, "serving the registry over HTTPS");
        // On S3 the ACME cache lives in the bucket: a new instance reuses the certificate.
        let store = config.storage.s3.is_some().then(|| state.registry.shared_storage());
        crate::tls::serve(listener, app(state), tls, store, config.http.hsts, limits, shutdown).await?;
        if let Some(notifier) = &ops.notifier {
            notifier.flush().await;
        }
        tracing::info!("registry stopped");
        return Ok(());
    }
    tracing::info!(addr = %local, storage = %root, "registry listening on http://{local}");
    let app = app(state);
    connection::accept_loop(listener, shutdown, limits, move |tcp, remote, watcher| {
        connection::serve(tcp, remote, app.clone(), limits, watcher)
    })
    .await;
    // Events not yet delivered are in storage; a restart resumes them.
    if let Some(notifier) = &ops.notifier {
        notifier.flush().await;
    }
    tracing::info!("registry stopped");
    Ok(())
}
