//! Starting and stopping the server: listeners, background tasks, graceful shutdown.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use futures_util::FutureExt;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    clock::{Clock, SystemClock},
    config::Config,
    http,
    serve::{Certificates, serve, serve_tls},
    service::Services,
    store::Store,
};

/// A running server.
pub struct Server {
    /// The client API addresses actually bound (port 0 in the config becomes a real port).
    pub addrs: Vec<SocketAddr>,
    /// The bound metrics address, when metrics are on.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound TLS (federation) address, when one is configured.
    pub federation_addr: Option<SocketAddr>,
    /// The services, for operators' commands and tests that need the same view of the data.
    pub services: Arc<Services>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<std::io::Result<()>>,
}

/// Opens the database and wires the services without listening (for CLI commands).
pub async fn services(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Services>> {
    let store = Store::connect(&config.database.url, config.database.max_connections).await?;
    Ok(Arc::new(Services::new(config, store, clock).await?))
}

impl Server {
    /// Starts with the real clock.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Starts with the given clock: binds every listener, then serves until [`Self::shutdown`].
    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        raise_open_file_limit();
        let mut config = config;
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the client API to {addr}"))?;
            listeners.push(listener);
        }
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        if config.public_baseurl.is_none() {
            // Announce the port actually bound (it differs from the configured one for port 0).
            let port = addrs.first().map_or(8008, SocketAddr::port);
            config.public_baseurl = Some(format!("http://{}:{port}/", config.server_name));
        }
        let services = services(config, clock).await?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let app = http::router(services.clone());
        for listener in listeners {
            tasks.spawn(serve(listener, app.clone(), stopped.clone()));
        }
        tasks.spawn(crate::service::gate::run_background(
            services.clone(),
            stopped.clone(),
        ));
        tasks.spawn(crate::service::names::run_background(
            services.clone(),
            stopped.clone(),
        ));
        tasks.spawn(crate::service::federation::run_sender(
            services.clone(),
            stopped.clone(),
        ));
        tasks.spawn(crate::service::housekeeping::run_background(
            services.clone(),
            stopped.clone(),
        ));
        let federation_addr = match &services.config.federation {
            federation @ crate::config::FederationConfig {
                enabled: true,
                listen: Some(addr),
                tls_certificate: Some(certificate),
                tls_private_key: Some(private_key),
                ..
            } => {
                let certificates = Certificates::load(certificate, private_key)?;
                let tls = certificates.server_config()?;
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the federation listener to {addr}"))?;
                let bound = listener.local_addr()?;
                tasks.spawn(serve_tls(listener, tls, app.clone(), stopped.clone()));
                tasks.spawn(reload_on_hangup(certificates, stopped.clone()));
                tracing::debug!(listen = ?federation.listen, "federation TLS listener");
                Some(bound)
            }
            _ => None,
        };
        let metrics_addr = match services.config.metrics.listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics to {addr}"))?;
                let bound = listener.local_addr()?;
                tasks.spawn(serve(
                    listener,
                    http::metrics_router(services.clone()),
                    stopped.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        tracing::info!(
            server_name = %services.config.server_name,
            listen = ?addrs,
            metrics = ?metrics_addr,
            federation = ?federation_addr,
            database = ?services.store.backend(),
            "matrixon is ready"
        );
        Ok(Self {
            addrs,
            metrics_addr,
            federation_addr,
            services,
            stop,
            tasks,
        })
    }

    /// The base URL of the first listener, e.g. `http://127.0.0.1:8008`.
    pub fn base_url(&self) -> String {
        self.addrs
            .first()
            .map_or_else(String::new, |a| format!("http://{a}"))
    }

    /// Stops accepting connections, answers waiting syncs at once, lets in-flight requests
    /// finish, then closes the database.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.services.bus.close();
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(%err, "listener failed"),
                Err(err) => tracing::error!(%err, "listener task failed"),
            }
        }
        self.services.store.close().await;
        tracing::info!("matrixon stopped");
    }
}

/// Re-reads the TLS certificate and key whenever the process gets SIGHUP.
async fn reload_on_hangup(
    certificates: std::sync::Arc<Certificates>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            received = hangups.recv() => match received {
                Some(()) => certificates.reload(),
                None => return Ok(()),
            },
            _ = stopped.wait_for(|stop| *stop).map(drop) => return Ok(()),
        }
    }
}

/// Every waiting client holds a socket: take all the open files the system allows.
fn raise_open_file_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) if before.as_ref().is_ok_and(|b| *b < now) => {
            tracing::info!(
                from = before.unwrap_or_default(),
                to = now,
                "raised the open-file limit to the hard limit"
            );
        }
        Ok(now) => tracing::info!(limit = now, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}
