//! The hostile-peer test kit: a scriptable fake BitTorrent peer on loopback.
//!
//! [`FakePeer`] is one synchronous TCP connection that can send any bytes (well-formed
//! messages through the crate's own codec, or raw bytes, malformed on purpose), read what the
//! other side sends with a deadline, stop reading altogether, and tell whether and when the
//! other side closed (EOF or RST). It can dial from another loopback address (127.0.0.2) and
//! with a small receive buffer set before connecting, so that it stops taking data early.
//! [`FakeListener`] accepts connections for it; [`seeder::FakeSeeder`] is a listening fake
//! seeder a `shoal download` dials, answering requests with wrong data, unrequested blocks,
//! blocks out of range or nothing; [`metadata::FakeMetadataPeer`] lies about BEP 9 metadata;
//! [`flood`] holds many connections open at once; [`dht::EndlessDht`] is a mainline DHT in
//! which lookups do not end; [`scene`]
//! starts the real `shoal` processes the kit is aimed at.
//!
//! A test file uses it with `mod common; mod hostile;`: processes, data, torrents and wire
//! encoding come from `crate::common`. Every wait here has a deadline; nothing blocks a test
//! for ever.
#![allow(dead_code)]
pub mod dht;
pub mod flood;
pub mod metadata;
pub mod scene;
pub mod seeder;

use crate::common::wire;
use bytes::{BufMut, Bytes, BytesMut};
use shoal::metainfo::InfoHash;
use shoal::wire::{Handshake, HandshakeCodec, Message, MessageCodec, PeerId};
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// A generous bound for "the other side reacts": not a timing assertion, a hang detector.
pub const REACT: Duration = Duration::from_secs(20);
/// Bytes written per `write` call; between chunks whatever arrived is drained (see
/// [`FakePeer::send_raw`]).
const CHUNK: usize = 64 * 1024;

/// How a connection is made.
#[derive(Debug, Clone, Default)]
pub struct Dial {
    /// Local address to bind before connecting (any of 127.0.0.0/8 works on Linux).
    pub local_ip: Option<IpAddr>,
    /// `SO_RCVBUF` set before connecting, so the advertised window stays small.
    pub recv_buffer: Option<usize>,
}

impl Dial {
    pub fn from_ip(ip: &str) -> Dial {
        Dial { local_ip: Some(ip.parse().expect("an IP address")), ..Dial::default() }
    }
}

/// How the other side ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// An orderly FIN: `read` returned 0.
    Eof,
    /// RST: the other side closed with our data unread (ECONNRESET).
    Reset,
    /// A write failed (EPIPE, ECONNRESET): the other side is gone.
    WriteFailed,
}

#[derive(Debug, Clone, Copy)]
pub struct Closed {
    pub kind: CloseKind,
    /// When this side noticed.
    pub at: Instant,
}

/// One thing read from the connection.
#[derive(Debug)]
pub enum Recv {
    Handshake(Handshake),
    Msg(Message),
    Closed(Closed),
    /// Nothing complete within the deadline.
    Timeout,
    /// The bytes were not a handshake or a message our codec accepts.
    Garbage(String),
}

/// One connection to or from a peer under test.
pub struct FakePeer {
    stream: TcpStream,
    buf: BytesMut,
    codec: MessageCodec,
    /// The next thing to decode is the 68-byte handshake.
    want_handshake: bool,
    reading: bool,
    pub closed: Option<Closed>,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// Messages decoded so far (every `Msg` that `recv` returned).
    pub seen: Vec<Message>,
    /// The other side's choke state towards us, as last seen.
    pub choked: bool,
}

