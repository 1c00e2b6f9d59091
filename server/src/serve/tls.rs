//! The TLS listener (federation's port 8448, and the client API beside it): rustls with a
//! certificate re-read on SIGHUP, HTTP/1.1 by hyper. Few connections arrive here compared to
//! the client listener, so it does without that listener's buffer-free idle connections.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use axum::{Router, extract::ConnectInfo};
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may wait for its next request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificate and key in use, replaced by [`Certificates::reload`].
#[derive(Debug)]
pub struct Certificates {
    certificate: String,
    private_key: String,
    current: RwLock<Arc<CertifiedKey>>,
}

fn load(certificate: &str, private_key: &str) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .with_context(|| format!("reading the TLS certificate {certificate}"))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {certificate}"))?;
    if chain.is_empty() {
        anyhow::bail!("{certificate} holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .with_context(|| format!("reading the TLS private key {private_key}"))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .with_context(|| format!("{private_key} is not a supported private key"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl Certificates {
    /// Loads the files (an error names the one that failed).
    pub fn load(certificate: &str, private_key: &str) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            current: RwLock::new(load(certificate, private_key)?),
            certificate: certificate.to_owned(),
            private_key: private_key.to_owned(),
        }))
    }

    /// Reads the files again; on failure the old certificate stays in use.
    pub fn reload(&self) {
        match load(&self.certificate, &self.private_key) {
            Ok(loaded) => {
                if let Ok(mut current) = self.current.write() {
                    *current = loaded;
                    tracing::info!(certificate = %self.certificate, "reloaded the TLS certificate");
                }
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "could not reload the TLS certificate: the old one stays in use");
            }
        }
    }

    /// The rustls configuration serving these certificates.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| current.clone())
    }
}

/// Serves `app` over TLS on `listener` until `stopped`, then lets in-flight requests finish.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "could not accept a TLS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped.wait_for(|stop| *stop).map(drop) => break,
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            acceptor.clone(),
            stream,
            peer,
            app.clone(),
            stopped.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service =
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let app = app.clone();
            request.extensions_mut().insert(ConnectInfo(peer));
            async move {
                let response = app
                    .oneshot(request.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response)
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "TLS connection ended with an error");
            }
        }
        _ = stopped.wait_for(|stop| *stop).map(drop) => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}
