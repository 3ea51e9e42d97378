//! The JSON shapes of `/debug/p2p/{torrents,peers,swarm}`: plain functions from the torrents'
//! statistics to serializable views, so the shapes are tested without a server.
//!
//! Rates are bytes per second, totals are payload bytes this session.
use crate::manager::PoolStats;
use crate::torrent::{PeerStats, Phase, TorrentStats};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Torrents<'a> {
    pub torrents: Vec<TorrentView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct TorrentView<'a> {
    pub name: &'a str,
    pub info_hash: &'a str,
    pub phase: Phase,
    pub error: Option<&'a crate::torrent::TorrentError>,
    /// When the torrent became complete in this session, milliseconds since the Unix epoch.
    pub completed_at_ms: Option<u64>,
    /// BEP 16 super-seeding applies to peers that connect now.
    pub super_seeding: bool,
    /// Pieces the super-seeder offers again: their one holder kept them.
    pub super_seed_stranded: u32,
    pub progress: Progress,
    pub rates: Rates,
    pub totals: Totals,
    pub pool: PoolStats,
    pub hash_failures: u32,
    pub protocol_violations: u64,
    pub banned: usize,
    /// Distinct peers that sent at least one piece.
    pub peers_used: usize,
}

#[derive(Debug, Serialize)]
pub struct Progress {
    pub pieces_have: u32,
    pub pieces_total: u32,
    pub pieces_checked: u32,
    /// The pieces we have as the wire's bitfield in lowercase hex (piece 0 is the high bit of
    /// the first byte), so a swarm's piece availability can be computed from its peers' views.
    pub have: String,
    pub bytes_total: u64,
    pub bytes_left: u64,
    /// Pieces started and not complete.
    pub in_progress: usize,
    /// Complete pieces being verified and written.
    pub verifying: usize,
    /// Bytes held in buffers of pieces being assembled.
    pub assembly_bytes: usize,
    /// Share of the bytes on disk and verified, 0 to 1.
    pub fraction: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Rates {
    pub download: f64,
    pub upload: f64,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub downloaded: u64,
    pub uploaded: u64,
    pub wasted: u64,
    pub pieces_received: u32,
}

pub fn torrents(stats: &[TorrentStats]) -> Torrents<'_> {
    Torrents { torrents: stats.iter().map(torrent).collect() }
}

fn torrent(t: &TorrentStats) -> TorrentView<'_> {
    let fraction = if t.bytes_total == 0 { 1.0 } else { 1.0 - t.bytes_left as f64 / t.bytes_total as f64 };
    TorrentView {
        name: &t.name,
        info_hash: &t.info_hash,
        phase: t.phase,
        error: t.error.as_ref(),
        completed_at_ms: t.completed_at_ms,
        super_seeding: t.super_seeding,
        super_seed_stranded: t.super_seed_stranded,
        progress: Progress {
            pieces_have: t.pieces_have,
            pieces_total: t.pieces_total,
            pieces_checked: t.pieces_checked,
            have: t.have.iter().map(|b| format!("{b:02x}")).collect(),
            bytes_total: t.bytes_total,
            bytes_left: t.bytes_left,
            in_progress: t.pieces_in_progress,
            verifying: t.pieces_verifying,
            assembly_bytes: t.assembly_bytes,
            fraction,
        },
        rates: Rates { download: t.download_rate, upload: t.upload_rate },
        totals: Totals {
            downloaded: t.downloaded,
            uploaded: t.uploaded,
            wasted: t.wasted,
            pieces_received: t.pieces_received,
        },
        pool: t.pool,
        hash_failures: t.hash_failures,
        protocol_violations: t.protocol_violations,
        banned: t.banned,
        peers_used: t.peers_used,
    }
}

#[derive(Debug, Serialize)]
pub struct Peers<'a> {
    pub peers: Vec<PeerView<'a>>,
}

/// One connected peer, tagged with the torrent it serves.
#[derive(Debug, Serialize)]
pub struct PeerView<'a> {
    pub info_hash: &'a str,
    #[serde(flatten)]
    pub peer: &'a PeerStats,
}

pub fn peers(stats: &[TorrentStats]) -> Peers<'_> {
    let peers =
        stats.iter().flat_map(|t| t.peers.iter().map(move |peer| PeerView { info_hash: &t.info_hash, peer })).collect();
    Peers { peers }
}

