//! Running the server: build the state from a [`Config`], bind, serve until a shutdown signal,
//! then let in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::{self, Htpasswd, HtpasswdError};
use crate::config::Config;
use crate::storage::FsStorage;
use crate::{AppState, Registry, app};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The htpasswd file could not be loaded.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
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
}

/// Builds the shared state from `config`.
pub fn state(config: &Config) -> Result<AppState, ServeError> {
    let storage = Arc::new(FsStorage::new(&config.storage.filesystem.rootdirectory));
    let auth = match &config.auth.htpasswd {
        Some(h) => Some(Arc::new(Htpasswd::load(&h.path, &h.realm)?)),
        None => None,
    };
    Ok(AppState { registry: Arc::new(Registry::new(storage)), auth })
}

/// Serves the registry described by `config` until `shutdown` completes.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = state(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.http.addr)
        .await
        .map_err(|source| ServeError::Bind { addr: config.http.addr.clone(), source })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    let root = config.storage.filesystem.rootdirectory.display().to_string();
    match &state.auth {
        Some(auth) => {
            tracing::info!(users = auth.user_count(), realm = auth.realm(), "htpasswd authentication on");
            let auth = Arc::clone(auth);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(auth::RELOAD_INTERVAL);
                loop {
                    tick.tick().await;
                    let auth = Arc::clone(&auth);
                    let _ = tokio::task::spawn_blocking(move || auth.reload_if_changed()).await;
                }
            });
        }
        None => tracing::warn!(
            "authentication is off: anyone who can reach {local} can push and pull (set auth.htpasswd or --htpasswd)"
        ),
    }
    tracing::info!(addr = %local, storage = %root, "registry listening on http://{local}");
    axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)?;
    tracing::info!("registry stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
