//! `shoal download`: fetch a torrent into a directory; exit 0 only when every piece is
//! verified on disk; with `--seed`, stay and seed until interrupted.
use crate::cli::common::{announce_listening, init_logging, interrupted, shutdown_promptly, NetArgs};
use crate::cli::progress::{summary, Progress};
use crate::cli::{bad_input, info};
use anyhow::Context;
use clap::Args;
use shoal::metainfo::magnet::parse_select_only;
use shoal::metainfo::select::select_files;
use shoal::metainfo::{Magnet, Metainfo};
use shoal::p2p::DhtMode;
use shoal::torrent::{Phase, TorrentEvent, TorrentHandle};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// A .torrent file or a magnet URI.
    pub input: String,
    /// Output directory: a single-file torrent lands at `DIR/<name>`, a multi-file one under
    /// `DIR/<name>/`.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// The .torrent for a magnet link (metadata from peers is not fetched yet).
    #[arg(long, value_name = "FILE")]
    pub torrent: Option<String>,
    /// Download only these files (BEP 53): indices as `shoal info` lists them, e.g. `0,2-3`.
    /// Other files are not created; their share of pieces shared with selected files is
    /// kept in `DIR/.<info-hash>.parts`. Overrides a magnet's `so=`.
    #[arg(long, value_name = "LIST")]
    pub only: Option<String>,
    /// Keep seeding after the download completes, until interrupted.
    #[arg(long)]
    pub seed: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

/// The files to download: `--only`, else the magnet's `so=`, else all (`None`).
fn selection(
    args: &DownloadArgs,
    meta: &Metainfo,
    magnet_so: &[RangeInclusive<u32>],
) -> anyhow::Result<Option<Vec<bool>>> {
    let (what, ranges) = match &args.only {
        Some(list) => {
            let bad = |_| {
                bad_input(format!("--only: bad file list {list:?} (indices as `shoal info` lists them, e.g. 0,2-3)"))
            };
            ("--only", parse_select_only(list).map_err(bad)?)
        }
        None if !magnet_so.is_empty() => ("the magnet's so=", magnet_so.to_vec()),
        None => return Ok(None),
    };
    let selected = select_files(meta, &ranges).map_err(|e| bad_input(format!("{what}: {e}")))?;
    Ok(Some(selected))
}

/// Reads the metainfo named on the command line (a magnet needs its .torrent for now): the
/// metainfo, the magnet's peers and its `so=` selection.
fn load_input(args: &DownloadArgs) -> anyhow::Result<(Metainfo, Vec<String>, Vec<RangeInclusive<u32>>)> {
    if !args.input.to_ascii_lowercase().starts_with("magnet:") {
        return Ok((info::load(&args.input)?, Vec::new(), Vec::new()));
    }
    let magnet = Magnet::parse(&args.input).map_err(|e| bad_input(e.to_string()))?;
    let Some(file) = &args.torrent else {
        return Err(bad_input(format!(
            "magnet {}: fetching metadata from peers is not supported yet; pass its .torrent with --torrent FILE",
            magnet.info_hash
        )));
    };
    let meta = info::load(file)?;
    if meta.info_hash != magnet.info_hash {
        return Err(bad_input(format!(
            "{file}: info-hash {} does not match the magnet's {}",
            meta.info_hash, magnet.info_hash
        )));
    }
    Ok((meta, magnet.peers.clone(), magnet.select_only.clone()))
}

/// With debug logging on, one `piece verified` line per piece written (tests that kill a
/// download at a chosen point count them).
fn log_verified_pieces(handle: &TorrentHandle) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let mut events = handle.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(TorrentEvent::PieceVerified(piece)) => tracing::debug!(piece, "piece verified"),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

pub async fn run(args: DownloadArgs) -> anyhow::Result<()> {
    init_logging(args.net.quiet);
    let options = args.net.options()?;
    let (meta, magnet_peers, magnet_so) = load_input(&args)?;
    let selection = selection(&args, &meta, &magnet_so)?;
    let wanted = shoal::torrent::wanted_bytes(&meta, selection.as_deref());
    let mut net = args.net.clone();
    net.peers.extend(magnet_peers);
    let peers = net.peer_addrs().await?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create the output directory", args.output.display()))?;

    let listen = args.net.listen.unwrap_or_else(|| "0.0.0.0:0".parse().expect("valid address"));
    let session = args.net.start_session(&options, Some(listen), DhtMode::Auto).await?;
    announce_listening(&session, true).await?;
    let meta = Arc::new(meta);
    let handle = session.add_torrent_selected(meta.clone(), args.output.clone(), selection);
    log_verified_pieces(&handle);
    handle.add_peers(peers).await;

    let started = Instant::now();
    let progress = Progress::new(args.net.quiet, wanted);
    let follow = tokio::spawn(progress.follow(handle.stats(), |s| matches!(s.phase, Phase::Seeding | Phase::Failed)));
    let outcome = tokio::select! {
        r = handle.wait_complete() => r.map_err(|e| e.to_string()),
        _ = interrupted() => Err("interrupted".to_string()),
    };
    follow.abort();
    let _ = follow.await;
    let stats = handle.stats().borrow().clone();
    if let Err(why) = outcome {
        shutdown_promptly(session.shutdown()).await;
        anyhow::bail!(
            "{}: download incomplete ({} of {} pieces verified): {why}",
            meta.name,
            stats.pieces_have,
            stats.pieces_total
        );
    }
    if !args.net.quiet {
        eprintln!("{}", summary(&stats, started.elapsed()));
    }
    if args.seed {
        if !args.net.quiet {
            eprintln!("seeding {}; Ctrl-C to stop", meta.name);
        }
        interrupted().await;
    }
    shutdown_promptly(session.shutdown()).await;
    Ok(())
}
