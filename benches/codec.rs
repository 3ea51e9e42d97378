//! Peer wire codec throughput: decoding a stream of 16 KiB blocks (the bulk of a download),
//! decoding small control messages, and encoding blocks (the bulk of seeding).
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal::types::BLOCK_SIZE;
use shoal::wire::{Message, MessageCodec};
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

/// Blocks per decoded buffer: 256 × 16 KiB = 4 MiB.
const PIECES: u32 = 256;
/// Control messages per decoded buffer.
const SMALL: u32 = 4096;

fn pieces() -> Vec<Message> {
    let data = Bytes::from(vec![0xa5u8; BLOCK_SIZE as usize]);
    (0..PIECES).map(|i| Message::Piece { index: i / 16, begin: (i % 16) * BLOCK_SIZE, data: data.clone() }).collect()
}

fn small() -> Vec<Message> {
    (0..SMALL)
        .map(|i| {
            if i % 2 == 0 {
                Message::Have { index: i }
            } else {
                Message::Request { index: i, begin: 0, length: BLOCK_SIZE }
            }
        })
        .collect()
}

fn encode_all(msgs: &[Message]) -> Bytes {
    let mut codec = MessageCodec::default();
    let mut buf = BytesMut::new();
    for m in msgs {
        codec.encode(m.clone(), &mut buf).unwrap();
    }
    buf.freeze()
}

/// Decodes every message in `buf`; returns how many there were.
fn decode_all(mut buf: BytesMut) -> usize {
    let mut codec = MessageCodec::default();
    let mut n = 0;
    while let Some(m) = codec.decode(&mut buf).unwrap() {
        black_box(m);
        n += 1;
    }
    assert!(buf.is_empty());
    n
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    let stream = encode_all(&pieces());
    group.throughput(Throughput::Bytes(stream.len() as u64));
    // The copy into a fresh read buffer happens in setup, outside the measurement, as the
    // socket read would.
    group.bench_function("piece_16KiB_x256", |b| {
        b.iter_batched(|| BytesMut::from(&stream[..]), decode_all, BatchSize::LargeInput)
    });
    let stream = encode_all(&small());
    group.throughput(Throughput::Elements(SMALL as u64));
    group.bench_function("have_request_x4096", |b| {
        b.iter_batched(|| BytesMut::from(&stream[..]), decode_all, BatchSize::LargeInput)
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let msgs = pieces();
    let total: usize = msgs.iter().map(Message::wire_len).sum();
    group.throughput(Throughput::Bytes(total as u64));
    let mut codec = MessageCodec::default();
    let mut buf = BytesMut::with_capacity(total);
    group.bench_function("piece_16KiB_x256", |b| {
        b.iter(|| {
            buf.clear();
            for m in &msgs {
                codec.encode(m.clone(), &mut buf).unwrap();
            }
            black_box(buf.len())
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
