//! What a client sees of one torrent: a flat JSON object built from its record and its
//! latest statistics (`GET /api/torrents`, `shoal list --json`).
use super::state::Record;
use crate::metainfo::Metainfo;
use crate::torrent::{Phase, TorrentStats};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One torrent. `progress` and the counters are `null` for a torrent paused since the daemon
/// started (nothing has been checked yet in this run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorrentView {
    /// The info-hash in hex.
    pub id: String,
    pub name: String,
    /// `paused`, `fetching_metadata` (a magnet), `checking`, `downloading`, `seeding` or
    /// `faulted` (its storage failed, retried with backoff; or a magnet's metadata could not be
    /// had; see `/api/faults`).
    pub state: String,
    /// Verified fraction of the wanted bytes, 0 to 1.
    pub progress: Option<f64>,
    pub bytes_total: u64,
    pub bytes_left: Option<u64>,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub downloaded: Option<u64>,
    pub uploaded: Option<u64>,
    /// Peers connected now.
    pub peers: usize,
    pub output: PathBuf,
    pub error: Option<String>,
    /// The torrent's files (padding files left out), paths below `output`.
    pub files: Vec<FileView>,
    /// While a magnet's metadata is fetched: its pieces received and in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_pieces: Option<(u32, u32)>,
    /// Its own rate limits in bytes per second (0: none; the global ones apply as well).
    #[serde(default)]
    pub download_limit: u64,
    #[serde(default)]
    pub upload_limit: u64,
}

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileView {
    /// Below the output directory, `/`-separated.
    pub path: String,
    pub length: u64,
}

impl TorrentView {
    pub fn new(meta: &Metainfo, record: &Record, stats: Option<&TorrentStats>, paused: bool) -> TorrentView {
        let state = match (paused, stats.map(|s| s.phase)) {
            (true, _) => "paused",
            (false, Some(Phase::Downloading)) => "downloading",
            (false, Some(Phase::Seeding)) => "seeding",
            (false, Some(Phase::Failed)) => "faulted",
            (false, Some(Phase::Checking) | None) => "checking",
        };
        // Never `-0.0`: a rate is positive or zero.
        let live = |f: fn(&TorrentStats) -> f64| stats.filter(|_| !paused).map_or(0.0, f).max(0.0) + 0.0;
        TorrentView {
            id: record.id.clone(),
            name: meta.name.clone(),
            state: state.to_string(),
            progress: stats.map(progress),
            bytes_total: stats.map_or(meta.total_length, |s| s.bytes_total),
            bytes_left: stats.map(|s| s.bytes_left),
            download_rate: live(|s| s.download_rate),
            upload_rate: live(|s| s.upload_rate),
            downloaded: stats.map(|s| s.downloaded),
            uploaded: stats.map(|s| s.uploaded),
            peers: if paused { 0 } else { stats.map_or(0, |s| s.peers.len()) },
            output: record.output.clone(),
            error: stats.and_then(|s| s.error.as_ref()).map(|e| e.to_string()),
            files: files(meta),
            metadata_pieces: None,
            download_limit: record.download_limit,
            upload_limit: record.upload_limit,
        }
    }
}

fn progress(s: &TorrentStats) -> f64 {
    if s.bytes_total == 0 {
        return 1.0;
    }
    (s.bytes_total - s.bytes_left.min(s.bytes_total)) as f64 / s.bytes_total as f64
}

fn files(meta: &Metainfo) -> Vec<FileView> {
    let under = |f: &crate::metainfo::FileEntry| {
        let inner = f.path.join("/");
        if meta.multi_file {
            format!("{}/{inner}", meta.name)
        } else {
            inner
        }
    };
    meta.files.iter().filter(|f| !f.padding).map(|f| FileView { path: under(f), length: f.length }).collect()
}
