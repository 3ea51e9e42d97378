//! Storage behaviour through its async API on real temporary directories.
use super::*;
use crate::metainfo::{FileEntry, InfoHash};
use sha1::{Digest, Sha1};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

const PIECE: u32 = 32;

/// A torrent built from `files` of `(path, length, padding)`, its hashes computed over `data`
/// (padding bytes zero, as BEP 47 requires).
struct Fixture {
    meta: Arc<Metainfo>,
    data: Vec<u8>,
    dir: tempfile::TempDir,
}

fn fixture(files: &[(&[&str], u64, bool)], multi_file: bool) -> Fixture {
    fixture_in(files, multi_file, PIECE, tempfile::tempdir().unwrap())
}

/// [`fixture`] with pieces of `piece_length` bytes, in `dir`.
fn fixture_in(files: &[(&[&str], u64, bool)], multi_file: bool, piece_length: u32, dir: tempfile::TempDir) -> Fixture {
    let mut offset = 0;
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for &(path, length, padding) in files {
        entries.push(FileEntry { path: path.iter().map(|s| s.to_string()).collect(), length, offset, padding });
        for i in 0..length {
            let byte = if padding { 0 } else { (offset + i).wrapping_mul(31).wrapping_add(7) as u8 };
            data.push(byte);
        }
        offset += length;
    }
    let pieces = data.chunks(piece_length as usize).map(|c| Sha1::digest(c).into()).collect();
    let meta = Metainfo {
        info_hash: InfoHash([0; 20]),
        info_bytes: Bytes::new(),
        name: "t".into(),
        piece_length,
        pieces,
        files: entries,
        multi_file,
        total_length: offset,
        trackers: vec![],
        private: false,
        comment: None,
        created_by: None,
        creation_date: None,
        url_list: vec![],
    };
    Fixture { meta: Arc::new(meta), data, dir }
}

/// a: 0..50, empty: 50..50, pad: 50..64, dir/b: 64..134, c: 134..139 → 5 pieces, last of 11.
fn multi() -> Fixture {
    fixture(
        &[
            (&["a"], 50, false),
            (&["empty"], 0, false),
            (&[".pad", "14"], 14, true),
            (&["dir", "b"], 70, false),
            (&["c"], 5, false),
        ],
        true,
    )
}

impl Fixture {
    fn storage(&self) -> Storage {
        Storage::new(self.meta.clone(), self.dir.path().to_path_buf())
    }

    fn piece(&self, index: u32) -> Bytes {
        let length = self.meta.piece_length as usize;
        let start = index as usize * length;
        let end = (start + length).min(self.data.len());
        Bytes::copy_from_slice(&self.data[start..end])
    }

    fn file_on_disk(&self, path: &[&str]) -> std::path::PathBuf {
        path.iter().fold(self.dir.path().join("t"), |p, c| p.join(c))
    }

    fn source(&self, file: usize) -> &[u8] {
        let f = &self.meta.files[file];
        &self.data[f.offset as usize..(f.offset + f.length) as usize]
    }
}

