//! The torrent's side of the BEP 6 fast extension: the allowed-fast set we grant each peer,
//! the rejects and allowed-fast pieces peers send us, and what we may request while choked.
//!
//! With fast, a choke no longer gives back every request: the peer answers each one with the
//! block or a reject, and only rejected blocks return to the picker. A peer that answers
//! neither still loses them to `request_timeout`, so it cannot hold blocks for ever.
use super::Torrent;
use crate::types::{BlockRef, PeerAddr, PeerKey};
use crate::wire::fast::{allowed_fast_set, ALLOWED_FAST_SET, MAX_ALLOWED_FAST_KEPT};
use bitvec::prelude::*;
use std::net::IpAddr;

impl Torrent {
    /// The BEP 6 allowed-fast set for a peer at `addr`: defined for IPv4 only (the BEP's
    /// algorithm hashes the /24), so IPv6 and libp2p peers get none.
    pub(super) fn allowed_fast_for(&self, addr: &PeerAddr) -> Vec<u32> {
        let PeerAddr::Tcp(sa) = addr else { return Vec::new() };
        let v4 = match sa.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => ip,
                None => return Vec::new(),
            },
        };
        allowed_fast_set(v4, &self.meta.info_hash, self.meta.piece_count(), ALLOWED_FAST_SET)
    }

    /// The peer will not serve a request of ours: the block goes back to the picker. It is
    /// not asked of the same peer again at once (the next tick or block refills), so a peer
    /// that rejects everything cannot spin us. A reject for a request we no longer hold (we
    /// cancelled it, or it timed out) is the BEP's answer to that and is ignored.
    pub(super) fn on_rejected(&mut self, key: PeerKey, b: BlockRef) {
        if self.peer_mut(key).outstanding.remove(&b).is_some() {
            self.picker.release(key, b);
        }
    }

    /// The peer lets us request `piece` while it chokes us; kept up to the bound (the peer
    /// task already drops repeats and more than `MAX_ALLOWED_FAST_KEPT`).
    pub(super) fn on_allowed_fast(&mut self, key: PeerKey, piece: u32) {
        let p = self.peer_mut(key);
        if p.allowed_fast.len() < MAX_ALLOWED_FAST_KEPT && !p.allowed_fast.contains(&piece) {
            p.allowed_fast.push(piece);
        }
        self.fill_requests(key);
    }

    /// The peer choked us. Without fast every request is void and goes back to the picker;
    /// with fast they stay outstanding until the block or a reject comes (or they time out),
    /// and the allowed-fast pieces may still be asked for.
    pub(super) fn on_choked(&mut self, key: PeerKey) {
        let p = self.peer_mut(key);
        p.peer_choking = true;
        if !p.fast {
            // Blocks already on the wire may still come; they are taken if wanted.
            for (b, _) in p.outstanding.drain() {
                p.withdrawn.add(b);
            }
            self.picker.release_all(key);
            return;
        }
        self.fill_requests(key);
    }

    /// What a choked peer may be asked for: its pieces in its allowed-fast set, or `None`
    /// when that is nothing (no fast, or no such piece).
    pub(super) fn choked_offer(&self, key: PeerKey) -> Option<BitVec<u8, Msb0>> {
        let p = self.peers.get(&key)?;
        if !p.fast {
            return None;
        }
        let mut bits = bitvec![u8, Msb0; 0; p.bitfield.len()];
        for &i in &p.allowed_fast {
            if p.bitfield.get(i as usize).is_some_and(|b| *b) {
                bits.set(i as usize, true);
            }
        }
        bits.any().then_some(bits)
    }
}