impl FakePeer {
    /// Connects to `target` (bounded by [`REACT`]).
    pub fn connect(target: SocketAddr, dial: &Dial) -> std::io::Result<FakePeer> {
        let sock = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        if let Some(n) = dial.recv_buffer {
            sock.set_recv_buffer_size(n)?;
        }
        if let Some(ip) = dial.local_ip {
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        sock.connect_timeout(&target.into(), REACT)?;
        Self::from_stream(sock.into())
    }

    /// Wraps an accepted connection.
    pub fn from_stream(stream: TcpStream) -> std::io::Result<FakePeer> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(REACT))?;
        Ok(FakePeer {
            remote: stream.peer_addr()?,
            local: stream.local_addr()?,
            stream,
            buf: BytesMut::new(),
            codec: MessageCodec::default(),
            want_handshake: true,
            reading: true,
            closed: None,
            seen: Vec::new(),
            choked: true,
        })
    }

    /// From now on nothing is read from the socket, not even while sending: the other side's
    /// data piles up in our (small, with [`Dial::recv_buffer`]) receive window.
    pub fn stop_reading(&mut self) {
        self.reading = false;
    }

    /// The kernel's receive buffer size (Linux reports twice what was asked for).
    pub fn recv_buffer(&self) -> usize {
        socket2::SockRef::from(&self.stream).recv_buffer_size().unwrap_or(0)
    }

    /// Writes `bytes` as they are. Bounded: a write that cannot progress for [`REACT`] fails.
    /// While reading is on, whatever the other side sent meanwhile is drained into our buffer
    /// between chunks, so a long storm cannot deadlock on full buffers in both directions.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for chunk in bytes.chunks(CHUNK) {
            if let Err(e) = self.stream.write_all(chunk) {
                self.note_closed(CloseKind::WriteFailed);
                return Err(e);
            }
            if self.reading {
                self.drain_ready();
            }
        }
        Ok(())
    }

    pub fn send(&mut self, msg: Message) -> std::io::Result<()> {
        self.send_all([msg])
    }

    /// Encodes every message into one buffer and sends it (storms go out as fast as the
    /// socket takes them).
    pub fn send_all(&mut self, msgs: impl IntoIterator<Item = Message>) -> std::io::Result<()> {
        self.send_raw(&wire::encode(msgs))
    }

    pub fn send_handshake(&mut self, hs: Handshake) -> std::io::Result<()> {
        self.send_raw(&wire::encode_handshake(hs))
    }

    /// The usual opening of a peer that dials: our handshake, then theirs (panics if it does
    /// not come within [`REACT`]).
    pub fn handshake(&mut self, info_hash: InfoHash) -> Handshake {
        self.send_handshake(Handshake { reserved: [0; 8], info_hash, peer_id: PeerId::generate() })
            .expect("send the handshake");
        self.expect_handshake(REACT)
    }

    /// Reads without blocking whatever is already there (buffered, not decoded).
    pub fn drain_ready(&mut self) {
        if self.closed.is_some() || self.stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut tmp = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.note_closed(CloseKind::Eof);
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.note_closed(CloseKind::Reset);
                    break;
                }
            }
        }
        let _ = self.stream.set_nonblocking(false);
    }

    fn note_closed(&mut self, kind: CloseKind) {
        if self.closed.is_none() {
            self.closed = Some(Closed { kind, at: Instant::now() });
        }
    }

    /// Decodes the next thing buffered. Bytes that do not decode are reported once and
    /// thrown away, so reading can go on (to see the close that should follow).
    fn decode(&mut self) -> Option<Recv> {
        let r = self.decode_next();
        if let Some(Recv::Garbage(_)) = r {
            self.buf.clear();
            self.want_handshake = false;
        }
        r
    }

    fn decode_next(&mut self) -> Option<Recv> {
        if self.want_handshake {
            return match HandshakeCodec.decode(&mut self.buf) {
                Ok(Some(hs)) => {
                    self.want_handshake = false;
                    Some(Recv::Handshake(hs))
                }
                Ok(None) => None,
                Err(e) => Some(Recv::Garbage(format!("handshake: {e}"))),
            };
        }
        match self.codec.decode(&mut self.buf) {
            Ok(Some(m)) => {
                match m {
                    Message::Choke => self.choked = true,
                    Message::Unchoke => self.choked = false,
                    _ => {}
                }
                self.seen.push(m.clone());
                Some(Recv::Msg(m))
            }
            Ok(None) => None,
            Err(e) => Some(Recv::Garbage(format!("message: {e}"))),
        }
    }

    /// The next handshake or message, the close, or `Timeout` after `within`.
    pub fn recv(&mut self, within: Duration) -> Recv {
        let deadline = Instant::now() + within;
        let mut tmp = [0u8; 64 * 1024];
        loop {
            if let Some(r) = self.decode() {
                return r;
            }
            if let Some(c) = self.closed {
                return Recv::Closed(c);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Recv::Timeout;
            }
            // A zero read timeout means "block for ever": never pass one.
            let _ = self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.stream.read(&mut tmp) {
                Ok(0) => self.note_closed(CloseKind::Eof),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => self.note_closed(CloseKind::Reset),
            }
        }
    }

    pub fn expect_handshake(&mut self, within: Duration) -> Handshake {
        match self.recv(within) {
            Recv::Handshake(hs) => hs,
            other => panic!("{}: expected a handshake within {within:?}, got {other:?}", self.remote),
        }
    }

    /// Reads until a message for which `pred` holds; panics on close, garbage or timeout.
    pub fn wait_msg(&mut self, within: Duration, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + within;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(m) if pred(&m) => return m,
                Recv::Msg(_) | Recv::Handshake(_) => {}
                other => panic!("{}: waiting for {what} within {within:?}: {other:?}", self.remote),
            }
        }
    }

    /// Waits until we are unchoked (at once if we already are).
    pub fn wait_unchoke(&mut self, within: Duration) {
        if !self.choked {
            return;
        }
        self.wait_msg(within, "unchoke", |m| *m == Message::Unchoke);
    }

    /// Reads and discards until the other side closes; panics if it is still open after
    /// `within`. Returns how it closed and when.
    pub fn expect_closed(&mut self, within: Duration) -> Closed {
        let deadline = Instant::now() + within;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Closed(c) => return c,
                Recv::Timeout => panic!("{}: still open {within:?} after the offence", self.remote),
                _ => {}
            }
        }
    }

    /// Decodes whatever arrives until nothing has come for `quiet` (at most [`REACT`] in
    /// all), so that state such as [`FakePeer::choked`] is up to date; false if it closed.
    pub fn settle(&mut self, quiet: Duration) -> bool {
        let deadline = Instant::now() + REACT;
        while Instant::now() < deadline {
            match self.recv(quiet) {
                Recv::Timeout => return true,
                Recv::Closed(_) => return false,
                _ => {}
            }
        }
        self.closed.is_none()
    }

    /// Asks for one block and returns its payload; panics unless it comes within `within`.
    /// A choke on the way (the other side's choker may move us) means waiting for the next
    /// unchoke and asking again, as a real peer would.
    pub fn fetch_block(&mut self, index: u32, begin: u32, length: u32, within: Duration) -> Bytes {
        let deadline = Instant::now() + within;
        let mut asked = false;
        loop {
            if !self.choked && !asked {
                self.send(Message::Request { index, begin, length }).expect("send a request");
                asked = true;
            }
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Recv::Msg(Message::Piece { index: i, begin: b, data }) if i == index && b == begin => return data,
                Recv::Msg(Message::Choke) => asked = false,
                Recv::Msg(_) => {}
                other => panic!("{}: waiting {within:?} for block {index}:{begin}+{length}: {other:?}", self.remote),
            }
        }
    }
}

