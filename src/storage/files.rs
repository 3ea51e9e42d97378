//! Files: where each torrent file lives on disk and a small table of open handles.
//!
//! Files are opened lazily: a write creates the file (and its parent directories) on first use;
//! reads and resume checks open read-only and treat a missing or too-short file as "no data",
//! never creating anything. Files are sparse: nothing is pre-filled.
//!
//! Verified pieces are written with direct I/O (`O_DIRECT`) where the file system takes it and
//! the write is aligned (offset, length and buffer on 4 KiB; piece buffers are made so): the
//! bytes go from our buffer to the device without a copy into the page cache, which cost more
//! CPU than anything but SHA-1 (on this project's VM, 0.2–1 s of system time per GiB against
//! 0.1 s direct; fresh page-cache pages are the dear ones). Anything unaligned (a last piece, a
//! file boundary inside a piece) and file systems that refuse `O_DIRECT` (tmpfs before Linux 6.6) are written
//! through the page cache as before; reads always are. So is a write whose caller says so
//! (`Storage` does when other pieces wait to be written: a direct write waits for the device).
//! `direct_io = false` turns it off (spinning disks, where the page cache's write ordering
//! matters more than the copy).
//!
//! Every method here does blocking I/O and must only be called from the blocking pool or a
//! dedicated thread. The table's `std::sync::Mutex` is held only to look up or open a handle,
//! never during a read or write (handles are `Arc<File>` and positional I/O needs no seek).
use super::layout::Layout;
use super::parts::PartFile;
use super::resume::FileStamp;
use super::StorageError;
use crate::metainfo::Metainfo;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Open handles kept at most; beyond that an arbitrary one is dropped (in-flight I/O keeps its
/// own `Arc`).
const MAX_OPEN: usize = 64;

/// Alignment of offset, length and memory for a direct write: the largest logical block size
/// of common devices, so it satisfies them all.
pub const DIRECT_ALIGN: usize = 4096;

/// Whether `data` at `offset` may be written with direct I/O.
fn aligned(offset: u64, data: &[u8]) -> bool {
    offset.is_multiple_of(DIRECT_ALIGN as u64)
        && data.len().is_multiple_of(DIRECT_ALIGN)
        && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
}

/// On-disk path of file `index`: `root/name` for a single-file torrent,
/// `root/name/<components...>` for a multi-file one. Built by pushing components (the parser
/// guarantees each is a safe single name), never by string concatenation.
pub fn file_path(meta: &Metainfo, root: &Path, index: usize) -> PathBuf {
    let mut path = root.to_path_buf();
    path.push(&meta.name);
    if meta.multi_file {
        for component in &meta.files[index].path {
            path.push(component);
        }
    }
    path
}

struct Handle {
    file: Arc<File>,
    writable: bool,
    /// The same file opened for direct writes, once one was asked for.
    direct: Option<Arc<File>>,
}

/// Lazily opened files of one torrent.
pub struct FileTable {
    paths: Vec<PathBuf>,
    open: Mutex<HashMap<usize, Handle>>,
    /// Aligned writes go around the page cache; cleared for good when the file system refuses.
    direct: AtomicBool,
    /// With a file selection: where unselected files' bytes go instead.
    parts: Option<PartFile>,
}

fn io_error(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io { path: path.to_path_buf(), source }
}

fn write_error(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Write { path: path.to_path_buf(), source }
}

impl FileTable {
    pub fn new(meta: &Metainfo, root: &Path) -> FileTable {
        let paths = (0..meta.files.len()).map(|i| file_path(meta, root, i)).collect();
        FileTable { paths, open: Mutex::new(HashMap::new()), direct: AtomicBool::new(true), parts: None }
    }

    /// Turns direct writes on or off (on by default).
    pub fn set_direct_io(&self, on: bool) {
        self.direct.store(on, Ordering::Relaxed);
    }

    /// Whether aligned writes still go around the page cache.
    pub fn direct_io(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// Sends the I/O of the files `parts` covers (the unselected ones) to the part file.
    pub fn with_parts(mut self, parts: PartFile) -> FileTable {
        self.parts = Some(parts);
        self
    }

    /// The part file, when it holds `file`'s bytes.
    fn part_of(&self, file: usize) -> Option<&PartFile> {
        self.parts.as_ref().filter(|p| p.covers(file))
    }

    /// Whether `file` is selected (every file is without a selection): only those are created.
    pub fn is_selected(&self, file: usize) -> bool {
        self.part_of(file).is_none()
    }

    pub fn path(&self, file: usize) -> &Path {
        &self.paths[file]
    }

    /// Writes all of `data` at `offset` of `file`, creating the file and its directories;
    /// with direct I/O if `direct`, direct writes are on and the write is aligned.
    pub fn write(&self, file: usize, offset: u64, data: &[u8], direct: bool) -> Result<(), StorageError> {
        if let Some(parts) = self.part_of(file) {
            return parts.write(file, offset, data);
        }
        let handle = self.handle(file, true)?.expect("writable open creates the file");
        if direct && self.direct_io() && aligned(offset, data) {
            if let Some(direct) = self.direct_handle(file)? {
                match direct.write_all_at(data, offset) {
                    Ok(()) => return Ok(()),
                    // The file system takes the flag at open but not this write: stop trying.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct.store(false, Ordering::Relaxed),
                    Err(e) => return Err(write_error(self.path(file), e)),
                }
            }
        }
        handle.write_all_at(data, offset).map_err(|e| write_error(self.path(file), e))
    }

    /// The direct-write handle of `file` (which exists: a buffered handle was opened for
    /// writing first); `None`, and direct writes off from now on, when the file system
    /// refuses `O_DIRECT`.
    fn direct_handle(&self, file: usize) -> Result<Option<Arc<File>>, StorageError> {
        let mut open = self.open.lock().expect("file table poisoned");
        let Some(h) = open.get_mut(&file) else { return Ok(None) };
        if let Some(d) = &h.direct {
            return Ok(Some(d.clone()));
        }
        let path = &self.paths[file];
        match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => {
                let f = Arc::new(f);
                h.direct = Some(f.clone());
                Ok(Some(f))
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(write_error(path, e)),
        }
    }

    /// Fills `buf` from `offset` of `file`. `Ok(false)` when the file is missing or too short
    /// to hold the whole range: that is "no data", not an error.
    pub fn read(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<bool, StorageError> {
        if let Some(parts) = self.part_of(file) {
            return parts.read(file, offset, buf);
        }
        let Some(handle) = self.handle(file, false)? else {
            return Ok(false);
        };
        match handle.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io_error(self.path(file), e)),
        }
    }

    /// Current on-disk length of `file`, `None` when it does not exist. Does not open it.
    /// For a file the part file covers: unbounded when the part file exists (its reads tell
    /// which pieces it holds), `None` when not.
    pub fn disk_length(&self, file: usize) -> Result<Option<u64>, StorageError> {
        if let Some(parts) = self.part_of(file) {
            return Ok(parts.exists().then_some(u64::MAX));
        }
        match std::fs::metadata(self.path(file)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(self.path(file), e)),
        }
    }

    /// What `file` looks like on disk now (the part file's stamp for a file it holds), for the
    /// resume record; `None` when it does not exist.
    pub fn stamp(&self, file: usize) -> std::io::Result<Option<FileStamp>> {
        match self.part_of(file) {
            Some(parts) => FileStamp::of(parts.path()),
            None => FileStamp::of(self.path(file)),
        }
    }

    /// The stamps of every file (`None` for padding), in the resume record's order.
    pub fn stamps(&self, layout: &Layout) -> Result<Vec<Option<FileStamp>>, StorageError> {
        (0..layout.file_count())
            .map(|f| if layout.is_padding(f) { Ok(None) } else { self.stamp(f).map_err(|e| io_error(self.path(f), e)) })
            .collect()
    }

    /// Makes `file` exist with at least `length` bytes (extending sparsely, never truncating),
    /// and, when `sync`, flushes it to disk.
    pub fn ensure_length(&self, file: usize, length: u64, sync: bool) -> Result<(), StorageError> {
        let handle = self.handle(file, true)?.expect("writable open creates the file");
        let path = self.path(file);
        let current = handle.metadata().map_err(|e| io_error(path, e))?.len();
        if current < length {
            handle.set_len(length).map_err(|e| write_error(path, e))?;
        }
        if sync {
            handle.sync_all().map_err(|e| write_error(path, e))?;
        }
        Ok(())
    }

    /// A handle for `file`; a writable one when `write` (creating the file), otherwise any
    /// (`None` when the file does not exist).
    fn handle(&self, file: usize, write: bool) -> Result<Option<Arc<File>>, StorageError> {
        let mut open = self.open.lock().expect("file table poisoned");
        if let Some(h) = open.get(&file) {
            if h.writable || !write {
                return Ok(Some(h.file.clone()));
            }
        }
        let path = self.path(file);
        let opened = if write {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
            }
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
        } else {
            File::open(path)
        };
        let f = match opened {
            Ok(f) => Arc::new(f),
            Err(e) if !write && e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if write => return Err(write_error(path, e)),
            Err(e) => return Err(io_error(path, e)),
        };
        if open.len() >= MAX_OPEN && !open.contains_key(&file) {
            let victim = *open.keys().next().expect("table is non-empty");
            open.remove(&victim);
        }
        open.insert(file, Handle { file: f.clone(), writable: write, direct: None });
        Ok(Some(f))
    }
}