#[derive(Debug, Default, Serialize)]
pub struct Swarm {
    pub torrents: usize,
    pub connections: Connections,
    pub bytes: Bytes,
    pub rates: Rates,
}

#[derive(Debug, Default, Serialize)]
pub struct Connections {
    pub total: usize,
    pub by_direction: BTreeMap<&'static str, usize>,
    pub by_transport: BTreeMap<&'static str, usize>,
}

#[derive(Debug, Default, Serialize)]
pub struct Bytes {
    pub downloaded: u64,
    pub uploaded: u64,
}

/// Sums over every torrent.
pub fn swarm(stats: &[TorrentStats]) -> Swarm {
    let mut s = Swarm { torrents: stats.len(), ..Default::default() };
    for dir in ["inbound", "outbound"] {
        s.connections.by_direction.insert(dir, 0);
    }
    for t in stats {
        s.bytes.downloaded += t.downloaded;
        s.bytes.uploaded += t.uploaded;
        s.rates.download += t.download_rate;
        s.rates.upload += t.upload_rate;
        for p in &t.peers {
            s.connections.total += 1;
            *s.connections.by_direction.entry(p.direction).or_default() += 1;
            *s.connections.by_transport.entry(p.transport).or_default() += 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::ScoreParts;

    fn peer(direction: &'static str, transport: &'static str) -> PeerStats {
        PeerStats {
            peer: crate::types::PeerAddr::Tcp(([127, 0, 0, 1], 1).into()),
            addr: "127.0.0.1:1".into(),
            transport,
            direction,
            source: "tracker",
            client: None,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            snubbed: false,
            fast: false,
            extensions: Vec::new(),
            download_rate: 1.0,
            upload_rate: 2.0,
            upload_cap: 0,
            downloaded: 10,
            uploaded: 20,
            outstanding_requests: 0,
            rtt_ms: None,
            pieces: 3,
            is_seed: false,
            added_time: 0,
            score: ScoreParts::default(),
        }
    }

    fn stats(hash: &str, peers: Vec<PeerStats>) -> TorrentStats {
        TorrentStats {
            info_hash: hash.into(),
            name: "t".into(),
            bytes_total: 100,
            bytes_left: 25,
            downloaded: 75,
            uploaded: 5,
            download_rate: 10.0,
            upload_rate: 1.0,
            peers,
            ..Default::default()
        }
    }

    #[test]
    fn swarm_sums_over_torrents_and_counts_connections() {
        let all = [
            stats("aa", vec![peer("inbound", "tcp"), peer("outbound", "tcp")]),
            stats("bb", vec![peer("outbound", "libp2p")]),
        ];
        let s = serde_json::to_value(swarm(&all)).unwrap();
        assert_eq!(s["torrents"], 2);
        assert_eq!(s["connections"]["total"], 3);
        assert_eq!(s["connections"]["by_direction"]["outbound"], 2);
        assert_eq!(s["connections"]["by_transport"]["libp2p"], 1);
        assert_eq!(s["bytes"]["downloaded"], 150);
        assert_eq!(s["rates"]["download"], 20.0);
    }

    #[test]
    fn peers_carry_their_torrent_and_flat_fields() {
        let all = [stats("aa", vec![peer("inbound", "tcp")]), stats("bb", vec![peer("outbound", "libp2p")])];
        let v = serde_json::to_value(peers(&all)).unwrap();
        let list = v["peers"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["info_hash"], "bb");
        assert_eq!(list[1]["transport"], "libp2p");
        assert_eq!(list[0]["pieces"], 3);
        assert!(list[0]["score"]["total"].is_number());
    }

    #[test]
    fn torrent_progress_is_a_fraction_of_bytes() {
        let v = serde_json::to_value(torrents(&[stats("aa", vec![])])).unwrap();
        let t = &v["torrents"][0];
        assert_eq!(t["progress"]["fraction"], 0.75);
        assert_eq!(t["phase"], "checking");
        assert_eq!(t["pool"]["connected"], 0);
    }

    #[test]
    fn the_have_bitfield_is_hex_with_piece_zero_in_the_high_bit() {
        let mut s = stats("aa", vec![]);
        s.have = vec![0b1000_0001, 0x40];
        let v = serde_json::to_value(torrents(&[s])).unwrap();
        assert_eq!(v["torrents"][0]["progress"]["have"], "8140");
    }
}
