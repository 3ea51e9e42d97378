//! A listening fake peer for BEP 9 (`ut_metadata`) attacks on a `shoal download` of a
//! magnet: it answers the handshake with the extension bit, sends an extension handshake
//! offering metadata, and then lies according to its [`MetaLie`] script. Every connection
//! runs in its own thread; what it saw is kept in a [`MetaLog`] the test can read. Threads
//! stop when the [`FakeMetadataPeer`] drops.
use super::{Closed, FakeListener, FakePeer, Recv, REACT};
use bytes::Bytes;
use shoal::metainfo::InfoHash;
use shoal::wire::extension::ExtHandshake;
use shoal::wire::metadata::{piece_range, MetadataMsg};
use shoal::wire::{Handshake, Message, PeerId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The id the fake asks to receive `ut_metadata` messages under.
pub const FAKE_UT_METADATA: u8 = 7;

/// What the fake does about metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaLie {
    /// Announces the real size and answers every request with the right length of wrong bytes.
    WrongBytes { size: u64 },
    /// Announces this `metadata_size` (over 16 MiB) and answers requests with junk.
    HugeSize(u64),
    /// Sends its extension handshake without `metadata_size`, then nothing.
    Silent,
}

/// What the fake saw, across its connections.
#[derive(Debug, Default, Clone)]
pub struct MetaLog {
    pub accepted: usize,
    /// `ut_metadata` requests received, one entry per connection that sent any.
    pub requests_per_connection: Vec<usize>,
    /// One entry per connection the other side closed.
    pub closes: Vec<Closed>,
}

pub struct FakeMetadataPeer {
    pub addr: std::net::SocketAddr,
    log: Arc<Mutex<MetaLog>>,
    stop: Arc<AtomicBool>,
}

impl FakeMetadataPeer {
    pub fn spawn(info_hash: InfoHash, lie: MetaLie) -> FakeMetadataPeer {
        let listener = FakeListener::bind();
        let addr = listener.addr;
        let log = Arc::new(Mutex::new(MetaLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (log.clone(), stop.clone());
        listener.serve_each(stop.clone(), move |peer| {
            l.lock().unwrap().accepted += 1;
            serve_one(peer, info_hash, lie, &l, &s)
        });
        FakeMetadataPeer { addr, log, stop }
    }

    pub fn log(&self) -> MetaLog {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the other side has closed a connection that asked for metadata; panics
    /// after `within`.
    pub fn wait_dropped_after_requests(&self, within: Duration) -> MetaLog {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if !log.requests_per_connection.is_empty() && !log.closes.is_empty() {
                return log;
            }
            assert!(Instant::now() < deadline, "the liar was not dropped within {within:?}: {log:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FakeMetadataPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(mut peer: FakePeer, info_hash: InfoHash, lie: MetaLie, log: &Mutex<MetaLog>, stop: &AtomicBool) {
    match peer.recv(REACT) {
        Recv::Handshake(hs) if hs.info_hash == info_hash => {}
        _ => return,
    }
    let size = match lie {
        MetaLie::WrongBytes { size } | MetaLie::HugeSize(size) => Some(size),
        MetaLie::Silent => None,
    };
    let mut ext = ExtHandshake { metadata_size: size, ..Default::default() };
    ext.m.insert("ut_metadata".into(), FAKE_UT_METADATA);
    let hello = [Message::Extended { id: 0, payload: ext.encode() }];
    if peer.send_handshake(Handshake::new(info_hash, PeerId::generate())).is_err() || peer.send_all(hello).is_err() {
        return;
    }
    let mut their_id = None;
    let mut requests = 0;
    while !stop.load(Ordering::Relaxed) {
        let reply = match peer.recv(Duration::from_millis(50)) {
            Recv::Msg(Message::Extended { id: 0, payload }) => {
                their_id = ExtHandshake::decode(&payload).and_then(|e| e.m.get("ut_metadata").copied());
                continue;
            }
            Recv::Msg(Message::Extended { id: FAKE_UT_METADATA, payload }) => match MetadataMsg::decode(&payload) {
                Ok(Some(MetadataMsg::Request { piece })) => {
                    requests += 1;
                    junk(lie, piece)
                }
                _ => continue,
            },
            Recv::Closed(c) => {
                let mut l = log.lock().unwrap();
                if requests > 0 {
                    l.requests_per_connection.push(requests);
                }
                l.closes.push(c);
                return;
            }
            Recv::Msg(_) | Recv::Timeout => continue,
            Recv::Handshake(_) | Recv::Garbage(_) => return,
        };
        if let (Some(id), Some(msg)) = (their_id, reply) {
            let _ = peer.send(Message::Extended { id, payload: msg.encode() });
        }
    }
}

/// The right length of wrong bytes for `piece` (none for a piece outside the size).
fn junk(lie: MetaLie, piece: u32) -> Option<MetadataMsg> {
    let (MetaLie::WrongBytes { size } | MetaLie::HugeSize(size)) = lie else { return None };
    let range = piece_range(size, piece)?;
    Some(MetadataMsg::Data { piece, total_size: size, data: Bytes::from(vec![0x5Au8; range.len()]) })
}
