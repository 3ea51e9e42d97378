//! Making a v1 `.torrent` from a file or a directory.
//!
//! Parts, in the order they run: [`collect_files`] walks the source (sorted, recursive),
//! [`default_piece_length`] picks a piece size, [`hash_pieces`] hashes on every core, and
//! [`create_torrent`] ties them together into bencoded bytes.
//!
//! Directory walking rules: entries are sorted by path component bytes so the same tree always
//! gives the same info-hash; hidden files are included; symbolic links are *skipped*, never
//! followed, so a torrent cannot describe data outside PATH (or loop); other non-regular
//! files (sockets, fifos, devices) are skipped too. The root PATH itself may be a symlink,
//! since the user named it.
use super::{validate, MAX_PIECE_LENGTH, MIN_PIECE_LENGTH};
use crate::bencode::{self, Value};
use sha1::{Digest, Sha1};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What to put into a new torrent besides the data.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Piece length in bytes; `None` picks one from the total size.
    pub piece_length: Option<u32>,
    /// Tracker tiers (BEP 12); the first tracker also becomes `announce`.
    pub trackers: Vec<Vec<String>>,
    pub private: bool,
    pub comment: Option<String>,
    /// `created by`; `None` writes `shoal/<version>`.
    pub created_by: Option<String>,
    /// `creation date` (unix seconds); `None` writes now.
    pub creation_date: Option<i64>,
    /// Hashing threads; 0 uses every core.
    pub threads: usize,
}

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: no files to describe (empty directory, or only symlinks)")]
    NoFiles(PathBuf),
    #[error("{path}: file name is not valid utf-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: name {component:?} cannot go into a torrent: {reason}")]
    BadName { path: PathBuf, component: String, reason: &'static str },
    #[error("piece size {0} must be a power of two in 16 KiB..=64 MiB")]
    BadPieceLength(u64),
    #[error("{0}: file changed size while hashing")]
    FileChanged(PathBuf),
}

/// One source file: where it is on disk and where it goes in the torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub disk_path: PathBuf,
    /// Components below the torrent root (empty for a single-file torrent).
    pub torrent_path: Vec<String>,
    pub length: u64,
}

/// The walked source: the torrent name, its files in torrent order, and single/multi shape.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub files: Vec<SourceFile>,
    pub multi_file: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CreateError + '_ {
    move |source| CreateError::Io { path: path.to_path_buf(), source }
}

/// Walks `root` (a file, or a directory walked recursively) following the module's rules.
pub fn collect_files(root: &Path) -> Result<Source, CreateError> {
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    // canonicalize so that `.` or `dir/` still yields the directory's real name.
    let canonical = root.canonicalize().map_err(io_err(root))?;
    let name = checked_name(&canonical, canonical.file_name())?;
    if meta.is_file() {
        let files = vec![SourceFile { disk_path: root.to_path_buf(), torrent_path: Vec::new(), length: meta.len() }];
        return Ok(Source { name, files, multi_file: false });
    }
    let mut files = Vec::new();
    walk(root, &mut Vec::new(), &mut files)?;
    if files.is_empty() {
        return Err(CreateError::NoFiles(root.to_path_buf()));
    }
    Ok(Source { name, files, multi_file: true })
}

fn checked_name(path: &Path, name: Option<&std::ffi::OsStr>) -> Result<String, CreateError> {
    let name = name.and_then(|n| n.to_str()).ok_or_else(|| CreateError::NotUtf8 { path: path.to_path_buf() })?;
    // Readers (shoal included) would replace these, so the torrent would name files that
    // are not the ones on disk.
    let checked = if name.chars().any(super::names::is_unsafe) {
        Err("contains control, bidi or invisible characters")
    } else {
        validate::check_component(name)
    };
    checked.map_err(|reason| CreateError::BadName { path: path.to_path_buf(), component: name.to_string(), reason })?;
    Ok(name.to_string())
}

fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<SourceFile>) -> Result<(), CreateError> {
    let mut entries =
        std::fs::read_dir(dir).map_err(io_err(dir))?.collect::<Result<Vec<_>, _>>().map_err(io_err(dir))?;
    // Sorting by raw name bytes per directory gives component-wise path order overall.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err(&path))?;
        if kind.is_symlink() || !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let name = checked_name(&path, Some(&entry.file_name()))?;
        prefix.push(name);
        if kind.is_dir() {
            walk(&path, prefix, out)?;
        } else {
            let length = entry.metadata().map_err(io_err(&path))?.len();
            out.push(SourceFile { disk_path: path, torrent_path: prefix.clone(), length });
        }
        prefix.pop();
    }
    Ok(())
}

/// Picks a piece length for `total` bytes: the largest power of two giving at least 1000
/// pieces (so 1000..2000 pieces), clamped to 16 KiB..=16 MiB, as mktorrent/libtorrent aim for.
pub fn default_piece_length(total: u64) -> u32 {
    const TARGET_PIECES: u64 = 1000;
    const MAX_DEFAULT: u64 = 16 << 20;
    let ideal = total / TARGET_PIECES;
    let pow = if ideal == 0 { 0 } else { 1u64 << (63 - ideal.leading_zeros()) };
    pow.clamp(u64::from(MIN_PIECE_LENGTH), MAX_DEFAULT) as u32
}

/// SHA-1 of every piece of the concatenated `files`, split across `threads` threads (0 = every
/// core). Each thread hashes a contiguous run of pieces with positional reads, opening one
/// file at a time, so pieces may span file boundaries and descriptors stay bounded.
pub fn hash_pieces(files: &[SourceFile], piece_length: u32, threads: usize) -> Result<Vec<[u8; 20]>, CreateError> {
    let total: u64 = files.iter().map(|f| f.length).sum();
    let piece_count = total.div_ceil(u64::from(piece_length)) as usize;
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, piece_count.max(1));
    let per_thread = piece_count.div_ceil(threads).max(1);
    let mut out = vec![[0u8; 20]; piece_count];
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per_thread)
            .enumerate()
            .map(|(i, chunk)| {
                let first = i * per_thread;
                s.spawn(move || hash_run(files, piece_length, total, first, chunk))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>, _>>()
    })?;
    Ok(out)
}

/// Hashes pieces `first..first + out.len()` into `out`.
fn hash_run(
    files: &[SourceFile],
    piece_length: u32,
    total: u64,
    first: usize,
    out: &mut [[u8; 20]],
) -> Result<(), CreateError> {
    let mut reader = Reader::new(files);
    let mut buf = vec![0u8; piece_length as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        let start = (first + i) as u64 * u64::from(piece_length);
        let len = (total - start).min(u64::from(piece_length)) as usize;
        reader.read_exact_at(&mut buf[..len], start)?;
        *slot = Sha1::digest(&buf[..len]).into();
    }
    Ok(())
}

/// Positional reads over the concatenation of files, keeping one file open at a time.
struct Reader<'a> {
    files: &'a [SourceFile],
    /// File start offsets in the concatenation.
    starts: Vec<u64>,
    open: Option<(usize, File)>,
}

impl<'a> Reader<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        let mut starts = Vec::with_capacity(files.len());
        let mut at = 0;
        for f in files {
            starts.push(at);
            at += f.length;
        }
        Reader { files, starts, open: None }
    }

    fn read_exact_at(&mut self, mut buf: &mut [u8], mut pos: u64) -> Result<(), CreateError> {
        while !buf.is_empty() {
            // The last file starting at or before pos that still has bytes past pos.
            let idx = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
            let idx = (idx..self.files.len())
                .find(|&i| self.starts[i] + self.files[i].length > pos)
                .ok_or_else(|| CreateError::FileChanged(self.files[idx].disk_path.clone()))?;
            let file = &self.files[idx];
            let within = pos - self.starts[idx];
            let n = ((file.length - within) as usize).min(buf.len());
            let handle = self.file(idx)?;
            read_full(handle, &mut buf[..n], within, &file.disk_path)?;
            buf = &mut buf[n..];
            pos += n as u64;
        }
        Ok(())
    }

    fn file(&mut self, idx: usize) -> Result<&File, CreateError> {
        let open = match self.open.take() {
            Some((i, f)) if i == idx => (i, f),
            _ => {
                let path = &self.files[idx].disk_path;
                (idx, File::open(path).map_err(io_err(path))?)
            }
        };
        Ok(&self.open.insert(open).1)
    }
}

