//! What a [`super::super::TorrentHandle`] asks of the running torrent (remove a peer, the
//! peers that have a piece), and closing connections between two seeds.
use super::Torrent;
use crate::peer::CloseReason;
use crate::torrent::Control;
use crate::types::{PeerAddr, PeerKey};

impl Torrent {
    pub(super) fn on_control(&mut self, control: Control) {
        match control {
            Control::RemovePeer(addr, reply) => {
                let _ = reply.send(self.remove_peer(addr));
            }
            Control::PeersWithPiece(piece, reply) => {
                let have = |p: &&crate::torrent::peers::PeerSlot| p.bitfield.get(piece as usize).is_some_and(|b| *b);
                let _ = reply.send(self.peers.values().filter(have).map(|p| p.addr).collect());
            }
        }
    }

    /// Closes every connection to `addr` and forgets the address; false when it was neither
    /// connected nor known.
    fn remove_peer(&mut self, addr: PeerAddr) -> bool {
        let keys: Vec<PeerKey> = self.peers.iter().filter(|(_, p)| p.addr == addr).map(|(k, _)| *k).collect();
        for &key in &keys {
            tracing::debug!(peer = %addr, "removed by the user");
            self.close(key, CloseReason::ByUs);
            self.forget_peer(key, CloseReason::ByUs);
        }
        let known = self.pool.remove(&addr);
        !keys.is_empty() || known
    }

    /// When we have every piece (and `close_redundant_connections`), connections to peers
    /// that have every piece too are closed and their addresses forgotten: neither side has anything for the other, and the slot
    /// is better spent on a leecher. A tracker or PEX may name such a peer again later.
    pub(super) fn close_seed_to_seed(&mut self) {
        if !self.opts.close_redundant_connections || !self.picker.have().all() {
            return;
        }
        let seeds: Vec<(PeerKey, PeerAddr)> =
            self.peers.iter().filter(|(_, p)| p.is_seed()).map(|(k, p)| (*k, p.addr)).collect();
        for (key, addr) in seeds {
            self.close(key, CloseReason::BothSeeds);
            self.forget_peer(key, CloseReason::BothSeeds);
            self.pool.remove(&addr);
        }
    }
}
