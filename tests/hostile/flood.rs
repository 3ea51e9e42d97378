//! Many connections held open at once from one loopback address, by a background thread:
//! silent ones, ones that trickle a handshake a byte a second, or ones that handshake
//! correctly and then send nothing but keep-alives. Connections the target closes can be
//! replaced (an attacker reconnects), at a bounded rate so the flood itself cannot spin.
use super::{Dial, FakePeer, Recv};
use crate::common::wire::handshake_bytes;
use shoal::metainfo::InfoHash;
use shoal::wire::{Message, PeerId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub enum FloodMode {
    /// Connect and send nothing.
    Silent,
    /// Send a (valid-looking) handshake one byte a second.
    Trickle,
    /// Handshake for this torrent, then a keep-alive every few seconds and nothing else.
    KeepAlive(InfoHash),
}

#[derive(Debug, Clone, Default)]
pub struct FloodStats {
    pub connects: usize,
    pub connect_errors: usize,
    /// Connections that got the target's handshake back.
    pub handshaken: usize,
    /// Connections the target closed.
    pub closed_by_target: usize,
    /// Connections that got the handshake back or were closed before it: the target has
    /// decided about them.
    pub settled: usize,
    pub open: usize,
}

pub struct Flood {
    stats: Arc<Mutex<FloodStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const TICK: Duration = Duration::from_millis(250);
/// New connections per tick once the first wave is out (400 a second).
const RECONNECTS_PER_TICK: usize = 100;
const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

struct Conn {
    peer: FakePeer,
    handshake: Vec<u8>,
    sent: usize,
    last_send: Instant,
    handshaken: bool,
}

impl Flood {
    /// Opens `count` connections to `target` from `dial` and keeps them as `mode` says until
    /// dropped; with `reconnect`, a connection the target closes is opened again.
    pub fn start(target: SocketAddr, dial: Dial, count: usize, mode: FloodMode, reconnect: bool) -> Flood {
        let stats = Arc::new(Mutex::new(FloodStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Option<Conn>> = (0..count).map(|_| None).collect();
            let mut first_wave = true;
            let mut ever = vec![false; count];
            while !sp.load(Ordering::Relaxed) {
                let mut budget = if first_wave { count } else { RECONNECTS_PER_TICK };
                for (i, slot) in conns.iter_mut().enumerate() {
                    if slot.is_none() && budget > 0 && (reconnect || !ever[i]) {
                        budget -= 1;
                        ever[i] = true;
                        *slot = open(target, &dial, mode, &st);
                    }
                    if let Some(c) = slot {
                        if !tend(c, mode, &st) {
                            *slot = None;
                        }
                    }
                }
                first_wave = false;
                st.lock().unwrap().open = conns.iter().flatten().count();
                std::thread::sleep(TICK);
            }
        });
        Flood { stats, stop, thread: Some(thread) }
    }

    pub fn stats(&self) -> FloodStats {
        self.stats.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the stats; panics after `within`.
    pub fn wait(&self, within: Duration, what: &str, pred: impl Fn(&FloodStats) -> bool) -> FloodStats {
        let deadline = Instant::now() + within;
        loop {
            let s = self.stats();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "flood: no {what} within {within:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(target: SocketAddr, dial: &Dial, mode: FloodMode, stats: &Mutex<FloodStats>) -> Option<Conn> {
    let Ok(peer) = FakePeer::connect(target, dial) else {
        stats.lock().unwrap().connect_errors += 1;
        return None;
    };
    stats.lock().unwrap().connects += 1;
    let info_hash = match mode {
        FloodMode::KeepAlive(h) => h,
        _ => super::random_info_hash(),
    };
    let handshake = handshake_bytes([0; 8], info_hash, PeerId::generate());
    let mut c = Conn { peer, handshake, sent: 0, last_send: Instant::now(), handshaken: false };
    if let FloodMode::KeepAlive(_) = mode {
        let hs = std::mem::take(&mut c.handshake);
        c.peer.send_raw(&hs).ok()?;
    }
    Some(c)
}

/// One round for one connection; false when the target closed it.
fn tend(c: &mut Conn, mode: FloodMode, stats: &Mutex<FloodStats>) -> bool {
    c.peer.drain_ready();
    loop {
        match c.peer.recv(Duration::ZERO) {
            Recv::Handshake(_) => {
                c.handshaken = true;
                let mut st = stats.lock().unwrap();
                st.handshaken += 1;
                st.settled += 1;
            }
            Recv::Msg(_) => {}
            _ => break,
        }
    }
    let due = c.last_send.elapsed();
    let sent = match mode {
        FloodMode::Silent => Ok(()),
        FloodMode::Trickle if due >= Duration::from_secs(1) && c.sent < c.handshake.len() => {
            c.sent += 1;
            c.last_send = Instant::now();
            c.peer.send_raw(&c.handshake[c.sent - 1..c.sent])
        }
        FloodMode::KeepAlive(_) if c.handshaken && due >= KEEPALIVE_EVERY => {
            c.last_send = Instant::now();
            c.peer.send(Message::KeepAlive)
        }
        _ => Ok(()),
    };
    if sent.is_err() || c.peer.closed.is_some() {
        let mut st = stats.lock().unwrap();
        st.closed_by_target += 1;
        if !c.handshaken {
            st.settled += 1;
        }
        return false;
    }
    true
}
