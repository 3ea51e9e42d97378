//! The daemon's state directory: the API token, the torrent list and a copy of every torrent.
//!
//! Layout of `<state-dir>`:
//! - `api-token`: 64 hex characters, mode 0600, made on first start and kept after;
//! - `torrents.json`: one [`Record`] per torrent (output dir, paused, peers to dial), rewritten
//!   whole on every change through a temp file and a rename, so a crash leaves the old list or
//!   the new one, never half of one;
//! - `torrents/<info-hash>.torrent`: the metainfo as it was added (or made from a seeded path),
//!   read back on restart;
//! - `resume/<info-hash>.json`: the torrent's fast-resume record (pieces had and the files'
//!   stamps, [`crate::storage::resume`]), kept current by the torrent itself.
//!
//! Nothing here knows about sessions or HTTP; [`super::Daemon`] decides what to record.
use crate::metainfo::InfoHash;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A failure reading or writing the state directory, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("no state directory: set XDG_DATA_HOME or HOME, or give --state-dir")]
    NoDataDir,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

/// One torrent as the daemon remembers it across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The info-hash in hex: also the name of its `.torrent` under `torrents/`.
    pub id: String,
    /// The data lives at `output/<name>`.
    pub output: PathBuf,
    pub paused: bool,
    /// Peers named when it was added, dialled again whenever it starts.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// The magnet it was added by: while its `.torrent` is not kept yet, a start fetches the
    /// metadata again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnet: Option<String>,
    /// The files to download (BEP 53 syntax, `0,2-3`); none for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
    /// How long a metadata fetch may take, in seconds; none for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_timeout_secs: Option<u64>,
    /// This torrent's own rate limits in bytes per second (0: none; the global ones apply too).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub download_limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upload_limit: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `$XDG_DATA_HOME/shoal/daemon`, or `~/.local/share/shoal/daemon`.
pub fn default_state_dir() -> Result<PathBuf, StateError> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    if let Some(dir) = non_empty("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(dir.join("shoal").join("daemon"));
    }
    let home = non_empty("HOME").ok_or(StateError::NoDataDir)?;
    Ok(home.join(".local").join("share").join("shoal").join("daemon"))
}

/// The path of the token file in `dir` (clients read it from there).
pub fn token_path(dir: &Path) -> PathBuf {
    dir.join("api-token")
}

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates `dir` (and `dir/torrents`) when missing.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        for sub in ["torrents", "resume"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The API token: read from `api-token`, or made (32 random bytes in hex, mode 0600).
    pub fn token(&self) -> Result<String, StateError> {
        let path = token_path(&self.dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim().to_string();
                if token.len() < 32 {
                    return Err(StateError::Corrupt { path, why: "token shorter than 32 characters".into() });
                }
                Ok(token)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.make_token(&path),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn make_token(&self, path: &Path) -> Result<String, StateError> {
        let bytes: [u8; 32] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(path).map_err(io(path))?;
        file.write_all(token.as_bytes()).and_then(|()| file.sync_all()).map_err(io(path))?;
        Ok(token)
    }

    fn list_path(&self) -> PathBuf {
        self.dir.join("torrents.json")
    }

    /// Where the `.torrent` of `id` is kept.
    pub fn torrent_path(&self, id: &InfoHash) -> PathBuf {
        self.dir.join("torrents").join(format!("{}.torrent", id.to_hex()))
    }

    /// The recorded torrents; none when the list does not exist yet.
    pub fn records(&self) -> Result<Vec<Record>, StateError> {
        let path = self.list_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt { path, why: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Replaces the torrent list, atomically.
    pub fn save_records(&self, records: &[Record]) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(records).expect("records serialize");
        write_atomic(&self.list_path(), &bytes)
    }

    /// Keeps the metainfo of `id`, atomically.
    pub fn save_torrent(&self, id: &InfoHash, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.torrent_path(id), bytes)
    }

    /// Where the `.torrent` of the torrent with hex id `id` is kept.
    pub fn torrent_path_of(&self, id: &str) -> PathBuf {
        self.dir.join("torrents").join(format!("{id}.torrent"))
    }

    pub fn read_torrent(&self, id: &InfoHash) -> Result<Vec<u8>, StateError> {
        let path = self.torrent_path(id);
        std::fs::read(&path).map_err(io(&path))
    }

    /// Forgets the metainfo of a removed torrent (already gone is fine).
    pub fn delete_torrent(&self, id: &InfoHash) -> Result<(), StateError> {
        remove_if_there(&self.torrent_path(id))
    }

    /// Where the fast-resume record of the torrent with hex id `id` is kept.
    pub fn resume_path(&self, id: &str) -> PathBuf {
        self.dir.join("resume").join(format!("{id}.json"))
    }

    /// Forgets the fast-resume record of `id`, so its next start hashes its data (already
    /// gone is fine).
    pub fn delete_resume(&self, id: &str) -> Result<(), StateError> {
        remove_if_there(&self.resume_path(id))
    }
}

fn remove_if_there(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Runs state-dir work on the blocking pool (it writes and syncs files), off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StateError::Io { path: PathBuf::new(), source: std::io::Error::other("runtime shutting down") }),
    }
}

/// Writes `bytes` to a temp file beside `path`, syncs it, and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_with_mode_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let first = state.token().unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(state.token().unwrap(), first, "a second start reads the same token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn records_round_trip_and_a_corrupt_list_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(state.records().unwrap().is_empty());
        let r =
            Record { id: "ab".repeat(20), output: "/tmp/x".into(), paused: true, peers: vec![], ..Default::default() };
        state.save_records(std::slice::from_ref(&r)).unwrap();
        assert_eq!(state.records().unwrap(), vec![r]);
        std::fs::write(dir.path().join("torrents.json"), b"[{").unwrap();
        let err = state.records().unwrap_err().to_string();
        assert!(err.contains("torrents.json"), "{err}");
    }
}
