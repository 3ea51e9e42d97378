//! Unit tests of the key-peer monitor: every rule of the state machine with `now` driven by hand.
use super::*;

fn cfg() -> MonitorConfig {
    MonitorConfig {
        probe_interval: Duration::from_secs(60),
        min_probe_interval: Duration::from_secs(30),
        fail_threshold: 3,
        max_concurrent: 5,
        max_size: 8,
        reset_cool_down: Duration::from_secs(10),
    }
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn with_peers(cfg: MonitorConfig, n: usize, t0: Instant) -> (KeyPeerMonitor, Vec<PeerId>) {
    let mut m = KeyPeerMonitor::new(cfg, t0);
    let ids: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
    for id in &ids {
        assert!(m.add_fixed(*id, Source::Configured));
    }
    (m, ids)
}

/// Probes `peer` to failure until the monitor asks for a repair; returns the failures
/// it took.
fn fail_until_repair(m: &mut KeyPeerMonitor, peer: PeerId, now: &mut Instant) -> u32 {
    for n in 1..=100 {
        *now += m.config().probe_interval.max(m.config().min_probe_interval);
        let due = m.due_probes(*now);
        assert!(due.contains(&peer), "round {n}: {due:?}");
        if let Action::Repair(p) = m.probe_result(peer, false, *now) {
            assert_eq!(p, peer);
            return n;
        }
    }
    panic!("no repair");
}

#[test]
fn repair_after_threshold_failures_in_a_row() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 1, t0);
    let p = ids[0];
    assert_eq!(m.due_probes(t0), vec![p]);
    assert_eq!(m.probe_result(p, false, t0), Action::Nothing);
    let mut now = t0 + s(60);
    assert_eq!(m.due_probes(now), vec![p]);
    assert_eq!(m.probe_result(p, true, now), Action::Nothing, "a success breaks the streak");
    assert_eq!(m.failures(&p), 0);
    assert_eq!(fail_until_repair(&mut m, p, &mut now), 3);
    assert_eq!(m.state(&p), Some(RepairState::Repairing));
    assert_eq!(m.failures(&p), 3);
}

#[test]
fn repair_chain_success_reconnects() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 1, t0);
    let p = ids[0];
    let mut now = t0;
    fail_until_repair(&mut m, p, &mut now);
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    assert_eq!(m.repair_result(p, Some(vec![addr.clone()]), now), Action::Redial(p, vec![addr]));
    assert_eq!(m.state(&p), Some(RepairState::Redialing));
    assert_eq!(m.redial_result(p, true, now), Action::Reconnected(p));
    assert_eq!(m.state(&p), Some(RepairState::Idle));
    assert!(m.is_connected(&p));
    assert_eq!(m.failures(&p), 0);
    assert_eq!(m.view(now).resets_published, 0);
}

#[test]
fn repair_chain_failures_publish_a_reset() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 2, t0);
    let mut now = t0;
    // Nothing found in the DHT.
    fail_until_repair(&mut m, ids[0], &mut now);
    assert_eq!(m.repair_result(ids[0], None, now), Action::PublishReset(ids[0]));
    assert_eq!(m.state(&ids[0]), Some(RepairState::Failed));
    // Found, but the redial fails: within the cool-down of the first reset.
    let mut m2 = KeyPeerMonitor::new(cfg(), t0);
    m2.add_fixed(ids[1], Source::Bootstrap);
    let mut now2 = t0;
    fail_until_repair(&mut m2, ids[1], &mut now2);
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    assert!(matches!(m2.repair_result(ids[1], Some(vec![addr]), now2), Action::Redial(..)));
    assert_eq!(m2.redial_result(ids[1], false, now2), Action::PublishReset(ids[1]));
    // An empty address list is a failed lookup.
    let (mut m3, ids3) = with_peers(cfg(), 1, t0);
    let mut now3 = t0;
    fail_until_repair(&mut m3, ids3[0], &mut now3);
    assert_eq!(m3.repair_result(ids3[0], Some(vec![]), now3), Action::PublishReset(ids3[0]));
}

