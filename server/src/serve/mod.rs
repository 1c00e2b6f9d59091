//! The HTTP server: accepting connections and speaking HTTP/1.1 on them (HTTP/2 with prior
//! knowledge is handed to hyper). Its own HTTP/1.1 layer exists for one reason: a connection
//! whose request waits (a long-polling `/sync`) keeps no buffer, so that very many of them fit.

mod body;
mod connection;
mod h2c;
mod request;
mod response;
mod stall;
mod tls;

pub use tls::{Certificates, serve_tls};

use std::time::Duration;

use axum::Router;
use futures_util::FutureExt;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::task::TaskTracker;

/// Serves `app` on `listener` until `stopped`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped.wait_for(|stop| *stop).map(drop) => break,
        };
        // Answers go out in one write; small ones must not wait for the client's ACK.
        let _ = stream.set_nodelay(true);
        connections.spawn(connection::serve(
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