/// A listening socket on loopback for fake peers that are dialled.
pub struct FakeListener {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl FakeListener {
    pub fn bind() -> FakeListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        FakeListener { listener, addr }
    }

    /// The next connection, or `None` after `within`.
    pub fn accept(&self, within: Duration) -> Option<FakePeer> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).ok()?;
                    return FakePeer::from_stream(s).ok();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        None
    }

    /// Serves each connection on a thread of its own with `serve`, until `stop` is set.
    pub fn serve_each(self, stop: Arc<AtomicBool>, serve: impl Fn(FakePeer) + Clone + Send + 'static) {
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(peer) = self.accept(Duration::from_millis(200)) {
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(peer));
                }
            }
        });
    }
}

/// Raw frames, for bytes the codec would never produce.
pub mod raw {
    use super::*;

    /// `<len><id><payload>` with the honest length.
    pub fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.put_u32(1 + payload.len() as u32);
        out.put_u8(id);
        out.put_slice(payload);
        out
    }

    /// A length prefix on its own (what follows is up to the caller).
    pub fn prefix(len: u32) -> Vec<u8> {
        len.to_be_bytes().to_vec()
    }
}

/// A random info-hash (no torrent has it).
pub fn random_info_hash() -> InfoHash {
    InfoHash(rand::random())
}