fn read_full(f: &File, mut buf: &mut [u8], mut at: u64, path: &Path) -> Result<(), CreateError> {
    while !buf.is_empty() {
        match f.read_at(buf, at) {
            Ok(0) => return Err(CreateError::FileChanged(path.to_path_buf())),
            Ok(n) => {
                buf = &mut buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path)(e)),
        }
    }
    Ok(())
}

/// Makes the bencoded bytes of a v1 torrent describing `path`.
pub fn create_torrent(path: &Path, opts: &CreateOptions) -> Result<Vec<u8>, CreateError> {
    let source = collect_files(path)?;
    let total: u64 = source.files.iter().map(|f| f.length).sum();
    let piece_length = match opts.piece_length {
        Some(p) => check_piece_length(u64::from(p))?,
        None => default_piece_length(total),
    };
    let pieces = hash_pieces(&source.files, piece_length, opts.threads)?;
    let info = info_dict(&source, piece_length, &pieces, opts.private);
    Ok(bencode::encode(&outer_dict(info, opts)))
}

/// Accepts a user-given piece length when it is a power of two in range.
pub fn check_piece_length(p: u64) -> Result<u32, CreateError> {
    let ok = p.is_power_of_two() && (u64::from(MIN_PIECE_LENGTH)..=u64::from(MAX_PIECE_LENGTH)).contains(&p);
    if ok {
        Ok(p as u32)
    } else {
        Err(CreateError::BadPieceLength(p))
    }
}

fn info_dict(source: &Source, piece_length: u32, pieces: &[[u8; 20]], private: bool) -> Value {
    let mut info = Value::dict()
        .with("name", source.name.as_str())
        .with("piece length", piece_length)
        .with("pieces", pieces.concat());
    if private {
        info = info.with("private", 1i64);
    }
    if source.multi_file {
        let files = source
            .files
            .iter()
            .map(|f| {
                let path: Vec<Value> = f.torrent_path.iter().map(|c| c.as_str().into()).collect();
                Value::dict().with("length", length_value(f.length)).with("path", path).build()
            })
            .collect::<Vec<_>>();
        info = info.with("files", files);
    } else {
        let len = source.files.first().map_or(0, |f| f.length);
        info = info.with("length", length_value(len));
    }
    info.build()
}

/// File lengths above i64::MAX cannot exist on any real file system; saturate rather than wrap.
fn length_value(len: u64) -> Value {
    Value::Int(i64::try_from(len).unwrap_or(i64::MAX))
}