async fn check(s: &Storage) -> (Vec<usize>, u32) {
    let seen = Arc::new(AtomicU32::new(0));
    let seen2 = seen.clone();
    let have = s
        .check_existing(
            None,
            Arc::new(move |n| {
                seen2.fetch_max(n, Ordering::SeqCst);
            }),
        )
        .await
        .unwrap();
    (have.iter_ones().collect(), seen.load(Ordering::SeqCst))
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn writing_every_piece_reproduces_the_files() {
    let f = multi();
    let s = f.storage();
    assert_eq!(s.layout().piece_count(), 5);
    for index in (0..5).rev() {
        assert_eq!(s.write_piece(index, f.piece(index)).await.unwrap(), PieceVerdict::Written);
    }
    s.finalize(true).await.unwrap();
    assert_eq!(std::fs::read(f.file_on_disk(&["a"])).unwrap(), f.source(0));
    assert_eq!(std::fs::read(f.file_on_disk(&["empty"])).unwrap(), b"");
    assert_eq!(std::fs::read(f.file_on_disk(&["dir", "b"])).unwrap(), f.source(3));
    assert_eq!(std::fs::read(f.file_on_disk(&["c"])).unwrap(), f.source(4));
    assert!(!f.file_on_disk(&[".pad"]).exists(), "padding files are never created");
    assert_eq!(tree(f.dir.path()), ["t", "t/a", "t/c", "t/dir", "t/dir/b", "t/empty"]);
}

#[tokio::test]
async fn corrupted_piece_fails_and_writes_nothing() {
    let f = multi();
    let s = f.storage();
    let mut bad = f.piece(2).to_vec();
    bad[3] ^= 1;
    assert_eq!(s.write_piece(2, Bytes::from(bad)).await.unwrap(), PieceVerdict::HashFailed);
    assert!(tree(f.dir.path()).is_empty());
}

#[tokio::test]
async fn write_piece_rejects_bad_index_and_size() {
    let f = multi();
    let s = f.storage();
    assert!(matches!(s.write_piece(5, f.piece(0)).await, Err(StorageError::BadPiece(5))));
    assert!(matches!(s.write_piece(4, f.piece(0)).await, Err(StorageError::BadBlock { index: 4, .. })));
    assert!(tree(f.dir.path()).is_empty());
}

#[tokio::test]
async fn read_block_across_file_boundaries_and_padding() {
    let f = multi();
    let s = f.storage();
    for index in 0..5 {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    for index in 0..5u32 {
        let size = s.layout().piece_size(index).unwrap();
        for begin in (0..size).step_by(7) {
            let length = 7.min(size - begin);
            let got = s.read_block(index, begin, length).await.unwrap();
            let at = (index * PIECE + begin) as usize;
            assert_eq!(&got[..], &f.data[at..at + length as usize], "piece {index} block {begin}+{length}");
        }
    }
    // Piece 1 = 32..64: the end of a, the empty file, then all of the padding (zeros).
    let whole = s.read_block(1, 0, PIECE).await.unwrap();
    assert_eq!(&whole[18..], &[0u8; 14]);
    assert!(matches!(s.read_block(4, 10, 2).await, Err(StorageError::BadBlock { .. })));
    assert!(matches!(s.read_block(9, 0, 1).await, Err(StorageError::BadPiece(9))));
}

#[tokio::test]
async fn read_block_never_serves_data_from_before_a_write() {
    let f = multi();
    let s = f.storage();
    assert!(matches!(s.read_block(0, 0, 4).await, Err(StorageError::Missing { index: 0 })));
    // Writing piece 1 makes `a` 50 bytes long, so piece 0 reads as sparse zeros and is cached.
    s.write_piece(1, f.piece(1)).await.unwrap();
    assert_eq!(&s.read_block(0, 0, 4).await.unwrap()[..], &[0; 4]);
    s.write_piece(0, f.piece(0)).await.unwrap();
    assert_eq!(&s.read_block(0, 0, 4).await.unwrap()[..], &f.data[..4]);
}

#[tokio::test]
async fn check_existing_finds_exactly_the_written_pieces() {
    let f = multi();
    let s = f.storage();
    for index in [0, 2, 4] {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    // A fresh handle, as after a restart.
    let (have, checked) = check(&f.storage()).await;
    assert_eq!(have, [0, 2, 4]);
    assert_eq!(checked, 5);
}

#[tokio::test]
async fn check_existing_on_empty_dir_finds_nothing_and_creates_nothing() {
    let f = multi();
    let (have, checked) = check(&f.storage()).await;
    assert!(have.is_empty());
    assert_eq!(checked, 5);
    assert!(tree(f.dir.path()).is_empty());
}

#[tokio::test]
async fn corrupted_byte_on_disk_loses_exactly_that_piece() {
    let f = multi();
    let s = f.storage();
    for index in 0..5 {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    // Byte 100 of the stream is byte 36 of dir/b, in piece 3.
    let path = f.file_on_disk(&["dir", "b"]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[36] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let (have, _) = check(&f.storage()).await;
    assert_eq!(have, [0, 1, 2, 4]);
}

#[tokio::test]
async fn truncated_file_loses_the_pieces_it_cannot_cover() {
    let f = multi();
    let s = f.storage();
    for index in 0..5 {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    let path = f.file_on_disk(&["dir", "b"]);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(60).unwrap();
    // dir/b covers 64..134 and keeps 64..124: piece 3 (96..128) and piece 4 (128..139, which
    // starts with the tail of dir/b) are short; piece 2 (64..96) survives.
    let (have, _) = check(&f.storage()).await;
    assert_eq!(have, [0, 1, 2]);
}

#[tokio::test]
async fn single_file_torrent_lives_at_root_slash_name() {
    let f = fixture(&[(&["t"], 70, false)], false);
    let s = f.storage();
    for index in 0..3 {
        assert_eq!(s.write_piece(index, f.piece(index)).await.unwrap(), PieceVerdict::Written);
    }
    s.finalize(true).await.unwrap();
    assert_eq!(std::fs::read(f.dir.path().join("t")).unwrap(), f.data);
    assert_eq!(tree(f.dir.path()), ["t"]);
}

/// Checks with the fast-resume record at `record`.
async fn check_from(s: &Storage, record: &Path) -> Vec<usize> {
    let have = s.check_existing(Some(record.to_path_buf()), Arc::new(|_| {})).await.unwrap();
    have.iter_ones().collect()
}

fn bits(count: usize, ones: &[usize]) -> BitVec<u8, Msb0> {
    let mut b = BitVec::repeat(false, count);
    for &i in ones {
        b.set(i, true);
    }
    b
}

/// Flips one byte of `path` and puts its modification time back, so its stamp is unchanged:
/// only a check that reads the file can tell.
fn corrupt_keeping_stamp(path: &Path, at: u64) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[!byte[0]], at).unwrap();
    file.set_modified(mtime).unwrap();
}

#[tokio::test]
async fn a_resume_record_of_unchanged_files_is_trusted_without_reading() {
    let f = multi();
    let s = f.storage();
    for index in [0, 2, 4] {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    let record = f.dir.path().join("resume.json");
    s.save_resume(record.clone(), bits(5, &[0, 2, 4])).await.unwrap();
    // Byte 10 of dir/b is in piece 2: a hash would lose it, the record keeps it.
    corrupt_keeping_stamp(&f.file_on_disk(&["dir", "b"]), 10);
    assert_eq!(check_from(&f.storage(), &record).await, [0, 2, 4], "nothing was read");
    assert_eq!(check(&f.storage()).await.0, [0, 4], "without the record the corruption shows");
}

#[tokio::test]
async fn a_file_changed_since_the_record_has_its_pieces_hashed_again() {
    let f = multi();
    let s = f.storage();
    for index in [0, 2] {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    let record = f.dir.path().join("resume.json");
    s.save_resume(record.clone(), bits(5, &[0, 2])).await.unwrap();
    // Pieces 3 and 4 written after the record (as by a daemon killed before its next one):
    // dir/b and c change, so pieces 2-4 are hashed and found; a is unchanged, piece 0 trusted.
    for index in [3, 4] {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    // Timestamps are coarse: the test moves them itself so "changed" does not hang on a tick.
    let (b, c) = (f.file_on_disk(&["dir", "b"]), f.file_on_disk(&["c"]));
    let set_mtime = |path: &Path, secs: u64| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::OpenOptions::new().write(true).open(path).unwrap().set_modified(at).unwrap();
    };
    set_mtime(&b, 1_000_000_000);
    set_mtime(&c, 1_000_000_000);
    corrupt_keeping_stamp(&f.file_on_disk(&["a"]), 3);
    assert_eq!(check_from(&f.storage(), &record).await, [0, 2, 3, 4]);
    // A changed file whose recorded piece went bad loses it.
    corrupt_keeping_stamp(&b, 40);
    set_mtime(&b, 1_000_000_005);
    assert_eq!(check_from(&f.storage(), &record).await, [0, 2, 4]);
}

#[tokio::test]
async fn a_record_that_does_not_fit_is_ignored_and_everything_hashed() {
    let f = multi();
    let s = f.storage();
    s.write_piece(1, f.piece(1)).await.unwrap();
    let record = f.dir.path().join("resume.json");
    for text in [&b"{not json"[..], br#"{"info_hash":"00","have":"f8","files":[null,null,null,null,null]}"#] {
        std::fs::write(&record, text).unwrap();
        assert_eq!(check_from(&f.storage(), &record).await, [1]);
    }
    assert_eq!(check_from(&f.storage(), &f.dir.path().join("missing.json")).await, [1]);
}

/// A block handed to a peer task owns its bytes: a slice would keep the whole cached piece
/// alive while the block waits in a send queue, so a peer that stops reading with one block
/// of each of many pieces queued would pin all those pieces.
#[tokio::test]
async fn a_served_block_does_not_pin_its_piece() {
    let f = multi();
    let s = f.storage();
    s.write_piece(0, f.piece(0)).await.unwrap();
    let block = s.read_block(0, 0, 7).await.unwrap();
    assert_eq!(&block[..], &f.data[..7]);
    assert!(block.is_unique(), "the block shares its allocation with the cached piece");
}

/// Only a request for a piece's first block reads (and caches) the whole piece; a block
/// asked for from the middle of an uncached piece is read alone.
#[tokio::test]
async fn only_a_pieces_first_block_loads_the_whole_piece() {
    let f = multi();
    let s = f.storage();
    for index in 0..2 {
        s.write_piece(index, f.piece(index)).await.unwrap();
    }
    let middle = s.read_block(0, 7, 7).await.unwrap();
    assert_eq!(&middle[..], &f.data[7..14]);
    assert!(s.inner.cache.loaded(0).is_none(), "a block from the middle loaded the piece");
    let first = s.read_block(1, 0, 7).await.unwrap();
    let at = PIECE as usize;
    assert_eq!(&first[..], &f.data[at..at + 7]);
    assert_eq!(s.inner.cache.loaded(1).as_deref(), Some(&f.piece(1)[..]), "the first block loads the piece");
}

#[test]
fn a_piece_queued_behind_another_write_goes_through_the_page_cache() {
    // /var/tmp is on a disk (FHS), which takes direct writes; /tmp may be tmpfs.
    let piece = 16384;
    let f = fixture_in(&[(&["a"], 2 * piece as u64, false)], false, piece, tempfile::tempdir_in("/var/tmp").unwrap());
    let s = f.storage();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Page-aligned copies of both pieces, as the assembly makes them, so either may go direct.
    let aligned = |index: u32| {
        let mut v = vec![0u8; piece as usize + 4096];
        let pad = v.as_ptr().align_offset(4096);
        v[pad..pad + piece as usize].copy_from_slice(&f.piece(index));
        Bytes::from(v).slice(pad..pad + piece as usize)
    };
    let busy = s.inner.writer.lock().unwrap();
    let writes: Vec<_> = (0..2)
        .map(|i| {
            let (s, data) = (s.clone(), aligned(i));
            rt.spawn(async move { s.write_piece(i, data).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.inner.queued.load(Ordering::Relaxed) < 2 {
        assert!(std::time::Instant::now() < deadline, "both pieces hashed and waiting for the writer");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(busy);
    for w in writes {
        assert!(matches!(rt.block_on(w).unwrap(), Ok(PieceVerdict::Written)));
    }
    let path = f.file_on_disk(&[]);
    // The first to take the writer had the other queued behind it: buffered, one piece of
    // 4 KiB pages in the page cache; the second went around it.
    assert_eq!(super::files::tests::resident_pages(&path), u64::from(piece / 4096));
    assert_eq!(std::fs::read(&path).unwrap(), f.data);
}
