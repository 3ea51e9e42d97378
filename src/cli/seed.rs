//! `shoal seed`: serve the data at PATH. With `--torrent FILE`, the data is checked against
//! FILE (or FILE is made from PATH when it does not exist); prints the info-hash and a
//! magnet URI, then serves until interrupted.
use crate::cli::common::{
    announce_line, announce_listening, init_logging, interrupted, listen_addr, shutdown_promptly, NetArgs,
};
use crate::cli::progress::Progress;
use crate::cli::{bad_input, info};
use anyhow::Context;
use clap::Args;
use shoal::metainfo::create::{create_torrent, CreateOptions};
use shoal::metainfo::Metainfo;
use shoal::p2p::DhtMode;
use shoal::session::TorrentSetup;
use shoal::torrent::Phase;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The file or directory to seed.
    pub path: PathBuf,
    /// The .torrent describing PATH; created from PATH when the file does not exist.
    #[arg(long, value_name = "FILE")]
    pub torrent: Option<PathBuf>,
    /// BEP 16 super-seeding: tell each peer of two pieces at a time, the rarest, so the first
    /// full copy gets out after about one copy's worth of upload.
    #[arg(long = "super-seed")]
    pub super_seed: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

/// The metainfo for PATH: loaded from FILE, or made from PATH (and written to FILE if named).
fn metainfo_for(path: &Path, torrent: Option<&Path>) -> anyhow::Result<Metainfo> {
    if let Some(file) = torrent.filter(|f| f.exists()) {
        return info::load(&file.to_string_lossy());
    }
    let bytes =
        create_torrent(path, &CreateOptions::default()).map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
    if let Some(file) = torrent {
        std::fs::write(file, &bytes).with_context(|| format!("{}: cannot write", file.display()))?;
    }
    Metainfo::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("made an invalid torrent: {e}"))
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    init_logging(args.net.quiet);
    let options = args.net.options()?;
    let path = std::path::absolute(&args.path).map_err(|e| bad_input(format!("{}: {e}", args.path.display())))?;
    if !path.exists() {
        return Err(bad_input(format!("{}: no such file or directory", args.path.display())));
    }
    let meta = metainfo_for(&path, args.torrent.as_deref())?;
    let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if base != meta.name {
        return Err(bad_input(format!(
            "{}: the torrent names its data `{}`, not `{base}`",
            args.path.display(),
            meta.name
        )));
    }
    let root = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let peers = args.net.peer_addrs().await?;

    let listen = listen_addr(&options, "0.0.0.0:6881");
    let session = args.net.start_session(&options, Some(listen), DhtMode::Server).await?;
    // `listening bt` only once the data is checked: scripts take it as "the seeder is ready".
    announce_listening(&session, false).await?;
    let meta = Arc::new(meta);
    let setup = TorrentSetup { super_seed: args.super_seed, ..Default::default() };
    let handle = session.add_torrent_with(meta.clone(), root, setup);
    Progress::new(args.net.quiet, meta.total_length).follow(handle.stats(), |s| s.phase != Phase::Checking).await;
    let stats = handle.stats().borrow().clone();
    match stats.phase {
        Phase::Failed => {
            anyhow::bail!("{}: {}", path.display(), stats.error.map(|e| e.to_string()).unwrap_or_default())
        }
        Phase::Downloading => tracing::warn!(
            "{}: only {} of {} pieces match the torrent; seeding those and fetching the rest",
            path.display(),
            stats.pieces_have,
            stats.pieces_total
        ),
        _ => {}
    }
    if let Some(a) = session.listen_addr() {
        announce_line(&format!("listening bt {a}"));
    }
    let mut magnet = meta.magnet();
    if let Some(a) = session.listen_addr().filter(|a| !a.ip().is_unspecified()) {
        magnet.peers.push(a.to_string());
    }
    announce_line(&format!("info-hash {}", meta.info_hash));
    announce_line(&format!("magnet {magnet}"));
    handle.add_peers(peers).await;
    let mut watch = handle.stats();
    tokio::select! {
        _ = interrupted() => {}
        Ok(s) = watch.wait_for(|s| s.phase == Phase::Failed) => {
            // Fetching missing pieces hit a storage error (a full disk): nothing is served
            // any more, so stop and say why rather than sit there.
            let why = s.error.as_ref().map(|e| e.to_string()).unwrap_or_default();
            drop(s);
            shutdown_promptly(session.shutdown()).await;
            anyhow::bail!("{}: {why}", path.display());
        }
    }
    shutdown_promptly(session.shutdown()).await;
    Ok(())
}
