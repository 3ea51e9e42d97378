//! Magnets in the daemon: the torrent is listed at once (`fetching_metadata`) while its
//! metadata is fetched from peers (BEP 9) in the background, within a deadline.
//!
//! On success the `.torrent` is kept in the state directory like any added torrent and the
//! torrent starts (or stays paused); on failure, or when `only` names a file the torrent does
//! not have, it shows `faulted` with the error and a fault record, until resumed. Pausing,
//! restarting or removing it cancels the fetch; a daemon restarted before the metadata came
//! fetches it again (the record keeps the magnet URI).
use super::faults::{unix_now, Fault};
use super::state::Record;
use super::view::TorrentView;
use super::{make_output, selection, start, AddOptions, Daemon, DaemonError, Entry};
use crate::metadata::{torrent_file, FetchStatus};
use crate::metainfo::magnet::parse_select_only;
use crate::metainfo::{Magnet, Metainfo};
use crate::types::PeerAddr;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Deadline of a metadata fetch unless the add names one.
pub const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(300);
/// Bounds of `metadata_timeout_secs`.
pub const METADATA_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=3600;

/// A metadata fetch under way.
pub(super) struct Fetching {
    gen: u64,
    cancel: CancellationToken,
    status: watch::Receiver<FetchStatus>,
}

impl Entry {
    /// Cancels the metadata fetch, if one runs; its end is then ignored.
    pub(super) fn stop_fetch(&mut self) {
        if let Some(f) = self.fetch.take() {
            f.cancel.cancel();
        }
    }

    /// The view of a torrent whose metadata is not known yet.
    pub(super) fn fetch_view(&self) -> TorrentView {
        let state = match (&self.fetch, &self.fetch_error) {
            (Some(_), _) => "fetching_metadata",
            (None, Some(_)) if !self.record.paused => "faulted",
            _ => "paused",
        };
        let pieces = self.fetch.as_ref().map(|f| f.status.borrow().pieces);
        TorrentView {
            id: self.record.id.clone(),
            name: display_name(&self.record),
            state: state.to_string(),
            progress: None,
            bytes_total: 0,
            bytes_left: None,
            download_rate: 0.0,
            upload_rate: 0.0,
            downloaded: None,
            uploaded: None,
            peers: self.fetch.as_ref().map_or(0, |f| f.status.borrow().asking),
            output: self.record.output.clone(),
            error: self.fetch_error.clone(),
            files: Vec::new(),
            metadata_pieces: pieces,
            download_limit: self.record.download_limit,
            upload_limit: self.record.upload_limit,
        }
    }
}

/// The magnet's `dn`, else the id.
pub(super) fn display_name(record: &Record) -> String {
    let dn = record.magnet.as_deref().and_then(|m| Magnet::parse(m).ok()).and_then(|m| m.name);
    dn.unwrap_or_else(|| record.id.clone())
}

impl Daemon {
    /// Adds a magnet: recorded and listed at once, its metadata fetched in the background
    /// unless `paused`. `opts.only` (else the magnet's `so=`) is checked once the metadata is
    /// known. The magnet's `x.pe` peers that are IP addresses join `opts.peers`.
    pub async fn add_magnet(
        &self,
        uri: &str,
        mut opts: AddOptions,
        timeout_secs: Option<u64>,
    ) -> Result<String, DaemonError> {
        let magnet = Magnet::parse(uri).map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        if let Some(t) = timeout_secs.filter(|t| !METADATA_TIMEOUT_SECS.contains(t)) {
            let (lo, hi) = (METADATA_TIMEOUT_SECS.start(), METADATA_TIMEOUT_SECS.end());
            return Err(DaemonError::BadRequest(format!("metadata_timeout_secs {t}: must be {lo} to {hi}")));
        }
        if let Some(list) = &opts.only {
            parse_select_only(list)
                .map_err(|_| DaemonError::BadRequest(format!("only: bad file list {list:?} (indices, e.g. 0,2-3)")))?;
        }
        make_output(&opts.output).await?;
        for pe in &magnet.peers {
            match pe.parse::<SocketAddr>() {
                Ok(addr) if !opts.peers.contains(&addr) => opts.peers.push(addr),
                Ok(_) => {}
                Err(_) => tracing::warn!(peer = %pe, "magnet x.pe is not an IP address and port; left out"),
            }
        }
        if opts.only.is_none() && !magnet.select_only.is_empty() {
            let parts: Vec<String> = magnet.select_only.iter().map(|r| format!("{}-{}", r.start(), r.end())).collect();
            opts.only = Some(parts.join(","));
        }
        let id = magnet.info_hash.to_hex();
        let mut torrents = self.torrents.lock().await;
        if torrents.contains_key(&id) {
            return Err(DaemonError::Exists(id));
        }
        let record = Record {
            id: id.clone(),
            output: opts.output,
            paused: opts.paused,
            peers: opts.peers,
            magnet: Some(uri.to_string()),
            only: opts.only,
            metadata_timeout_secs: timeout_secs,
            ..Default::default()
        };
        let mut entry = Entry::new(None, record);
        if !entry.record.paused {
            self.start_fetch(&mut entry);
        }
        torrents.insert(id.clone(), entry);
        self.save(&torrents).await?;
        tracing::info!(%id, paused = opts.paused, "magnet added");
        Ok(id)
    }

