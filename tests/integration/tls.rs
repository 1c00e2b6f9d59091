//! TLS for the tests' own servers: the certificate for `localhost`/127.0.0.1 from the test
//! CA in `tests/fixtures/tls`, which the servers under test are told to trust.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// An acceptor presenting the test certificate.
pub fn acceptor() -> tokio_rustls::TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(include_bytes!("../fixtures/tls/server.pem"))
            .collect::<Result<_, _>>()
            .expect("certificate");
    let key =
        PrivateKeyDer::from_pem_slice(include_bytes!("../fixtures/tls/server.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS front on `listener` for the plain-HTTP server at `backend` (as a reverse proxy
/// terminating TLS would be).
pub fn front(listener: tokio::net::TcpListener, backend: std::net::SocketAddr) {
    let acceptor = acceptor();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}
