//! `shoal node`: a long-running DHT server node to bootstrap from; no torrent needed.
use crate::cli::common::{announce_listening, init_logging, interrupted, shutdown_promptly, NetArgs};
use clap::Args;
use shoal::p2p::DhtMode;

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub net: NetArgs,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    init_logging(args.net.quiet);
    let options = args.net.options()?;
    if !options.kad {
        return Err(crate::cli::bad_input("node: --no-kad leaves nothing to run"));
    }
    let session = args.net.start_session(&options, None, DhtMode::Server).await?;
    announce_listening(&session, false).await?;
    interrupted().await;
    shutdown_promptly(session.shutdown()).await;
    Ok(())
}
