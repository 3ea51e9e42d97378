//! The node's persistent Ed25519 identity: one keypair per data directory, so the PeerId
//! (and with it every provider record and every peer's memory of us) survives restarts.
//!
//! Owns the file format (libp2p's protobuf keypair encoding), its location and its mode
//! (0600: the file is a private key). It must not generate a fresh key when an existing file
//! is unreadable or corrupt: that would silently change our PeerId, so it is an error naming
//! the file instead.
//!
//! One identity is one libp2p peer: two processes sharing a key cannot dial each other and
//! confuse everyone else's routing tables. [`load_locked`] therefore holds an exclusive
//! advisory lock (`flock`) on the key file for as long as the returned [`IdentityLock`] lives;
//! a second process gets [`IdentityError::Locked`] and decides what to do (the CLI falls back
//! to a fresh key for the default file and refuses an explicit `--identity`).
use libp2p::identity::Keypair;
use std::fs::{self, File, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("identity file {}: not a protobuf-encoded libp2p keypair: {source}", path.display())]
    Decode { path: PathBuf, source: libp2p::identity::DecodingError },
    #[error("identity file {}: key type {kind:?} is not ed25519", path.display())]
    NotEd25519 { path: PathBuf, kind: libp2p::identity::KeyType },
    #[error("no data directory for the identity file: neither XDG_DATA_HOME nor HOME is set")]
    NoDataDir,
    #[error("identity file {}: another shoal process uses it; give this one its own with --identity FILE", path.display())]
    Locked { path: PathBuf },
}

/// Keeps other processes off an identity file; the lock is released when this is dropped
/// (or the process ends, however it ends).
#[derive(Debug)]
pub struct IdentityLock {
    _file: File,
}

/// Attempts to lock the key file when another process keeps replacing it (only a creation
/// race does, and it settles after one round).
const LOCK_ATTEMPTS: usize = 3;

/// `$XDG_DATA_HOME/shoal/identity`, else `~/.local/share/shoal/identity`.
pub fn default_identity_path() -> Result<PathBuf, IdentityError> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    if let Some(dir) = non_empty("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(dir.join("shoal").join("identity"));
    }
    let home = non_empty("HOME").ok_or(IdentityError::NoDataDir)?;
    Ok(home.join(".local").join("share").join("shoal").join("identity"))
}

/// Reads the keypair at `path`.
pub fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Io { path: path.into(), source })?;
    decode(path, &bytes)
}

/// Reads the keypair at `path`, or creates a new Ed25519 one there (and the parent
/// directories) when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    match load(path) {
        Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => create(path),
        other => other,
    }
}

/// Like [`load_or_create`], and locks the file for as long as the returned lock lives.
/// `Locked` when another process (or another lock in this one) holds it.
pub fn load_locked(path: &Path) -> Result<(Keypair, IdentityLock), IdentityError> {
    let io_err = |source| IdentityError::Io { path: path.into(), source };
    for _ in 0..LOCK_ATTEMPTS {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create(path)?;
                File::open(path).map_err(io_err)?
            }
            Err(e) => return Err(io_err(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(IdentityError::Locked { path: path.into() }),
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // A process creating the file at the same moment may have renamed its own key over
        // the path after we opened it: then our lock is on an orphan and we go again.
        let (ours, now) = (file.metadata().map_err(io_err)?, fs::metadata(path).map_err(io_err)?);
        if (ours.dev(), ours.ino()) != (now.dev(), now.ino()) {
            continue;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        let keypair = decode(path, &bytes)?;
        return Ok((keypair, IdentityLock { _file: file }));
    }
    Err(io_err(io::Error::other("the file kept being replaced while locking it")))
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Keypair, IdentityError> {
    let keypair =
        Keypair::from_protobuf_encoding(bytes).map_err(|source| IdentityError::Decode { path: path.into(), source })?;
    if keypair.key_type() != libp2p::identity::KeyType::Ed25519 {
        return Err(IdentityError::NotEd25519 { path: path.into(), kind: keypair.key_type() });
    }
    Ok(keypair)
}

fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |source| IdentityError::Io { path: path.into(), source };
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair.to_protobuf_encoding().map_err(|source| IdentityError::Decode { path: path.into(), source })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    // Written beside the target and renamed into place, so a crash never leaves a
    // half-written key that the next start would refuse. The temporary name is per process
    // so two processes creating the key at once do not write into one file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io_err)?;
    // `mode` applies only on creation; a stale tmp file may have kept a wider mode.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io_err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err)?;
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/identity");
        let first = load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        assert_eq!(again.key_type(), libp2p::identity::KeyType::Ed25519);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity");
        fs::write(&path, b"not a key").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Decode { .. }));
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        // The corrupt file is left alone rather than replaced by a new identity.
        assert_eq!(fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn a_locked_file_is_refused_until_its_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity");
        let (first, lock) = load_locked(&path).unwrap();
        let err = load_locked(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Locked { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("--identity"), "{msg}");
        drop(lock);
        let (again, _lock) = load_locked(&path).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
    }

    #[test]
    fn locking_a_corrupt_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity");
        fs::write(&path, b"junk").unwrap();
        assert!(matches!(load_locked(&path).unwrap_err(), IdentityError::Decode { .. }));
        assert_eq!(fs::read(&path).unwrap(), b"junk");
    }
}