#[test]
fn a_failed_peer_is_probed_again_and_repaired_every_threshold_failures() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 1, t0);
    let p = ids[0];
    let mut now = t0;
    assert_eq!(fail_until_repair(&mut m, p, &mut now), 3);
    m.repair_result(p, None, now);
    assert_eq!(fail_until_repair(&mut m, p, &mut now), 3, "the next repair after another threshold failures");
    assert_eq!(m.failures(&p), 6);
    m.repair_result(p, None, now);
    now += s(60);
    assert_eq!(m.due_probes(now), vec![p]);
    assert_eq!(m.probe_result(p, true, now), Action::Nothing);
    assert_eq!(m.state(&p), Some(RepairState::Idle));
}

#[test]
fn rounds_come_every_probe_interval() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 1, t0);
    assert_eq!(m.due_probes(t0), ids);
    m.probe_result(ids[0], true, t0);
    assert!(m.due_probes(t0 + s(59)).is_empty());
    assert_eq!(m.due_probes(t0 + s(60)), ids);
}

#[test]
fn no_peer_is_probed_more_often_than_the_min_interval() {
    let t0 = Instant::now();
    let c = MonitorConfig { probe_interval: s(5), min_probe_interval: s(30), ..cfg() };
    let (mut m, ids) = with_peers(c, 1, t0);
    let p = ids[0];
    let mut probes = Vec::new();
    let mut now = t0;
    while now < t0 + s(300) {
        for id in m.due_probes(now) {
            probes.push(now);
            m.probe_result(id, true, now);
        }
        now += Duration::from_millis(250);
    }
    assert!(probes.windows(2).all(|w| w[1] - w[0] >= s(30)), "{probes:?}");
    assert_eq!(probes.len(), 10);
    assert_eq!(m.state(&p), Some(RepairState::Idle));
}

#[test]
fn at_most_max_concurrent_in_flight_and_the_rest_wait_for_slots() {
    let t0 = Instant::now();
    let c = MonitorConfig { max_concurrent: 3, max_size: 16, ..cfg() };
    let (mut m, ids) = with_peers(c, 10, t0);
    let first = m.due_probes(t0);
    assert_eq!(first.len(), 3);
    assert!(m.due_probes(t0).is_empty(), "no free slot");
    assert_eq!(m.in_flight(), 3);
    // One finishes: one more of the same round may start.
    m.probe_result(first[0], true, t0 + s(1));
    let next = m.due_probes(t0 + s(1));
    assert_eq!(next.len(), 1);
    assert!(!first.contains(&next[0]));
    // A repair holds its slot too.
    let mut now = t0 + s(1);
    for id in first[1..].iter().chain(&next) {
        m.probe_result(*id, false, now);
    }
    let mut probed: std::collections::HashSet<PeerId> = first.iter().chain(&next).copied().collect();
    while probed.len() < ids.len() {
        now += s(1);
        let due = m.due_probes(now);
        assert!(m.in_flight() <= 3);
        assert!(!due.is_empty(), "the round goes on as slots free up");
        for id in due {
            probed.insert(id);
            m.probe_result(id, true, now);
        }
    }
}

#[test]
fn the_set_is_bounded_and_fixed_peers_are_never_evicted() {
    let t0 = Instant::now();
    let c = MonitorConfig { max_size: 4, ..cfg() };
    let (mut m, fixed) = with_peers(c, 2, t0);
    let contributors: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
    m.set_dynamic(Source::Contributor, &contributors, t0);
    assert_eq!(m.len(), 4);
    assert!(fixed.iter().all(|p| m.contains(p)));
    assert!(m.contains(&contributors[0]) && m.contains(&contributors[1]));
    // New better contributors later take the place of the stalest ones.
    let later = [contributors[1], contributors[4]];
    m.set_dynamic(Source::Contributor, &later, t0 + s(5));
    assert_eq!(m.len(), 4);
    assert!(m.contains(&contributors[4]) && m.contains(&contributors[1]) && !m.contains(&contributors[0]));
    // Fixed peers evict contributors, never each other.
    assert!(m.add_fixed(PeerId::random(), Source::Configured));
    assert!(m.add_fixed(PeerId::random(), Source::Bootstrap));
    assert_eq!(m.len(), 4);
    assert!(!m.add_fixed(PeerId::random(), Source::Configured), "full of fixed peers");
    m.set_dynamic(Source::Contributor, &[PeerId::random()], t0 + s(6));
    assert_eq!(m.len(), 4);
    assert!(fixed.iter().all(|p| m.contains(p)));
}

