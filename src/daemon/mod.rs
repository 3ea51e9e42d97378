//! `shoal daemon`: many torrents in one long-running session, managed over an HTTP API.
//!
//! Parts, in reading order:
//! - this file: [`Daemon`], the registry of torrents (running or paused) over one
//!   [`Session`], and what each API call does to it;
//! - [`state`]: the state directory (API token, torrent list, a copy of each `.torrent`);
//! - [`config`]: the configuration history (patch, versions, rollback) and what applies when;
//! - [`view`]: the JSON a client sees of one torrent;
//! - `magnet`: a magnet's metadata fetched in the background (`fetching_metadata`), then
//!   kept and started like an added `.torrent`; `only` selects files (BEP 53);
//! - [`api`]: the axum router, bearer-token check, bounded bodies and JSON errors;
//! - [`alerts`]: rules (stalled, no peers, hash failures, disk error) and raised alerts;
//! - [`faults`]: a torrent whose storage fails is `faulted`, logged, and retried with backoff;
//! - `events`: server-sent events of the torrent list, and the web page (`page.html`).
//!
//! Every change is recorded in the state directory before the call answers, so a restarted
//! daemon comes back with the same torrents in the same states (a paused one stays paused).
//! Pause stops the torrent's task ([`Session::remove_torrent`]); resume starts a fresh task,
//! which re-checks the data on disk (there is no fast-resume data yet).
//!
//! One `tokio::sync::Mutex` serialises the registry: calls are rare, and holding it across a
//! torrent's shutdown keeps a pause and a resume of the same torrent from interleaving.
pub mod alerts;
pub mod api;
pub mod config;
mod events;
pub mod faults;
pub mod limits;
mod magnet;
pub mod state;
pub mod view;

