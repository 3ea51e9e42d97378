//! `MessageCodec` over arbitrary bytes: no panic, no unbounded reservation, the same
//! messages whether the bytes arrive whole or in two parts, and every decoded message
//! re-encodes to something that decodes back to itself.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal::wire::{Message, MessageCodec};
use tokio_util::codec::{Decoder, Encoder};

/// A small limit so the fuzzer reaches the "too long" path cheaply.
const MAX_LEN: u32 = 4096;

/// Decodes until the codec wants more bytes or fails. A pending frame may grow the buffer
/// by one bounded frame or by `BytesMut`'s doubling of its allocation (at most
/// `capacity + consumed` bytes, and `consumed <= input_len`), never by what the prefix says.
fn drain(codec: &mut MessageCodec, buf: &mut BytesMut, out: &mut Vec<Message>, input_len: usize) -> Result<(), ()> {
    let cap_before = buf.capacity();
    loop {
        match codec.decode(buf) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {
                let bound = (MAX_LEN as usize + 4).max(2 * (cap_before + input_len));
                assert!(buf.capacity() <= bound, "capacity {} > {bound}", buf.capacity());
                return Ok(());
            }
            Err(_) => return Err(()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize * data.len()) / 255;

    let mut whole = Vec::new();
    let whole_ok = drain(&mut MessageCodec::new(MAX_LEN), &mut BytesMut::from(data), &mut whole, data.len());

    let mut codec = MessageCodec::new(MAX_LEN);
    let mut buf = BytesMut::from(&data[..cut]);
    let mut parts = Vec::new();
    let mut parts_ok = drain(&mut codec, &mut buf, &mut parts, data.len());
    if parts_ok.is_ok() {
        buf.extend_from_slice(&data[cut..]);
        parts_ok = drain(&mut codec, &mut buf, &mut parts, data.len());
    }
    assert_eq!(whole_ok, parts_ok);
    assert_eq!(whole, parts);

    for m in whole {
        let mut buf = BytesMut::new();
        MessageCodec::new(MAX_LEN).encode(m.clone(), &mut buf).unwrap();
        assert_eq!(buf.len(), m.wire_len());
        assert_eq!(MessageCodec::new(MAX_LEN).decode(&mut buf).unwrap(), Some(m));
        assert!(buf.is_empty());
    }
});
