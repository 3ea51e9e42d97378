//! The statistics snapshot the torrent publishes for progress, diagnostics and metrics.
use super::Torrent;
use crate::torrent::peers::PeerSlot;
use crate::torrent::{PeerStats, TorrentStats};
use crate::types::{PeerAddr, PeerSource};
use tokio::sync::watch;

impl Torrent {
    pub(super) fn publish(&mut self, tx: &watch::Sender<TorrentStats>) {
        let pool = &self.pool;
        let source = |a: &PeerAddr| pool.source(a).unwrap_or(PeerSource::Inbound).as_str();
        let s = &mut self.stats;
        s.pieces_have = self.picker.have().count_ones() as u32;
        s.have.clear();
        s.have.extend_from_slice(self.picker.have().as_raw_slice());
        s.bytes_left = self.picker.bytes_left();
        s.downloaded = self.gone_downloaded + self.peers.values().map(|p| p.counters.downloaded()).sum::<u64>();
        s.uploaded = self.gone_uploaded + self.peers.values().map(|p| p.counters.uploaded()).sum::<u64>();
        // From 0.0: an f64 sum of no peers is -0.0, which the API showed as a rate.
        s.download_rate = self.peers.values().map(|p| p.rate_down.get()).fold(0.0, |a, b| a + b);
        s.upload_rate = self.peers.values().map(|p| p.rate_up.get()).fold(0.0, |a, b| a + b);
        s.pool = self.pool.stats();
        s.assembly_bytes = self.assembly.bytes();
        s.pieces_in_progress = self.picker.partial_count();
        s.pieces_verifying = self.verifying;
        s.super_seed_stranded = self.super_seed.as_ref().map_or(0, |ss| ss.stranded_count());
        s.banned = s.pool.banned;
        s.peers_used = self.used.len();
        s.peers = self.peers.values().map(|p| peer_stats(p, source(&p.addr))).collect();
        // Only a change is sent: each send wakes every listener (discovery, announcer, the
        // daemon's supervisor), and a daemon's idle torrents would wake them all every tick.
        tx.send_if_modified(|old| {
            let changed = old != s;
            if changed {
                old.clone_from(s);
            }
            changed
        });
    }
}

fn peer_stats(p: &PeerSlot, source: &'static str) -> PeerStats {
    PeerStats {
        peer: p.addr,
        addr: p.addr.to_string(),
        transport: match p.addr {
            PeerAddr::Tcp(_) => "tcp",
            PeerAddr::P2p(_) => "libp2p",
        },
        direction: if p.inbound { "inbound" } else { "outbound" },
        source,
        client: p.client.clone(),
        am_choking: p.am_choking,
        am_interested: p.am_interested,
        peer_choking: p.peer_choking,
        peer_interested: p.peer_interested,
        snubbed: p.snubbed,
        fast: p.fast,
        extensions: p.extensions.clone(),
        download_rate: p.rate_down.get(),
        upload_rate: p.rate_up.get(),
        upload_cap: p.upload_share.get(),
        downloaded: p.counters.downloaded(),
        uploaded: p.counters.uploaded(),
        outstanding_requests: p.outstanding.len(),
        rtt_ms: p.rtt.map(|r| r.as_secs_f64() * 1000.0),
        pieces: p.bitfield.count_ones(),
        is_seed: p.is_seed(),
        added_time: p.added.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        score: p.score,
    }
}
