//! The download data path without the network: 16 KiB blocks (slices of one receive buffer,
//! as the codec hands them over) copied into piece buffers by the torrent's `Assembly`, then
//! each complete piece hashed and written by `Storage::write_piece` on the blocking pool, up
//! to 64 pieces in flight, and each written piece's buffer reused by the assembly once storage
//! dropped it, as in the torrent task. Ends when every piece is verified and written. The files go to tmpfs
//! (`/dev/shm`) where there is one, so the disk's writeback of earlier iterations does not
//! throttle later ones: this measures the CPU cost of the path.
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shoal::metainfo::create::{create_torrent, CreateOptions};
use shoal::metainfo::Metainfo;
use shoal::storage::{PieceVerdict, Storage};
use shoal::torrent::assembly::Assembly;
use shoal::torrent::piece_buf::PieceBuf;
use shoal::types::{PeerAddr, BLOCK_SIZE};
use std::sync::Arc;
use tokio::task::JoinSet;

const SIZE: usize = 64 << 20;
const PIECE: u32 = 1 << 20;
const IN_FLIGHT: usize = 64;

fn torrent(dir: &std::path::Path) -> (Arc<Metainfo>, Bytes) {
    let data: Vec<u8> = (0..SIZE).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect();
    let path = dir.join("payload.bin");
    std::fs::write(&path, &data).unwrap();
    let raw = create_torrent(&path, &CreateOptions { piece_length: Some(PIECE), ..Default::default() }).unwrap();
    (Arc::new(Metainfo::from_bytes(&raw).unwrap()), Bytes::from(data))
}

/// Feeds every block through assembly and storage; returns the pieces written.
async fn download(meta: Arc<Metainfo>, data: &Bytes, out: std::path::PathBuf) -> u32 {
    let storage = Storage::new(meta.clone(), out);
    let geometry = meta.geometry();
    let mut assembly = Assembly::new(BLOCK_SIZE, IN_FLIGHT * PieceBuf::footprint(PIECE as usize));
    let from = PeerAddr::Tcp(([127, 0, 0, 2], 6881).into());
    let mut writes = JoinSet::new();
    let mut written = 0;
    for piece in 0..geometry.piece_count() {
        let size = geometry.piece_size(piece).unwrap();
        for block in 0..geometry.blocks_in(piece) {
            let b = geometry.block(piece, block);
            let at = geometry.piece_offset(piece) as usize + b.begin as usize;
            assembly.add(piece, size, b.begin, &data.slice(at..at + b.length as usize), &from);
        }
        let done = assembly.take(piece).unwrap();
        if writes.len() >= IN_FLIGHT {
            written += u32::from(writes.join_next().await.unwrap().unwrap());
        }
        let storage = storage.clone();
        writes.spawn(async move { storage.write_piece(piece, done.data).await.unwrap() == PieceVerdict::Written });
    }
    while let Some(done) = writes.join_next().await {
        written += u32::from(done.unwrap());
    }
    written
}

fn datapath(c: &mut Criterion) {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let (meta, data) = torrent(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("datapath");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE as u64));
    let mut run = 0;
    group.bench_function("blocks_to_verified_pieces_64MiB", |b| {
        b.iter(|| {
            run += 1;
            let out = dir.path().join(format!("out{run}"));
            let written = rt.block_on(download(meta.clone(), &data, out.clone()));
            assert_eq!(written, meta.piece_count(), "every piece verified and written");
            std::fs::remove_dir_all(out).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, datapath);
criterion_main!(benches);
