//! `TlsStream`, shoal's TLS 1.3 record layer, reading what a hostile peer sends after the
//! handshake, then writing.
//!
//! The input is a script: records the peer seals properly (application data of any length,
//! KeyUpdates, tickets, alerts, handshake bytes, records of any inner type), records tampered
//! with after sealing, and raw bytes, delivered in reads of varying size. The target keeps a
//! model of what the stream must do with the well-formed part of the script and asserts:
//! - the plaintext read is exactly the application data of the well-formed records, in order,
//!   up to the first record the model cannot predict, and a prefix of what follows;
//! - a whole well-formed script ends as the model says: close_notify as the end of the stream,
//!   a cut-off script as `UnexpectedEof`, an oversized record, more than 32 KeyUpdates in a
//!   row, another alert or a malformed message as an error;
//! - afterwards, what the stream writes is records of type 23 that open under our keys, carry
//!   the plaintext written, and begin with one KeyUpdate if and only if the peer asked for one.
//!
//! Nothing waits: the socket is in memory and always ready, so a read loop that does not end
//! by itself is a hang libFuzzer reports.
#![no_main]
use futures::executor::block_on;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libfuzzer_sys::fuzz_target;
use rustls::crypto::cipher::{AeadKey, InboundOpaqueMessage, Iv, OutboundPlainMessage};
use rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384;
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion, SupportedCipherSuite, Tls13CipherSuite};
use shoal::p2p::tls::{Handover, Rekey, TlsStream, KEY_UPDATES_IN_A_ROW, RECEIVE_BUFFER};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The largest plaintext a record may carry (RFC 8446 §5.4). A longer one is an error: past
/// 2^14 + 256 bytes of ciphertext from its header, up to that when opened.
const MAX_ACCEPTED_PLAINTEXT: usize = 16 * 1024;

fn suite() -> &'static Tls13CipherSuite {
    match TLS13_AES_256_GCM_SHA384 {
        SupportedCipherSuite::Tls13(s) => s,
        _ => unreachable!("a TLS 1.3 suite"),
    }
}

/// The traffic secret of one direction after `generation` key updates.
fn secret(direction: u8, generation: u8) -> ConnectionTrafficSecrets {
    let byte = direction.wrapping_mul(64).wrapping_add(generation);
    ConnectionTrafficSecrets::Aes256Gcm { key: AeadKey::from([byte; 32]), iv: Iv::new([byte ^ 0x5a; 12]) }
}

const PEER_TO_US: u8 = 1;
const US_TO_PEER: u8 = 2;

/// Key updates follow the same schedule on both sides of the harness.
struct Schedule {
    rx: u8,
    tx: u8,
}

impl Rekey for Schedule {
    fn next_rx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error> {
        self.rx = self.rx.wrapping_add(1);
        Ok(secret(PEER_TO_US, self.rx))
    }

    fn next_tx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error> {
        self.tx = self.tx.wrapping_add(1);
        Ok(secret(US_TO_PEER, self.tx))
    }
}

/// The far end of the socket: the script's bytes in reads of the given sizes, and what the
/// stream writes.
struct Socket {
    input: Vec<u8>,
    at: usize,
    reads: Vec<usize>,
    next_read: usize,
    written: Rc<RefCell<Vec<u8>>>,
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let size = this.reads[this.next_read % this.reads.len()];
        this.next_read += 1;
        let n = size.min(buf.len()).min(this.input.len() - this.at);
        buf[..n].copy_from_slice(&this.input[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.written.borrow_mut().extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads the fuzzer's bytes as a script.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> usize {
        u16::from_be_bytes([self.byte(), self.byte()]) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let len = len.min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken.to_vec()
    }

    /// `len` bytes of a pattern (cheap for the fuzzer to ask for large records).
    fn filler(&mut self, len: usize) -> Vec<u8> {
        let seed = self.byte();
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }
}

/// How the stream ends, as the model predicts it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// close_notify: `Ok(0)`.
    Closed,
    /// The socket ended without close_notify.
    CutOff,
    /// An error of this kind.
    Error(io::ErrorKind),
}

/// The peer: seals records under its key schedule and models what our stream makes of them.
struct Peer {
    seal: Box<dyn rustls::crypto::cipher::MessageEncrypter>,
    seq: u64,
    generation: u8,
    wire: Vec<u8>,
    /// The plaintext our stream must hand over while the model holds.
    expected: Vec<u8>,
    /// Bytes of application data sealed after the model stopped holding (a read may go on
    /// into them).
    after: usize,
    /// `Some` once the model knows how the stream ends; then nothing more matters.
    end: Option<End>,
    /// The model no longer predicts: a record it cannot judge came first.
    lost: bool,
    key_updates_in_a_row: u8,
    owe_key_update: bool,
}

