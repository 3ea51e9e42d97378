//! `shoal daemon`: one long-running session holding many torrents, managed over the HTTP API
//! of [`shoal::daemon`]. Prints `listening bt/kad/diag/api` lines once ready; stops on Ctrl-C
//! or SIGTERM, leaving the state directory as it is so the next start resumes it.
use crate::cli::bad_input;
use crate::cli::common::{announce_line, announce_listening, init_logging, listen_addr, shutdown_promptly, NetArgs};
use clap::Args;
use shoal::daemon::{api, state, Daemon};
use shoal::p2p::DhtMode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Address of the HTTP API. Any address is allowed (every request needs the token from
    /// the state directory), but the API is plain HTTP: keep it on loopback or a trusted
    /// network.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub api: SocketAddr,
    /// Where the token, the torrent list and the torrents are kept; default
    /// `$XDG_DATA_HOME/shoal/daemon` (or `~/.local/share/shoal/daemon`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// The state directory: `--state-dir`, else the default one.
pub fn state_dir(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(dir) => Ok(dir.clone()),
        None => state::default_state_dir().map_err(|e| bad_input(e.to_string())),
    }
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    init_logging(args.net.quiet);
    let options = args.net.options()?;
    let dir = state_dir(args.state_dir.as_ref())?;
    if !args.net.peers.is_empty() {
        return Err(bad_input("--peer: the daemon takes peers per torrent (`peer=` when adding one)"));
    }
    let listen = listen_addr(&options, "0.0.0.0:6881");
    let mut net = args.net.clone();
    net.mainline_nodes = Some(dir.join("mainline-nodes"));
    let session = Arc::new(net.start_session(&options, Some(listen), DhtMode::Server).await?);
    let daemon = Daemon::open(session.clone(), &dir).await?;
    let cancel = CancellationToken::new();
    let (addr, server) = api::serve(args.api, daemon.clone(), cancel.clone())
        .await
        .map_err(|e| bad_input(format!("--api {}: {e}", args.api)))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the API listens beyond loopback over plain HTTP; the token is its only guard");
    }
    // Registered before `listening api`: a script may send SIGTERM as soon as it reads it.
    let stop = stop_signals()?;
    announce_listening(&session, true).await?;
    announce_line(&format!("listening api {addr}"));
    stop.await;
    cancel.cancel();
    shutdown_promptly(async {
        daemon.shutdown().await;
        let _ = server.await;
    })
    .await;
    Ok(())
}

/// SIGINT or SIGTERM, its handlers installed now (not at the first poll, as
/// `tokio::signal::ctrl_c` does), so no signal arriving after this call kills the process
/// before the state is left in order.
#[cfg(unix)]
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(crate::cli::common::interrupted())
}
