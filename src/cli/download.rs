//! `shoal download`: fetch a torrent into a directory; exit 0 only when every piece is
//! verified on disk; with `--seed`, stay and seed until interrupted. A magnet without its
//! `.torrent` first has its metadata fetched from peers (BEP 9), saved as a `.torrent`.
use crate::cli::common::{announce_listening, init_logging, interrupted, listen_addr, shutdown_promptly, NetArgs};
use crate::cli::progress::{follow_metadata, summary, Progress};
use crate::cli::{bad_input, info};
use anyhow::Context;
use clap::Args;
use shoal::metadata::{torrent_file, FetchStatus, MetadataError};
use shoal::metainfo::magnet::parse_select_only;
use shoal::metainfo::select::select_files;
use shoal::metainfo::{Magnet, Metainfo};
use shoal::p2p::DhtMode;
use shoal::session::{Session, TorrentSetup};
use shoal::torrent::{Phase, TorrentEvent, TorrentHandle};
use shoal::types::PeerAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// A .torrent file or a magnet URI.
    pub input: String,
    /// Output directory: a single-file torrent lands at `DIR/<name>`, a multi-file one under
    /// `DIR/<name>/`.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// The .torrent for a magnet link; without it the metadata is fetched from the magnet's
    /// peers (`x.pe`, `--peer`, trackers, the DHT).
    #[arg(long, value_name = "FILE")]
    pub torrent: Option<String>,
    /// Where to save the .torrent of a magnet whose metadata was fetched from peers
    /// [default: DIR/<name>.torrent, next to the data].
    #[arg(long = "save-torrent", value_name = "FILE")]
    pub save_torrent: Option<PathBuf>,
    /// How long to look for a magnet's metadata before giving up (exit 1): seconds, or a
    /// duration such as `90s` or `10m`.
    #[arg(long = "metadata-timeout", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub metadata_timeout: Duration,
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

/// Seconds (`300`) or a humantime duration (`5m`); at least one second.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string())?,
    };
    if d < Duration::from_secs(1) {
        return Err("must be at least one second".into());
    }
    Ok(d)
}

/// What the command line names: a torrent ready to run, or a magnet whose metadata is
/// still to be fetched.
enum Input {
    Ready(Metainfo),
    Fetch(Magnet),
}

/// The files to download as ranges of indices: `--only` (its syntax checked before anything
/// runs), else the magnet's `so=`; `None` for all.
fn wanted_files(
    args: &DownloadArgs,
    magnet_so: Vec<RangeInclusive<u32>>,
) -> anyhow::Result<Option<(String, Vec<RangeInclusive<u32>>)>> {
    match &args.only {
        Some(list) => {
            let bad = |_| {
                bad_input(format!("--only: bad file list {list:?} (indices as `shoal info` lists them, e.g. 0,2-3)"))
            };
            Ok(Some(("--only".into(), parse_select_only(list).map_err(bad)?)))
        }
        None if !magnet_so.is_empty() => Ok(Some(("the magnet's so=".into(), magnet_so))),
        None => Ok(None),
    }
}

/// One flag per file of `meta` for the wanted files; an index past the last file is the
/// user's mistake, named.
fn selection(meta: &Metainfo, wanted: Option<(String, Vec<RangeInclusive<u32>>)>) -> anyhow::Result<Option<Vec<bool>>> {
    let Some((what, ranges)) = wanted else { return Ok(None) };
    let selected = select_files(&meta.files, &ranges).map_err(|e| bad_input(format!("{what}: {e}")))?;
    Ok(Some(selected))
}

