//! BEP 11 peer exchange in the torrent task: peers learned from PEX messages go to the pool
//! as source `pex`; every tick, PEX-capable peers whose interval is over are told which of
//! our peers came and went ([`crate::torrent::pex`] holds the bookkeeping and the bounds).
use super::Torrent;
use crate::peer::{CloseReason, PeerCommand};
use crate::torrent::pex::Advertised;
use crate::types::{PeerAddr, PeerKey, PeerSource};
use crate::wire::extension::{ExtHandshake, UT_PEX_ID};
use crate::wire::pex::{flags, PexMessage};
use std::net::SocketAddr;
use tokio::time::Instant;

/// The score a peer gets when its PEX flags say it takes no connections: every other known
/// peer is dialled before it (scores of peers we know are 0 or more).
const UNREACHABLE_SCORE: f64 = -1.0;

impl Torrent {
    /// Our extension handshake offers `ut_pex`, unless the torrent is private (BEP 27).
    pub(super) fn with_pex(&self, mut ext: ExtHandshake) -> ExtHandshake {
        if self.pex.enabled() {
            ext.m.insert("ut_pex".into(), UT_PEX_ID);
        }
        ext
    }

    pub(super) fn pex_on_extensions(&mut self, key: PeerKey, ext: &ExtHandshake) {
        let p = &self.peers[&key];
        let listen = match (p.inbound, ext.port, p.addr) {
            (true, Some(port), PeerAddr::Tcp(sa)) => Some(SocketAddr::new(sa.ip(), port)),
            _ => None,
        };
        self.pex.on_extensions(key, ext.m.get("ut_pex").copied(), listen, Instant::now().into_std());
    }

    /// Peers a connected peer told us of. Ignored for a private torrent, from a peer that
    /// never offered PEX, and past the connection's allowance; while we seed, seeds are
    /// skipped (neither side would want the other).
    pub(super) fn on_pex(&mut self, key: PeerKey, msg: PexMessage) {
        let take = self.pex.may_learn(key, msg.added.len());
        if take == 0 {
            return;
        }
        let (now, seeding) = (Instant::now().into_std(), self.seeding());
        let mut new = 0;
        let offered: Vec<SocketAddr> = msg.added.iter().take(take).map(|p| p.addr).collect();
        for peer in msg.added.into_iter().take(take).filter(|p| !(seeding && p.is_seed())) {
            let addr = PeerAddr::Tcp(peer.addr);
            if self.pool.add_from(addr, PeerSource::Pex, now) {
                new += 1;
                if peer.unreachable() {
                    self.pool.set_score(&addr, UNREACHABLE_SCORE);
                }
            }
        }
        tracing::debug!(peer = %self.peers[&key].addr, offered = take, new, addrs = ?offered, "peers learned via PEX");
        if new > 0 {
            self.dial_more();
        }
    }

    /// Sends the PEX messages that are due.
    pub(super) fn send_pex(&mut self) {
        if !self.pex.enabled() {
            return;
        }
        let connected: Vec<Advertised> = self.peers.iter().filter_map(|(k, p)| self.advertised(*k, p)).collect();
        for (key, id, msg) in self.pex.due(Instant::now().into_std(), &connected) {
            let p = self.peer_mut(key);
            tracing::debug!(peer = %p.addr, added = msg.added.len(), dropped = msg.dropped.len(), "PEX sent");
            if !p.command(PeerCommand::Extended { id, payload: msg.encode() }) {
                self.close(key, CloseReason::Lagging);
            }
        }
    }

    /// How a connected peer is told to others: where it listens (the address we dialled, or
    /// the port an inbound peer told us), reachable if we reached it, a seed if it has all.
    fn advertised(&self, key: PeerKey, p: &crate::torrent::peers::PeerSlot) -> Option<Advertised> {
        let addr = match (p.inbound, p.addr) {
            (false, PeerAddr::Tcp(a)) => a,
            (true, _) => self.pex.listen_addr(key)?,
            (false, PeerAddr::P2p(_)) => return None,
        };
        let mut f = if p.inbound { 0 } else { flags::REACHABLE };
        if !p.bitfield.is_empty() && p.bitfield.all() {
            f |= flags::SEED;
        }
        Some(Advertised { key, addr, flags: f })
    }
}
