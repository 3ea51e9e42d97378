//! `shoal node`: a long-running DHT server node to bootstrap from; no torrent needed.
use crate::cli::common::{effective_mode, init_logging, interrupted, shutdown_promptly, NetArgs};
use clap::Args;
use shoal::keepalive::SessionLink;
use shoal::p2p::DhtMode;

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub net: NetArgs,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    init_logging(args.net.quiet);
    let options = args.net.options()?;
    if args.net.no_kad {
        return Err(crate::cli::bad_input("node: --no-kad leaves nothing to run"));
    }
    let node = args.net.start_node(&options, DhtMode::Server).await?.expect("kad is on");
    let cancel = tokio_util::sync::CancellationToken::new();
    let mode = effective_mode(&options, DhtMode::Server)?;
    let keepalive = args.net.start_key_peer_monitor(&options, &node, SessionLink::detached(), cancel.clone()).await?;
    let _diag = args.net.start_diag(None, Some((node.clone(), mode)), keepalive, cancel.clone()).await?;
    interrupted().await;
    cancel.cancel();
    shutdown_promptly(node.shutdown()).await;
    Ok(())
}
