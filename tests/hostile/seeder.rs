//! A listening fake seeder that a real `shoal download` dials (`--peer 127.0.0.1:PORT`).
//!
//! It answers the handshake for one torrent, claims every piece, unchokes whoever is
//! interested, and then serves according to its [`Serve`] script. Each connection runs in
//! its own thread; everything it saw is kept in a [`SeederLog`] the test can read, including
//! when the downloader closed each connection. Threads stop when the [`FakeSeeder`] drops.
use super::{Closed, FakeListener, FakePeer, Recv, REACT};
use crate::common::wire::full_bitfield;
use shoal::metainfo::{InfoHash, Metainfo};
use shoal::wire::{Handshake, Message, PeerId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake seeder does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Unchokes, then never answers a request.
    Nothing,
    /// Answers every request with the right length of wrong bytes.
    WrongData,
    /// Claims no piece; sends garbage blocks nobody asked for, for every block of every piece
    /// in turn (a liar trying to poison pieces others are filling).
    Unrequested,
    /// Answers the first request with a block of piece index `piece_count` (out of range).
    PieceOutOfRange,
    /// Answers the first request with a 160 KiB block (over the 128 KiB bound).
    OversizedPiece,
}

/// The torrent facts the fake needs.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub info_hash: InfoHash,
    pub piece_count: u32,
    pub piece_length: u32,
    pub total_length: u64,
}

impl Geometry {
    pub fn of(meta: &Metainfo) -> Geometry {
        Geometry {
            info_hash: meta.info_hash,
            piece_count: meta.piece_count(),
            piece_length: meta.piece_length,
            total_length: meta.total_length,
        }
    }

    pub fn piece_size(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length as u64;
        (self.total_length - start).min(self.piece_length as u64) as u32
    }
}

/// What the fake seeder saw, across its connections.
#[derive(Debug, Default, Clone)]
pub struct SeederLog {
    pub accepted: usize,
    pub handshakes: usize,
    pub requests: usize,
    pub blocks_sent: usize,
    /// One entry per connection the downloader closed.
    pub closes: Vec<Closed>,
}

pub struct FakeSeeder {
    pub addr: std::net::SocketAddr,
    log: Arc<Mutex<SeederLog>>,
    stop: Arc<AtomicBool>,
}

impl FakeSeeder {
    pub fn spawn(geo: Geometry, serve: Serve) -> FakeSeeder {
        let listener = FakeListener::bind();
        let addr = listener.addr;
        let log = Arc::new(Mutex::new(SeederLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        listener.serve_each(stop.clone(), move |peer| {
            l.lock().unwrap().accepted += 1;
            serve_one(peer, geo, serve, &l, &s)
        });
        FakeSeeder { addr, log, stop }
    }

    pub fn log(&self) -> SeederLog {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the downloader has closed at least one connection; panics after `within`.
    pub fn wait_dropped(&self, within: Duration) -> SeederLog {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if !log.closes.is_empty() {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the downloader did not drop the fake seeder within {within:?}: {log:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FakeSeeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(mut peer: FakePeer, geo: Geometry, serve: Serve, log: &Mutex<SeederLog>, stop: &AtomicBool) {
    let theirs = match peer.recv(REACT) {
        Recv::Handshake(hs) => hs,
        _ => return,
    };
    if theirs.info_hash != geo.info_hash {
        return;
    }
    log.lock().unwrap().handshakes += 1;
    let hs = Handshake { reserved: [0; 8], info_hash: geo.info_hash, peer_id: PeerId::generate() };
    if peer.send_handshake(hs).is_err() {
        return;
    }
    // The `Unrequested` liar claims no piece, so it is never asked and every block it sends
    // is unrequested (were it asked, its junk would be an answer, not an injection).
    if serve != Serve::Unrequested && peer.send(Message::Bitfield(full_bitfield(geo.piece_count))).is_err() {
        return;
    }
    let mut script =
        Script { geo, serve, next_unrequested: 0, answered: false, unchoked: false, asked: Default::default() };
    while !stop.load(Ordering::Relaxed) {
        let outcome = match peer.recv(Duration::from_millis(20)) {
            Recv::Msg(m) => script.on_message(m, log),
            Recv::Timeout => script.on_idle(),
            Recv::Closed(c) => {
                log.lock().unwrap().closes.push(c);
                return;
            }
            Recv::Handshake(_) | Recv::Garbage(_) => return,
        };
        let blocks = outcome.iter().filter(|m| matches!(m, Message::Piece { .. })).count();
        if peer.send_all(outcome).is_err() {
            log.lock().unwrap().closes.push(peer.closed.expect("a failed send notes the close"));
            return;
        }
        log.lock().unwrap().blocks_sent += blocks;
    }
}

struct Script {
    geo: Geometry,
    serve: Serve,
    next_unrequested: u64,
    answered: bool,
    unchoked: bool,
    /// Blocks the downloader asked of us: the `Unrequested` liar skips these, so every block
    /// it sends is one nobody asked it for.
    asked: std::collections::HashSet<(u32, u32)>,
}

const BLOCK: u32 = 16 * 1024;
/// Unasked-for blocks the liar sends each time it gets a turn (about every 20 ms).
const UNREQUESTED_BURST: usize = 8;

impl Script {
    fn on_message(&mut self, m: Message, log: &Mutex<SeederLog>) -> Vec<Message> {
        match m {
            Message::Interested if !self.unchoked => {
                self.unchoked = true;
                vec![Message::Unchoke]
            }
            Message::Request { index, begin, length } => {
                log.lock().unwrap().requests += 1;
                self.asked.insert((index, begin));
                self.answer(index, begin, length).into_iter().chain(self.on_idle()).collect()
            }
            _ => self.on_idle(),
        }
    }

    fn answer(&mut self, index: u32, begin: u32, length: u32) -> Option<Message> {
        let junk = |len: usize| vec![0xA5u8; len].into();
        match self.serve {
            Serve::Nothing | Serve::Unrequested => None,
            Serve::WrongData => Some(Message::Piece { index, begin, data: junk(length as usize) }),
            Serve::PieceOutOfRange | Serve::OversizedPiece if self.answered => None,
            Serve::PieceOutOfRange => {
                self.answered = true;
                Some(Message::Piece { index: self.geo.piece_count, begin, data: junk(length as usize) })
            }
            Serve::OversizedPiece => {
                self.answered = true;
                Some(Message::Piece { index, begin: 0, data: junk(160 * 1024) })
            }
        }
    }

    /// Between messages the `Unrequested` liar pushes its next few unasked-for garbage blocks.
    fn on_idle(&mut self) -> Vec<Message> {
        if self.serve != Serve::Unrequested {
            return Vec::new();
        }
        (0..UNREQUESTED_BURST).filter_map(|_| self.next_garbage()).collect()
    }

    fn next_garbage(&mut self) -> Option<Message> {
        let per_piece = self.geo.piece_length.div_ceil(BLOCK) as u64;
        let n = self.next_unrequested % (per_piece * self.geo.piece_count as u64);
        self.next_unrequested += 1;
        let (index, begin) = ((n / per_piece) as u32, (n % per_piece) as u32 * BLOCK);
        let size = self.geo.piece_size(index);
        if begin >= size {
            return None;
        }
        if self.asked.contains(&(index, begin)) {
            return None;
        }
        let len = BLOCK.min(size - begin) as usize;
        Some(Message::Piece { index, begin, data: vec![0x5Au8; len].into() })
    }
}