impl Peer {
    fn new() -> Peer {
        let (key, iv) = keys(secret(PEER_TO_US, 0));
        Peer {
            seal: suite().aead_alg.encrypter(key, iv),
            seq: 0,
            generation: 0,
            wire: Vec::new(),
            expected: Vec::new(),
            after: 0,
            end: None,
            lost: false,
            key_updates_in_a_row: 0,
            owe_key_update: false,
        }
    }

    fn judged(&self) -> bool {
        !self.lost && self.end.is_none()
    }

    fn sealed(&mut self, typ: ContentType, payload: &[u8]) -> Vec<u8> {
        let message = OutboundPlainMessage { typ, version: ProtocolVersion::TLSv1_2, payload: payload.into() };
        let record = self.seal.encrypt(message, self.seq).expect("sealing").encode();
        self.seq += 1;
        record
    }

    fn next_key(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        let (key, iv) = keys(secret(PEER_TO_US, self.generation));
        self.seal = suite().aead_alg.encrypter(key, iv);
        self.seq = 0;
    }

    fn data(&mut self, payload: &[u8]) {
        let record = self.sealed(ContentType::ApplicationData, payload);
        self.wire.extend_from_slice(&record);
        if !self.judged() {
            self.after += payload.len();
        } else if payload.len() > MAX_ACCEPTED_PLAINTEXT {
            self.end = Some(End::Error(io::ErrorKind::InvalidData));
        } else {
            self.key_updates_in_a_row = 0;
            self.expected.extend_from_slice(payload);
        }
    }

    fn key_update(&mut self, requested: bool) {
        let record = self.sealed(ContentType::Handshake, &[24, 0, 0, 1, requested as u8]);
        self.wire.extend_from_slice(&record);
        // The record is sealed under the old key; whatever follows under the new one.
        self.next_key();
        if self.judged() {
            self.key_updates_in_a_row += 1;
            if self.key_updates_in_a_row > KEY_UPDATES_IN_A_ROW {
                self.end = Some(End::Error(io::ErrorKind::InvalidData));
            } else {
                self.owe_key_update |= requested;
            }
        }
    }

    fn ticket(&mut self, body: &[u8]) {
        let mut message = vec![4, 0, (body.len() >> 8) as u8, body.len() as u8];
        message.extend_from_slice(body);
        let record = self.sealed(ContentType::Handshake, &message);
        self.wire.extend_from_slice(&record);
        if self.judged() && message.len() > MAX_ACCEPTED_PLAINTEXT {
            self.end = Some(End::Error(io::ErrorKind::InvalidData));
        }
    }

    fn alert(&mut self, alert: &[u8]) {
        let record = self.sealed(ContentType::Alert, alert);
        self.wire.extend_from_slice(&record);
        if self.judged() {
            self.end = match alert {
                [_, 0] => Some(End::Closed),
                [_, 90] => None,
                [_, _] => Some(End::Error(io::ErrorKind::ConnectionAborted)),
                _ => Some(End::Error(io::ErrorKind::InvalidData)),
            };
        }
    }

    /// A record the model does not judge (any inner type, any handshake bytes, tampered, raw),
    /// carrying at most `data` bytes of application data.
    fn unjudged(&mut self, bytes: &[u8], data: usize) {
        self.wire.extend_from_slice(bytes);
        self.after += data;
        self.lost |= self.end.is_none();
    }
}

fn keys(secrets: ConnectionTrafficSecrets) -> (AeadKey, Iv) {
    match secrets {
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (key, iv),
        _ => unreachable!("the harness uses AES-256-GCM"),
    }
}

/// Opens what our stream wrote: the application data and how many KeyUpdates came first.
fn open_written(mut wire: &[u8]) -> (Vec<u8>, usize) {
    let (mut generation, mut seq, mut data, mut updates) = (0u8, 0u64, Vec::new(), 0);
    let (key, iv) = keys(secret(US_TO_PEER, 0));
    let mut open = suite().aead_alg.decrypter(key, iv);
    while !wire.is_empty() {
        assert!(wire.len() >= 5, "a record header cut short");
        assert_eq!(wire[0], 23, "only application data records go out");
        let len = u16::from_be_bytes([wire[3], wire[4]]) as usize;
        assert!(len <= 16 * 1024 + 256, "a record longer than TLS allows");
        let mut body = wire[5..5 + len].to_vec();
        wire = &wire[5 + len..];
        let record = InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut body);
        let plain = open.decrypt(record, seq).expect("our records open under our keys");
        seq += 1;
        match plain.typ {
            ContentType::ApplicationData => data.extend_from_slice(plain.payload),
            ContentType::Handshake => {
                assert_eq!(plain.payload, &[24, 0, 0, 1, 0], "a KeyUpdate that asks for none back");
                assert!(data.is_empty(), "the KeyUpdate we owe goes out before the data");
                updates += 1;
                generation = generation.wrapping_add(1);
                let (key, iv) = keys(secret(US_TO_PEER, generation));
                open = suite().aead_alg.decrypter(key, iv);
                seq = 0;
            }
            other => panic!("an unexpected {other:?} record from us"),
        }
    }
    (data, updates)
}