#[test]
fn a_contributor_under_repair_is_not_evicted_and_stale_ones_leave() {
    let t0 = Instant::now();
    let c = MonitorConfig { max_size: 2, ..cfg() };
    let mut m = KeyPeerMonitor::new(c, t0);
    let a = PeerId::random();
    m.set_dynamic(Source::Contributor, &[a], t0);
    let mut now = t0;
    fail_until_repair(&mut m, a, &mut now);
    m.set_dynamic(Source::Contributor, &[PeerId::random(), PeerId::random()], now);
    assert!(m.contains(&a), "in flight");
    assert_eq!(m.len(), 2);
    m.repair_result(a, None, now);
    let ttl = c.probe_interval * CONTRIBUTOR_TTL_ROUNDS;
    m.set_dynamic(Source::Contributor, &[], now + ttl + s(1));
    assert!(m.is_empty(), "silent and disconnected contributors leave");
}

#[test]
fn resets_are_published_no_faster_than_the_cool_down_under_a_storm() {
    let t0 = Instant::now();
    let c = MonitorConfig {
        probe_interval: s(1),
        min_probe_interval: s(1),
        fail_threshold: 1,
        max_concurrent: 50,
        max_size: 50,
        ..cfg()
    };
    let (mut m, _) = with_peers(c, 20, t0);
    let mut now = t0;
    let mut published = Vec::new();
    // 20 dead key peers, every repair failing, for 100 s.
    while now < t0 + s(100) {
        for id in m.due_probes(now) {
            if let Action::Repair(p) = m.probe_result(id, false, now) {
                if let Action::PublishReset(_) = m.repair_result(p, None, now) {
                    published.push(now);
                }
            }
        }
        now += Duration::from_millis(100);
    }
    assert!(published.windows(2).all(|w| w[1] - w[0] >= s(10)), "{published:?}");
    assert_eq!(published.len(), 10);
    let v = m.view(now);
    assert_eq!(v.resets_published, 10);
    assert!(v.resets_suppressed > 1000, "{}", v.resets_suppressed);
}

#[test]
fn node_troubles_and_failed_repairs_share_one_cool_down() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 1, t0);
    assert!(m.discovery_trouble(t0), "the first trouble resets");
    assert!(!m.discovery_trouble(t0 + s(9)), "inside the cool-down");
    // A repair failing inside the same cool-down is held back too.
    let mut now = t0;
    let p = fail_until_repair(&mut m, ids[0], &mut now);
    assert!(p >= 1);
    let action = m.repair_result(ids[0], None, t0 + s(9));
    assert_eq!(action, Action::ResetSuppressed(ids[0]));
    assert!(m.discovery_trouble(t0 + s(10)), "the cool-down is over");
    let v = m.view(t0 + s(10));
    assert_eq!((v.resets_published, v.resets_suppressed), (2, 2));
}

#[test]
fn routing_table_peers_fill_the_room_left_and_leave_when_gone() {
    let t0 = Instant::now();
    let c = MonitorConfig { max_size: 4, ..cfg() };
    let (mut m, fixed) = with_peers(c, 2, t0);
    let table: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
    m.set_dynamic(Source::RoutingTable, &table, t0);
    assert_eq!(m.len(), 4, "bounded by key_peer_set_max_size");
    assert!(fixed.iter().all(|f| m.source(f) == Some(Source::Configured)), "fixed peers stay");
    assert_eq!((m.source(&table[0]), m.source(&table[1])), (Some(Source::RoutingTable), Some(Source::RoutingTable)));
    // A contributor refresh does not judge routing-table peers.
    let later = t0 + c.probe_interval * CONTRIBUTOR_TTL_ROUNDS + s(1);
    m.set_dynamic(Source::Contributor, &[], later);
    assert_eq!(m.len(), 4);
    // Gone from the table (and never connected), they leave.
    m.set_dynamic(Source::RoutingTable, &[], later);
    assert_eq!(m.len(), 2);
}