    /// After a restart: fetches again the metadata of every running magnet that has none.
    pub(super) async fn start_pending_fetches(&self) {
        let mut torrents = self.torrents.lock().await;
        for entry in torrents.values_mut().filter(|e| e.meta.is_none() && !e.record.paused) {
            self.start_fetch(entry);
        }
    }

    /// Starts fetching the entry's metadata in the background.
    pub(super) fn start_fetch(&self, entry: &mut Entry) {
        entry.stop_fetch();
        entry.fetch_error = None;
        let Some(magnet) = entry.record.magnet.as_deref().and_then(|m| Magnet::parse(m).ok()) else {
            entry.fetch_error = Some("no metadata and no magnet to fetch it by".into());
            return;
        };
        let gen = self.fetch_gen.fetch_add(1, Ordering::Relaxed);
        let cancel = self.session.cancel_token().child_token();
        let peers: Vec<PeerAddr> = entry.record.peers.iter().copied().map(PeerAddr::Tcp).collect();
        let (status_tx, status) = watch::channel(FetchStatus { known: peers.len(), ..Default::default() });
        let deadline = entry.record.metadata_timeout_secs.map_or(DEFAULT_METADATA_TIMEOUT, Duration::from_secs);
        entry.fetch = Some(Fetching { gen, cancel: cancel.clone(), status });
        let me = self.me.clone();
        let id = entry.record.id.clone();
        tokio::spawn(async move {
            let Some(daemon) = me.upgrade() else { return };
            let fetched = tokio::select! {
                r = daemon.session.fetch_metadata(&magnet, peers, deadline, status_tx) => r,
                _ = cancel.cancelled() => return,
            };
            let result = match fetched {
                Ok(info) => Ok(torrent_file(&info, &magnet.trackers)),
                Err(e) => Err(format!("metadata: {e}")),
            };
            daemon.fetched(&id, gen, result).await;
        });
    }

    /// The end of fetch `gen` of torrent `id`: ignored when the fetch was cancelled since.
    async fn fetched(&self, id: &str, gen: u64, result: Result<Vec<u8>, String>) {
        let mut torrents = self.torrents.lock().await;
        let Some(entry) = torrents.get_mut(id) else { return };
        if entry.fetch.as_ref().is_none_or(|f| f.gen != gen) {
            return;
        }
        entry.fetch = None;
        match result.and_then(|bytes| self.keep_metadata(entry, &bytes)) {
            Ok(()) => {
                tracing::info!(%id, name = %entry.name(), "metadata fetched; .torrent kept");
                start(&self.session, &self.state, entry).await;
            }
            Err(message) => {
                tracing::warn!(%id, %message, "magnet faulted");
                self.faults.lock().expect("faults lock").push(Fault {
                    at: unix_now(),
                    id: id.to_string(),
                    name: entry.name(),
                    kind: "metadata",
                    message: message.clone(),
                    recovery: "none; resume the torrent to fetch again".into(),
                });
                entry.fetch_error = Some(message);
            }
        }
    }

    /// Checks the fetched metainfo and its file selection, and keeps its `.torrent`.
    fn keep_metadata(&self, entry: &mut Entry, bytes: &[u8]) -> Result<(), String> {
        let meta = Metainfo::from_bytes(bytes).map_err(|e| format!("the metadata is not a valid torrent: {e}"))?;
        selection(&meta, entry.record.only.as_deref())?;
        self.state.save_torrent(&meta.info_hash, bytes).map_err(|e| e.to_string())?;
        entry.meta = Some(Arc::new(meta));
        Ok(())
    }
}