use crate::metainfo::create::{create_torrent, CreateOptions};
use crate::metainfo::magnet::parse_select_only;
use crate::metainfo::select::select_files;
use crate::metainfo::{InfoHash, Metainfo};
use crate::session::{Session, TorrentSetup};
use crate::torrent::{Phase, TorrentHandle, TorrentStats};
use crate::types::PeerAddr;
use state::{blocking, Record, StateDir, StateError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;
pub use view::TorrentView;

/// Why an API call was refused or failed; [`api`] maps each kind to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The caller's mistake (400).
    #[error("{0}")]
    BadRequest(String),
    /// No torrent with this id (404).
    #[error("no torrent {0}")]
    NotFound(String),
    /// No alert with this id (404).
    #[error("no alert {0}")]
    NoAlert(u64),
    /// The torrent is already added (409).
    #[error("torrent {0} is already added")]
    Exists(String),
    /// Asked for something this daemon cannot do yet (501).
    #[error("{0}")]
    NotImplemented(String),
    /// The state directory or the torrent's data could not be written (500).
    #[error(transparent)]
    State(#[from] StateError),
}

/// Where and how to start a torrent being added.
#[derive(Debug, Clone)]
pub struct AddOptions {
    /// Absolute; the data lives at `output/<name>`.
    pub output: PathBuf,
    pub paused: bool,
    pub peers: Vec<SocketAddr>,
    /// The files to download (BEP 53 syntax, `0,2-3`); none for all.
    pub only: Option<String>,
}

/// One torrent of the daemon: its record, and its task while it runs.
struct Entry {
    /// None while a magnet's metadata is still to come.
    meta: Option<Arc<Metainfo>>,
    /// The metadata fetch running for a magnet.
    fetch: Option<magnet::Fetching>,
    /// Why the last metadata fetch (or its file selection) failed.
    fetch_error: Option<String>,
    record: Record,
    handle: Option<TorrentHandle>,
    /// The statistics when it was last paused (none after a restart into paused).
    last: Option<TorrentStats>,
    retry: faults::RetryPolicy,
    /// Alert rule state since the task last started.
    watch: alerts::Watch,
}

pub struct Daemon {
    session: Arc<Session>,
    state: StateDir,
    token: String,
    torrents: Mutex<BTreeMap<String, Entry>>,
    /// This daemon, for the metadata fetches it spawns.
    me: std::sync::Weak<Daemon>,
    /// Tells a fetch's end from a newer fetch of the same torrent.
    fetch_gen: std::sync::atomic::AtomicU64,
    /// Held only to read or swap, never across an await.
    config: std::sync::Mutex<config::History>,
    faults: std::sync::Mutex<faults::FaultLog>,
    alerts: std::sync::Mutex<alerts::AlertLog>,
}

impl Daemon {
    /// Opens the state directory (made when missing, with a new token) and starts every
    /// recorded torrent that is not paused. A recorded torrent whose `.torrent` cannot be read
    /// is logged and left out.
    pub async fn open(session: Arc<Session>, dir: &Path) -> Result<Arc<Daemon>, StateError> {
        let state = StateDir::open(dir)?;
        let token = state.token()?;
        let history = config::load(dir, session.options())?;
        session.set_torrent_options(Arc::new(history.current_options().expect("checked when loaded")));
        let mut torrents = BTreeMap::new();
        for record in state.records()? {
            let meta = match load_recorded(&state, &record) {
                Ok(meta) => Some(meta),
                Err(_) if record.magnet.is_some() && !state.torrent_path_of(&record.id).exists() => None,
                Err(e) => {
                    tracing::error!(id = %record.id, error = %e, "recorded torrent left out");
                    continue;
                }
            };
            let mut entry = Entry::new(meta, record);
            if !entry.record.paused && entry.meta.is_some() {
                start(&session, &state, &mut entry).await;
            }
            torrents.insert(entry.record.id.clone(), entry);
        }
        tracing::info!(torrents = torrents.len(), dir = %dir.display(), "daemon state loaded");
        let config = std::sync::Mutex::new(history);
        let cancel = session.cancel_token();
        let (faults, alerts) = Default::default();
        let torrents = Mutex::new(torrents);
        let fetch_gen = Default::default();
        let daemon = Arc::new_cyclic(|me| Daemon {
            session,
            state,
            token,
            torrents,
            me: me.clone(),
            fetch_gen,
            config,
            faults,
            alerts,
        });
        daemon.start_pending_fetches().await;
        tokio::spawn(Daemon::supervise(Arc::downgrade(&daemon), cancel));
        Ok(daemon)
    }

    /// The bearer token every API request must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Adds a torrent from the bytes of a `.torrent` file.
    pub async fn add_torrent_bytes(&self, bytes: &[u8], opts: AddOptions) -> Result<String, DaemonError> {
        let meta = Metainfo::from_bytes(bytes).map_err(|e| DaemonError::BadRequest(format!("bad torrent: {e}")))?;
        self.add(Arc::new(meta), bytes, opts).await
    }

    /// Seeds the data at `path` (absolute), as `shoal seed PATH` does: its torrent is made
    /// here and kept in the state directory.
    pub async fn add_source(&self, path: PathBuf, paused: bool, peers: Vec<SocketAddr>) -> Result<String, DaemonError> {
        let bad = |why: &str| DaemonError::BadRequest(format!("source_path {}: {why}", path.display()));
        if !path.is_absolute() {
            return Err(bad("must be an absolute path"));
        }
        let (root, base) = match (path.parent(), path.file_name()) {
            (Some(root), Some(base)) => (root.to_path_buf(), base.to_string_lossy().into_owned()),
            _ => return Err(bad("names no file or directory")),
        };
        let p = path.clone();
        let made = tokio::task::spawn_blocking(move || create_torrent(&p, &CreateOptions::default()))
            .await
            .map_err(|e| bad(&e.to_string()))?
            .map_err(|e| DaemonError::BadRequest(format!("source_path: {e}")))?;
        let meta = Metainfo::from_bytes(&made).map_err(|e| bad(&format!("made an invalid torrent: {e}")))?;
        if meta.name != base {
            return Err(bad(&format!("its torrent would name the data `{}`; rename it", meta.name)));
        }
        self.add(Arc::new(meta), &made, AddOptions { output: root, paused, peers, only: None }).await
    }

    async fn add(&self, meta: Arc<Metainfo>, bytes: &[u8], opts: AddOptions) -> Result<String, DaemonError> {
        make_output(&opts.output).await?;
        selection(&meta, opts.only.as_deref()).map_err(DaemonError::BadRequest)?;
        let id = meta.info_hash.to_hex();
        let mut torrents = self.torrents.lock().await;
        if torrents.contains_key(&id) {
            return Err(DaemonError::Exists(id));
        }
        let (state, hash, kept) = (self.state.clone(), meta.info_hash, bytes.to_vec());
        blocking(move || state.save_torrent(&hash, &kept)).await?;
        let record = Record {
            id: id.clone(),
            output: opts.output,
            paused: opts.paused,
            peers: opts.peers,
            only: opts.only,
            ..Default::default()
        };
        let mut entry = Entry::new(Some(meta), record);
        if !opts.paused {
            start(&self.session, &self.state, &mut entry).await;
        }
        torrents.insert(id.clone(), entry);
        self.save(&torrents).await?;
        tracing::info!(%id, paused = opts.paused, "torrent added");
        Ok(id)
    }

    /// Every torrent, ordered by id.
    pub async fn list(&self) -> Vec<TorrentView> {
        self.torrents.lock().await.values().map(Entry::view).collect()
    }

    pub async fn get(&self, id: &str) -> Result<TorrentView, DaemonError> {
        let key = parse_id(id)?;
        self.torrents.lock().await.get(&key).map(Entry::view).ok_or(DaemonError::NotFound(key))
    }

    /// Stops the torrent's task and records it as paused; pausing a paused torrent is fine.
    pub async fn pause(&self, id: &str) -> Result<TorrentView, DaemonError> {
        let key = parse_id(id)?;
        let mut torrents = self.torrents.lock().await;
        let entry = torrents.get_mut(&key).ok_or_else(|| DaemonError::NotFound(key.clone()))?;
        if let Some(handle) = entry.handle.take() {
            entry.last = Some(handle.stats().borrow().clone());
            self.session.remove_torrent(&handle.info_hash).await;
        }
        entry.stop_fetch();
        entry.record.paused = true;
        entry.retry.retry_at = None;
        let view = entry.view();
        self.save(&torrents).await?;
        Ok(view)
    }

    /// Starts a paused torrent again (its data is re-checked), or a faulted one at once;
    /// resuming a running one is fine.
    pub async fn resume(&self, id: &str) -> Result<TorrentView, DaemonError> {
        let key = parse_id(id)?;
        let mut torrents = self.torrents.lock().await;
        let entry = torrents.get_mut(&key).ok_or_else(|| DaemonError::NotFound(key.clone()))?;
        let faulted = entry.handle.as_ref().is_some_and(|h| h.stats().borrow().phase == Phase::Failed);
        if faulted {
            // Resuming a faulted torrent retries it now rather than at its backoff.
            if let Some(h) = entry.handle.take() {
                self.session.remove_torrent(&h.info_hash).await;
            }
        }
        if entry.meta.is_none() {
            if entry.fetch.is_none() {
                self.start_fetch(entry);
            }
        } else if entry.handle.is_none() {
            start(&self.session, &self.state, entry).await;
        }
        entry.record.paused = false;
        let view = entry.view();
        self.save(&torrents).await?;
        Ok(view)
    }

    /// Stops the torrent if it runs and starts it again from its fast-resume record; with
    /// `recheck`, the record is dropped first, so every piece on disk is hashed again.
    pub async fn restart(&self, id: &str, recheck: bool) -> Result<TorrentView, DaemonError> {
        let key = parse_id(id)?;
        let mut torrents = self.torrents.lock().await;
        let entry = torrents.get_mut(&key).ok_or_else(|| DaemonError::NotFound(key.clone()))?;
        if let Some(handle) = entry.handle.take() {
            // Waits for the torrent's tasks, its last resume record among them.
            self.session.remove_torrent(&handle.info_hash).await;
        }
        entry.stop_fetch();
        if recheck {
            self.state.delete_resume(&key)?;
        }
        if entry.meta.is_some() {
            start(&self.session, &self.state, entry).await;
        } else {
            self.start_fetch(entry);
        }
        entry.record.paused = false;
        let view = entry.view();
        self.save(&torrents).await?;
        Ok(view)
    }

    /// Stops and forgets the torrent; with `delete_data`, also removes `output/<name>` (and
    /// its part file), never anything else.
    pub async fn remove(&self, id: &str, delete_data: bool) -> Result<(), DaemonError> {
        let key = parse_id(id)?;
        let mut torrents = self.torrents.lock().await;
        let mut entry = torrents.remove(&key).ok_or_else(|| DaemonError::NotFound(key.clone()))?;
        if let Some(handle) = entry.handle.take() {
            self.session.remove_torrent(&handle.info_hash).await;
        }
        entry.stop_fetch();
        self.save(&torrents).await?;
        drop(torrents);
        let id = InfoHash::from_hex(&key).expect("checked by parse_id");
        let (state, forget) = (self.state.clone(), key.clone());
        let data = entry.meta.clone().filter(|_| delete_data).map(|meta| (meta, entry.record.output.clone()));
        blocking(move || {
            state.delete_torrent(&id)?;
            state.delete_resume(&forget)?;
            data.map_or(Ok(()), |(meta, output)| delete_data_of(&meta, &output))
        })
        .await?;
        tracing::info!(id = %key, delete_data, "torrent removed");
        Ok(())
    }

    /// Stops every torrent and the session. The records stay as they are, so the next start
    /// resumes what was running.
    pub async fn shutdown(&self) {
        self.session.shutdown().await;
    }

    /// Writes the torrent list (on the blocking pool: it syncs the file).
    async fn save(&self, torrents: &BTreeMap<String, Entry>) -> Result<(), StateError> {
        let records: Vec<Record> = torrents.values().map(|e| e.record.clone()).collect();
        let state = self.state.clone();
        blocking(move || state.save_records(&records)).await
    }
}

impl Entry {
    fn new(meta: Option<Arc<Metainfo>>, record: Record) -> Entry {
        Entry {
            meta,
            fetch: None,
            fetch_error: None,
            record,
            handle: None,
            last: None,
            retry: Default::default(),
            watch: alerts::Watch::new(std::time::Instant::now()),
        }
    }

    fn view(&self) -> TorrentView {
        let Some(meta) = &self.meta else { return self.fetch_view() };
        let live = self.handle.as_ref().map(|h| h.stats().borrow().clone());
        TorrentView::new(meta, &self.record, live.as_ref().or(self.last.as_ref()), self.handle.is_none())
    }

    /// The torrent's name, or while its metadata is to come the magnet's `dn` (or its id).
    fn name(&self) -> String {
        match &self.meta {
            Some(meta) => meta.name.clone(),
            None => magnet::display_name(&self.record),
        }
    }
}

/// Makes the output directory, which must be absolute.
async fn make_output(output: &Path) -> Result<(), DaemonError> {
    if !output.is_absolute() {
        return Err(DaemonError::BadRequest(format!("output {}: must be an absolute path", output.display())));
    }
    tokio::fs::create_dir_all(output)
        .await
        .map_err(|e| DaemonError::BadRequest(format!("output {}: {e}", output.display())))
}

/// One flag per file of `meta` for the files `only` names (BEP 53 syntax); none for all.
/// An index past the last file is named.
fn selection(meta: &Metainfo, only: Option<&str>) -> Result<Option<Vec<bool>>, String> {
    let Some(list) = only else { return Ok(None) };
    let ranges = parse_select_only(list).map_err(|_| format!("only: bad file list {list:?} (indices, e.g. 0,2-3)"))?;
    select_files(&meta.files, &ranges).map(Some).map_err(|e| format!("only: {e}"))
}

/// Starts the entry's task in the session, from its fast-resume record, and hands it its
/// recorded peers.
async fn start(session: &Session, state: &StateDir, entry: &mut Entry) {
    entry.retry.retry_at = None;
    entry.watch = alerts::Watch::new(std::time::Instant::now());
    let Some(meta) = entry.meta.clone() else { return };
    // Checked when the torrent was added (or its metadata arrived); the metainfo never changes.
    let selected = selection(&meta, entry.record.only.as_deref()).unwrap_or(None);
    let setup = TorrentSetup {
        selection: selected,
        resume: Some(state.resume_path(&entry.record.id)),
        download_limit: entry.record.download_limit,
        upload_limit: entry.record.upload_limit,
        super_seed: false,
    };
    let handle = session.add_torrent_with(meta, entry.record.output.clone(), setup);
    handle.add_peers(entry.record.peers.iter().copied().map(PeerAddr::Tcp).collect()).await;
    entry.handle = Some(handle);
}

/// The metainfo kept for a record, which must be the torrent the record names.
fn load_recorded(state: &StateDir, record: &Record) -> Result<Arc<Metainfo>, String> {
    let id = InfoHash::from_hex(&record.id).map_err(|e| format!("bad id: {e}"))?;
    let bytes = state.read_torrent(&id).map_err(|e| e.to_string())?;
    let meta = Metainfo::from_bytes(&bytes).map_err(|e| format!("{}: {e}", state.torrent_path(&id).display()))?;
    if meta.info_hash != id {
        return Err(format!("{}: holds torrent {}", state.torrent_path(&id).display(), meta.info_hash));
    }
    Ok(Arc::new(meta))
}

/// A torrent id as the registry keys it (lowercase hex); 400 when it is not 40 hex digits.
pub fn parse_id(id: &str) -> Result<String, DaemonError> {
    InfoHash::from_hex(id)
        .map(|h| h.to_hex())
        .map_err(|e| DaemonError::BadRequest(format!("torrent id {id:?}: {e} (want the info-hash in 40 hex digits)")))
}

/// Removes `output/<name>` and `output/.<info-hash>.parts`. The name is one plain path
/// component (metainfo parsing guarantees it; checked again here), so nothing outside
/// `output` can be touched.
fn delete_data_of(meta: &Metainfo, output: &Path) -> Result<(), StateError> {
    let mut parts = Path::new(&meta.name).components();
    let plain = matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None));
    if !plain {
        return Err(StateError::Corrupt { path: output.join(&meta.name), why: "not a plain name; left alone".into() });
    }
    let data = output.join(&meta.name);
    let removed = if meta.multi_file { std::fs::remove_dir_all(&data) } else { std::fs::remove_file(&data) };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(StateError::Io { path: data, source: e });
        }
        _ => {}
    }
    let _ = std::fs::remove_file(output.join(crate::storage::part_file_name(&meta.info_hash)));
    Ok(())
}