#[test]
fn late_or_unknown_results_are_ignored() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 1, t0);
    assert_eq!(m.probe_result(ids[0], false, t0), Action::Nothing, "not probing");
    assert_eq!(m.failures(&ids[0]), 0);
    assert_eq!(m.probe_result(PeerId::random(), false, t0), Action::Nothing);
    assert_eq!(m.repair_result(ids[0], None, t0), Action::Nothing);
    assert_eq!(m.redial_result(ids[0], true, t0), Action::Nothing);
}

#[test]
fn view_shows_each_key_peer() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 1, t0);
    m.due_probes(t0);
    m.probe_result(ids[0], false, t0);
    let v = serde_json::to_value(m.view(t0 + s(2))).unwrap();
    let p = &v["key_peers"][0];
    assert_eq!(p["peer_id"], ids[0].to_base58());
    assert_eq!(p["source"], "configured");
    assert_eq!(p["connected"], false);
    assert_eq!(p["consecutive_failures"], 1);
    assert_eq!(p["last_probe_secs_ago"], 2.0);
    assert_eq!(p["state"], "idle");
}

#[test]
fn contributors_are_summed_over_torrents_ranked_and_bounded() {
    let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
    let found = vec![(a, 10.0), (b, 25.0), (c, 1.0), (a, 20.0)];
    assert_eq!(rank_contributors(found.clone(), 16), vec![a, b, c], "a's 10 + 20 beats b's 25");
    assert_eq!(rank_contributors(found, 2), vec![a, b]);
    assert!(rank_contributors(Vec::new(), 16).is_empty());
}

#[test]
fn contributors_come_typed_from_the_torrent_stats() {
    use crate::manager::ScoreParts;
    use crate::torrent::{PeerStats, TorrentStats};
    use crate::types::PeerAddr;
    let peer = |addr: PeerAddr, download_rate: f64| PeerStats {
        peer: addr,
        transport: if matches!(addr, PeerAddr::P2p(_)) { "libp2p" } else { "tcp" },
        addr: addr.to_string(),
        direction: "outbound",
        source: "tracker",
        client: None,
        am_choking: true,
        am_interested: true,
        peer_choking: false,
        peer_interested: false,
        snubbed: false,
        fast: false,
        extensions: Vec::new(),
        download_rate,
        upload_rate: 0.0,
        upload_cap: 0,
        downloaded: 0,
        uploaded: 0,
        outstanding_requests: 0,
        rtt_ms: None,
        pieces: 0,
        is_seed: false,
        added_time: 0,
        score: ScoreParts::default(),
    };
    let (feeding, idle) = (PeerId::random(), PeerId::random());
    let stats = TorrentStats {
        peers: vec![
            peer(PeerAddr::P2p(feeding), 5.0),
            peer(PeerAddr::P2p(idle), 0.0),
            peer(PeerAddr::Tcp("127.0.0.1:6881".parse().unwrap()), 9.0),
        ],
        ..TorrentStats::default()
    };
    assert_eq!(stats.libp2p_contributors().collect::<Vec<_>>(), vec![(feeding, 5.0)]);
    assert_eq!(stats.peers[1].libp2p_peer(), Some(idle));
    assert_eq!(stats.peers[2].libp2p_peer(), None);
}

#[test]
fn configured_peers_follow_a_config_change_and_leave_the_others_alone() {
    let t0 = Instant::now();
    let (mut m, ids) = with_peers(cfg(), 2, t0);
    let boot = PeerId::random();
    assert!(m.add_fixed(boot, Source::Bootstrap));
    let new = PeerId::random();
    assert!(m.set_configured(&[ids[1], new]).is_empty());
    assert_eq!(m.source(&ids[0]), None, "dropped from the config: gone");
    assert_eq!(m.source(&ids[1]), Some(Source::Configured), "kept");
    assert_eq!(m.source(&new), Some(Source::Configured), "joined");
    assert_eq!(m.source(&boot), Some(Source::Bootstrap), "not configured: untouched");
    assert!(m.set_configured(&[]).is_empty());
    assert_eq!(m.len(), 1, "only the bootstrap peer is left");
}