fuzz_target!(|input: &[u8]| {
    let mut script = Script(input);
    let reads: Vec<usize> = (0..4).map(|_| 1 + script.u16() % 20_000).collect();
    let read_size = 1 + script.u16() % 20_000;
    let early_len = script.byte() as usize % 64;
    let early = script.bytes(early_len);

    let mut peer = Peer::new();
    peer.expected.extend_from_slice(&early);
    for _ in 0..64 {
        if script.0.is_empty() {
            break;
        }
        match script.byte() % 10 {
            0 | 1 => {
                let len = script.u16() % 20_000;
                let payload = script.filler(len);
                peer.data(&payload);
            }
            2 => {
                let len = script.byte() as usize;
                let payload = script.bytes(len);
                peer.data(&payload);
            }
            3 => {
                let requested = script.byte() & 1 == 1;
                peer.key_update(requested);
            }
            4 => {
                let count = script.byte() % 40;
                for _ in 0..count {
                    peer.key_update(false);
                }
            }
            5 => {
                let len = script.u16() % 20_000;
                let body = script.filler(len);
                peer.ticket(&body);
            }
            6 => {
                let len = script.byte() as usize % 4;
                let alert = script.bytes(len);
                peer.alert(&alert);
            }
            7 => {
                let typ = ContentType::from(script.byte());
                let len = script.byte() as usize;
                let payload = script.bytes(len);
                let record = peer.sealed(typ, &payload);
                // Of any type: with type 0 the payload's last non-zero byte becomes the type
                // (the rest is taken for padding), so it may be application data too.
                peer.unjudged(&record, payload.len());
            }
            8 => {
                let len = script.byte() as usize;
                let payload = script.bytes(len);
                let mut record = peer.sealed(ContentType::ApplicationData, &payload);
                let at = script.u16() % record.len();
                record[at] ^= 1 | script.byte();
                // Still opens if only the header's legacy version changed (ignored, §5.1).
                peer.unjudged(&record, payload.len());
            }
            _ => {
                let len = script.byte() as usize;
                let raw = script.bytes(len);
                peer.unjudged(&raw, 0);
            }
        }
    }
    if peer.judged() {
        peer.end = Some(End::CutOff);
    }

    let written = Rc::new(RefCell::new(Vec::new()));
    let socket = Socket { input: std::mem::take(&mut peer.wire), at: 0, reads, next_read: 0, written: written.clone() };
    let handover = Handover {
        suite: suite(),
        rekey: Box::new(Schedule { rx: 0, tx: 0 }),
        tx: (0, secret(US_TO_PEER, 0)),
        rx: (0, secret(PEER_TO_US, 0)),
        incoming: vec![0; RECEIVE_BUFFER],
        filled: 0,
        early,
    };
    let mut stream = TlsStream::new(socket, handover).expect("AES-256-GCM secrets");

    let mut read = Vec::new();
    let mut buf = vec![0; read_size];
    let end = block_on(async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break End::Closed,
                Ok(n) => read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break End::CutOff,
                Err(e) => break End::Error(e.kind()),
            }
        }
    });

    let known = peer.expected.len();
    if peer.lost {
        // Past the first record the model does not judge, the stream may deliver what
        // application data follows, or stop.
        assert!(read.len() >= known, "{} bytes read, {known} were sure to arrive", read.len());
        assert!(read.len() <= known + peer.after, "more plaintext read than was sealed");
        assert!(read[..known] == peer.expected[..], "the plaintext read differs from what was sent");
    } else {
        assert!(read == peer.expected, "read {} bytes, expected {known}", read.len());
        assert_eq!(Some(end), peer.end, "the stream ended otherwise than the model says");
    }

    // Writing goes on whatever reading met; a KeyUpdate the peer asked for goes out first,
    // once, however many asked.
    let payload: Vec<u8> = (0..script.u16() * 2).map(|i| i as u8).collect();
    block_on(async {
        stream.write_all(&payload).await.expect("writing to a socket that takes everything");
        stream.flush().await.expect("flushing");
    });
    let (data, updates) = open_written(&written.borrow());
    assert!(data == payload, "the plaintext written differs from what reached the socket");
    if !peer.lost && !payload.is_empty() {
        assert_eq!(updates, peer.owe_key_update as usize, "KeyUpdates sent before the data");
    }
});
