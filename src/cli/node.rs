//! `shoal node`: a long-running DHT server node to bootstrap from; no torrent needed.
use crate::cli::common::{announce_listening, init_logging, interrupted, shutdown_promptly, NetArgs};
use clap::Args;
use shoal::p2p::DhtMode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Serve as a circuit relay (v2) for nodes behind NAT (the config's `relay`).
    #[arg(long)]
    pub relay: bool,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    init_logging(args.net.quiet);
    let mut options = args.net.options()?;
    if args.relay {
        Arc::make_mut(&mut options).relay = true;
    }
    if !options.kad {
        return Err(crate::cli::bad_input("node: --no-kad leaves nothing to run"));
    }
    let session = args.net.start_session(&options, None, DhtMode::Server).await?;
    announce_listening(&session, false).await?;
    interrupted().await;
    shutdown_promptly(session.shutdown()).await;
    Ok(())
}
