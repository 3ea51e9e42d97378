//! SHA-1 throughput, the cost of verifying every downloaded piece.
//!
//! Compare with `openssl speed -bytes 1048576 -seconds 2 sha1` (see `benches/README.md`).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha1::{Digest, Sha1};
use std::hint::black_box;

fn sha1_digest(c: &mut Criterion) {
    let mut group = c.benchmark_group("sha1");
    for (name, len) in [("16KiB", 16 * 1024), ("1MiB", 1024 * 1024)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("digest", name), &data, |b, data| {
            b.iter(|| Sha1::digest(black_box(data)))
        });
    }
    group.finish();
}

criterion_group!(benches, sha1_digest);
criterion_main!(benches);