/// Reads the metainfo named on the command line, with the magnet's `x.pe` peers and `so=`.
fn load_input(args: &DownloadArgs) -> anyhow::Result<(Input, Vec<String>, Vec<RangeInclusive<u32>>)> {
    if !args.input.to_ascii_lowercase().starts_with("magnet:") {
        return Ok((Input::Ready(info::load(&args.input)?), Vec::new(), Vec::new()));
    }
    let magnet = Magnet::parse(&args.input).map_err(|e| bad_input(e.to_string()))?;
    let so = magnet.select_only.clone();
    let Some(file) = &args.torrent else {
        let peers = magnet.peers.clone();
        return Ok((Input::Fetch(magnet), peers, so));
    };
    let meta = info::load(file)?;
    if meta.info_hash != magnet.info_hash {
        return Err(bad_input(format!(
            "{file}: info-hash {} does not match the magnet's {}",
            meta.info_hash, magnet.info_hash
        )));
    }
    Ok((Input::Ready(meta), magnet.peers.clone(), so))
}

/// Fetches a magnet's metadata (the "fetching metadata" phase), saves its `.torrent` and
/// returns it. Not found within `--metadata-timeout`: exit 1, naming the magnet.
async fn fetch_metadata(
    args: &DownloadArgs,
    session: &Session,
    magnet: &Magnet,
    peers: Vec<PeerAddr>,
) -> anyhow::Result<Metainfo> {
    let (status_tx, status) = tokio::sync::watch::channel(FetchStatus { known: peers.len(), ..Default::default() });
    let follow = tokio::spawn(follow_metadata(args.net.quiet, magnet.info_hash.to_hex(), status));
    let fetched = tokio::select! {
        r = session.fetch_metadata(magnet, peers, args.metadata_timeout, status_tx) => r.map_err(Some),
        _ = interrupted() => Err(None),
    };
    // The fetch's status sender is gone (finished or dropped): the follower clears its line.
    let _ = follow.await;
    let info = fetched.map_err(|e| match e {
        // Nothing on the command line to ask (no x.pe, --peer, tr, and no DHT): the user's to fix.
        Some(e @ MetadataError::NoPeers) => bad_input(format!("magnet {}: {e}", magnet.info_hash)),
        Some(e) => anyhow::anyhow!("magnet {}: {e}", magnet.info_hash),
        None => anyhow::anyhow!("magnet {}: interrupted", magnet.info_hash),
    })?;
    let bytes = torrent_file(&info, &magnet.trackers);
    let meta = Metainfo::from_bytes(&bytes).map_err(|e| {
        bad_input(format!("magnet {}: the metadata its peers sent is not a valid torrent: {e}", magnet.info_hash))
    })?;
    let path = args.save_torrent.clone().unwrap_or_else(|| args.output.join(format!("{}.torrent", meta.name)));
    std::fs::write(&path, &bytes).with_context(|| format!("{}: cannot save the .torrent", path.display()))?;
    tracing::info!(path = %path.display(), name = %meta.name, "metadata fetched; .torrent saved");
    Ok(meta)
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
    let (input, magnet_peers, magnet_so) = load_input(&args)?;
    let wanted = wanted_files(&args, magnet_so)?;
    let mut net = args.net.clone();
    net.peers.extend(magnet_peers);
    let peers = net.peer_addrs().await?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create the output directory", args.output.display()))?;

    let listen = listen_addr(&options, "0.0.0.0:0");
    let session = args.net.start_session(&options, Some(listen), DhtMode::Auto).await?;
    announce_listening(&session, true).await?;
    let meta = match input {
        Input::Ready(meta) => meta,
        Input::Fetch(magnet) => match fetch_metadata(&args, &session, &magnet, peers.clone()).await {
            Ok(meta) => meta,
            Err(e) => {
                shutdown_promptly(session.shutdown()).await;
                return Err(e);
            }
        },
    };
    let selection = match selection(&meta, wanted) {
        Ok(s) => s,
        Err(e) => {
            shutdown_promptly(session.shutdown()).await;
            return Err(e);
        }
    };
    let wanted_bytes = shoal::torrent::wanted_bytes(&meta, selection.as_deref());
    let meta = Arc::new(meta);
    let setup = TorrentSetup { selection, ..Default::default() };
    let handle = session.add_torrent_with(meta.clone(), args.output.clone(), setup);
    log_verified_pieces(&handle);
    handle.add_peers(peers).await;

    let started = Instant::now();
    let progress = Progress::new(args.net.quiet, wanted_bytes);
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