#[cfg(test)]
pub(in crate::storage) mod tests {
    use super::*;
    use crate::storage::layout::tests::meta;

    #[test]
    fn paths_single_and_multi_file() {
        let root = Path::new("/out");
        let mut m = meta(16, &[("a", 1, false)]);
        m.name = "movie.mkv".into();
        m.multi_file = false;
        m.files[0].path = vec!["movie.mkv".into()];
        assert_eq!(file_path(&m, root, 0), Path::new("/out/movie.mkv"));

        let mut m = meta(16, &[("a", 1, false), ("b", 1, false)]);
        m.name = "album".into();
        m.files[1].path = vec!["disc 1".into(), "track.flac".into()];
        assert_eq!(file_path(&m, root, 0), Path::new("/out/album/a"));
        assert_eq!(file_path(&m, root, 1), Path::new("/out/album/disc 1/track.flac"));
    }

    #[test]
    fn read_of_missing_or_short_file_is_no_data_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTable::new(&meta(16, &[("a", 8, false)]), dir.path());
        let mut buf = [0u8; 4];
        assert!(!t.read(0, 0, &mut buf).unwrap());
        assert!(!dir.path().join("t").exists());

        t.write(0, 2, b"xy", true).unwrap();
        assert!(t.read(0, 0, &mut buf[..4]).unwrap());
        assert_eq!(buf, [0, 0, b'x', b'y']);
        assert!(!t.read(0, 2, &mut buf).unwrap(), "range past the end is no data");
        assert_eq!(t.disk_length(0).unwrap(), Some(4));
    }

    /// `len` bytes of `byte` starting on a 4 KiB boundary (inside `backing`).
    fn aligned(backing: &mut Vec<u8>, len: usize, byte: u8) -> &[u8] {
        *backing = vec![byte; len + DIRECT_ALIGN];
        let pad = backing.as_ptr().align_offset(DIRECT_ALIGN);
        &backing[pad..pad + len]
    }

    /// How many pages of `path` the page cache holds (util-linux's `fincore`).
    pub(in crate::storage) fn resident_pages(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore").args(["-n", "-r", "-o", "PAGES"]).arg(path).output().unwrap();
        assert!(out.status.success(), "fincore: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    }

    #[test]
    fn aligned_writes_go_around_the_page_cache_and_the_rest_through_it() {
        // /var/tmp is on a disk (FHS); /tmp may be tmpfs, which refuses O_DIRECT.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let t = FileTable::new(&meta(16, &[("a", 32768, false)]), dir.path());
        let mut backing = Vec::new();
        t.write(0, 0, aligned(&mut backing, 16384, 1), true).unwrap();
        t.write(0, 20000, &[2; 100], true).unwrap();
        assert!(t.direct_io(), "ext4 takes direct writes");
        let on_disk = std::fs::read(t.path(0)).unwrap();
        assert_eq!(&on_disk[..16384], &[1; 16384][..]);
        assert_eq!(&on_disk[20000..20100], &[2; 100][..]);
        // `fs::read` filled the page cache: empty it by truncating, then write both again.
        drop(on_disk);
        std::fs::OpenOptions::new().write(true).open(t.path(0)).unwrap().set_len(0).unwrap();
        t.write(0, 0, aligned(&mut backing, 16384, 3), true).unwrap();
        assert_eq!(resident_pages(t.path(0)), 0, "the direct write left nothing in the page cache");
        t.write(0, 20000, &[4; 100], true).unwrap();
        assert_eq!(resident_pages(t.path(0)), 1, "the unaligned write went through the page cache");
        let mut buf = [0u8; 4];
        assert!(t.read(0, 16380, &mut buf).unwrap());
        assert_eq!(buf, [3; 4], "a buffered read sees the direct write");
    }

    #[test]
    fn with_direct_io_off_every_write_goes_through_the_page_cache() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let t = FileTable::new(&meta(16, &[("a", 16384, false)]), dir.path());
        t.set_direct_io(false);
        let mut backing = Vec::new();
        t.write(0, 0, aligned(&mut backing, 16384, 5), true).unwrap();
        assert_eq!(resident_pages(t.path(0)), 4);
        assert_eq!(std::fs::read(t.path(0)).unwrap(), vec![5; 16384]);
    }

    #[test]
    fn read_only_handle_is_upgraded_for_writes() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTable::new(&meta(16, &[("a", 8, false)]), dir.path());
        t.write(0, 0, b"abcd", true).unwrap();
        let fresh = FileTable::new(&meta(16, &[("a", 8, false)]), dir.path());
        let mut buf = [0u8; 4];
        assert!(fresh.read(0, 0, &mut buf).unwrap());
        fresh.write(0, 4, b"efgh", true).unwrap();
        assert_eq!(std::fs::read(fresh.path(0)).unwrap(), b"abcdefgh");
    }
}
