//! Serving an axum router over TCP (the daemon's API and the diagnostics), within bounds a
//! stranger who reaches the port cannot pass.
//!
//! `axum::serve` bounds neither: it takes every connection it accepts and gives hyper no timer,
//! so hyper's header-read timeout never runs. A client that connects and sends nothing, or a
//! byte a minute, held its connection (a file descriptor and a task) for ever, and a few
//! thousand of them took the process's descriptors from its peers and files. Here:
//! - a connection must deliver each request's head within [`Bounds::header_timeout`] (hyper
//!   arms the timer when it starts reading a head, so an idle keep-alive connection ends
//!   after the same time);
//! - at most [`Bounds::connections`] are open at once, [`Bounds::per_ip`] of them from one IP
//!   address (an IPv6 address counts as its /64, as everywhere in shoal; the count is the
//!   [`Slots`] the session's handshakes use); a connection past either is closed as it is
//!   accepted, before a byte is read.
//!
//! hyper bounds a request head itself (100 headers, 400 KB of buffer) and axum a body it
//! extracts (2 MB). Once the stop signal fires, no connection is accepted and the server ends
//! when the requests in flight are answered.
use crate::types::{PeerAddr, Slots};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What one server allows.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Time for a request's head to arrive, from when the server starts reading it.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub connections: usize,
    /// Connections open at once from one IP address (or IPv6 /64).
    pub per_ip: usize,
}

impl Default for Bounds {
    /// 10 s, 64 connections, 16 from one address: a browser opens 6 to a host, a script one.
    fn default() -> Bounds {
        Bounds { header_timeout: Duration::from_secs(10), connections: 64, per_ip: 16 }
    }
}

/// Serves `app` on `listener` within `bounds` until `stop` completes, then until the
/// requests in flight are answered.
pub async fn serve(listener: TcpListener, app: Router, bounds: Bounds, stop: impl Future<Output = ()>) {
    let open = Arc::new(Slots::new(bounds.connections, bounds.per_ip));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(bounds.header_timeout);
    tokio::pin!(stop);
    loop {
        let (tcp, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken: wait a
                    // little rather than spin.
                    tracing::debug!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let slot = match open.try_acquire(&PeerAddr::Tcp(from)) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%from, %why, "http connection refused");
                continue;
            }
        };
        let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%from, error = %e, "http connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests;