fn outer_dict(info: Value, opts: &CreateOptions) -> Value {
    let tiers: Vec<Vec<String>> = opts.trackers.iter().filter(|t| !t.is_empty()).cloned().collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let created_by = opts.created_by.clone().unwrap_or_else(|| format!("shoal/{}", env!("CARGO_PKG_VERSION")));
    let mut d = Value::dict()
        .with("info", info)
        .with("creation date", opts.creation_date.unwrap_or(now))
        .with("created by", created_by)
        .with_opt("comment", opts.comment.clone());
    if let Some(first) = tiers.first().and_then(|t| t.first()) {
        d = d.with("announce", first.as_str());
    }
    // BEP 12 says announce-list is only needed for more than one tracker, but clients agree on
    // reading it whenever present; write it whenever there is more than one tracker.
    if tiers.iter().map(Vec::len).sum::<usize>() > 1 {
        let list: Vec<Value> =
            tiers.iter().map(|t| Value::List(t.iter().map(|u| u.as_str().into()).collect())).collect();
        d = d.with("announce-list", list);
    }
    d.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;

    #[test]
    fn default_piece_lengths() {
        assert_eq!(default_piece_length(0), 16 << 10);
        assert_eq!(default_piece_length(1 << 20), 16 << 10);
        assert_eq!(default_piece_length(100_000_000), 64 << 10);
        assert_eq!(default_piece_length(1 << 30), 1 << 20);
        assert_eq!(default_piece_length(1 << 40), 16 << 20);
        for total in [50_000_000u64, 700_000_000, 4_000_000_000, 20_000_000_000] {
            let p = default_piece_length(total);
            let n = total.div_ceil(u64::from(p));
            assert!(p.is_power_of_two() && (1000..2000).contains(&n), "{total}: {p} {n}");
        }
    }

    fn write(dir: &Path, rel: &str, len: usize, seed: u8) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        std::fs::write(p, data).unwrap();
    }

    /// Reference: concatenate everything in memory and hash chunk by chunk.
    fn reference(files: &[SourceFile], piece_length: u32) -> Vec<[u8; 20]> {
        let mut all = Vec::new();
        for f in files {
            all.extend(std::fs::read(&f.disk_path).unwrap());
        }
        all.chunks(piece_length as usize).map(|c| Sha1::digest(c).into()).collect()
    }

    #[test]
    fn hashing_across_file_boundaries_matches_reference() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        write(&root, "b/z.bin", 40_000, 1);
        write(&root, "a.bin", 7, 2);
        write(&root, "b/empty", 0, 3);
        write(&root, ".hidden", 20_001, 4);
        write(&root, "c/d/e.bin", 100_000, 5);
        std::os::unix::fs::symlink(root.join("a.bin"), root.join("link")).unwrap();
        let src = collect_files(&root).unwrap();
        let names: Vec<String> = src.files.iter().map(|f| f.torrent_path.join("/")).collect();
        assert_eq!(names, [".hidden", "a.bin", "b/empty", "b/z.bin", "c/d/e.bin"]);
        let want = reference(&src.files, 16 << 10);
        for threads in [1, 2, 3, 7, 64] {
            assert_eq!(hash_pieces(&src.files, 16 << 10, threads).unwrap(), want);
        }
    }

    #[test]
    fn created_torrent_parses_back() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("set");
        write(&root, "x/one", 30_000, 9);
        write(&root, "two", 5, 8);
        let opts = CreateOptions {
            trackers: vec![vec!["http://a/ann".into(), "http://b/ann".into()], vec!["udp://c:1".into()]],
            private: true,
            comment: Some("hi".into()),
            creation_date: Some(1_700_000_000),
            ..Default::default()
        };
        let bytes = create_torrent(&root, &opts).unwrap();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.name, "set");
        assert!(m.multi_file && m.private);
        assert_eq!(m.total_length, 30_005);
        assert_eq!(m.piece_count(), 2);
        assert_eq!(m.trackers, opts.trackers);
        assert_eq!(m.comment.as_deref(), Some("hi"));
        assert_eq!(m.created_by, Some(format!("shoal/{}", env!("CARGO_PKG_VERSION"))));
        assert_eq!(m.files[1].path, ["x", "one"]);
        assert_eq!(m.files[1].offset, 5);

        let single = create_torrent(&root.join("two"), &CreateOptions::default()).unwrap();
        let m = Metainfo::from_bytes(&single).unwrap();
        assert!(!m.multi_file);
        assert_eq!(m.files[0].path, ["two"]);
        assert!(m.trackers.is_empty());
    }

    #[test]
    fn rejects_bad_inputs() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(collect_files(&empty), Err(CreateError::NoFiles(_))));
        write(tmp.path(), "bad/CON.txt", 1, 0);
        assert!(matches!(collect_files(&tmp.path().join("bad")), Err(CreateError::BadName { .. })));
        write(tmp.path(), "bidi/a\u{202e}txt.exe", 1, 0);
        let e = collect_files(&tmp.path().join("bidi")).unwrap_err();
        assert!(e.to_string().contains("contains control, bidi or invisible characters"), "{e}");
        assert!(matches!(check_piece_length(1000), Err(CreateError::BadPieceLength(1000))));
        assert!(matches!(collect_files(&tmp.path().join("missing")), Err(CreateError::Io { .. })));
    }
}
