//! Unit tests of the pool: the state machine, its bounds, and (by recounting after random
//! operation sequences) that the incremental counts and indexes always match the entries.
use super::index::State;
use super::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::net::SocketAddr;

impl Pool {
    /// Recounts everything from the entries and checks it against the indexes and counters;
    /// panics naming the first difference.
    pub(crate) fn check_invariants(&self) {
        let (mut waiting, mut ready, mut pending, mut connecting, mut connected, mut banned) = (0, 0, 0, 0, 0, 0);
        let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
        for (a, e) in &self.entries {
            let rank = e.rank();
            match e.state {
                State::Waiting(at) => {
                    waiting += 1;
                    assert_eq!(self.index.waiting.get(&(at, e.seq)), Some(a), "waiting index");
                }
                State::Ready => {
                    ready += 1;
                    assert_eq!(self.index.ready.get(&rank), Some(a), "ready index");
                }
                State::Pending => {
                    pending += 1;
                    assert_eq!(self.index.pending.get(&rank), Some(a), "pending index");
                }
                State::Connecting | State::Connected => {
                    if e.state == State::Connecting {
                        connecting += 1;
                    } else {
                        connected += 1;
                    }
                    if let Some(ip) = a.ip() {
                        *per_ip.entry(ip).or_default() += 1;
                    }
                }
                State::Banned => {
                    banned += 1;
                    assert!(self.banned.contains(a), "banned entry {a} not in the ban list");
                }
                State::Aliased => assert!(self.aliases.conn(a).is_some(), "aliased {a} without its connection"),
            }
            if matches!(e.state, State::Waiting(_) | State::Ready | State::Pending) {
                assert!(e.dialable, "{a} is queued but not dialable");
                assert_eq!(self.index.known.get(&rank), Some(a), "known index");
            }
        }
        assert_eq!(self.index.waiting.len(), waiting, "waiting count");
        assert_eq!(self.index.ready.len(), ready, "ready count");
        assert_eq!(self.index.pending.len(), pending, "pending count");
        assert_eq!(self.index.known.len(), waiting + ready + pending, "known count");
        assert_eq!(self.index.connecting, connecting, "connecting count");
        assert_eq!(self.index.connected, connected, "connected count");
        assert_eq!(self.banned.len(), banned, "banned count");
        assert_eq!(self.index.per_ip, per_ip, "per-IP counts");
        for (conn, alias) in self.aliases.links() {
            assert_eq!(self.entries.get(conn).map(|e| e.state), Some(State::Connected), "alias {alias} of {conn}");
            let state = self.entries.get(alias).map(|e| e.state);
            assert!(matches!(state, Some(State::Aliased | State::Connecting)), "alias {alias} is {state:?}");
        }
        assert!(per_ip.values().all(|&n| n <= self.limits.max_per_ip), "per-IP bound");
        assert!(self.index.known.len() <= self.limits.max_known, "known bound");
        assert!(self.banned.len() <= self.limits.max_banned, "banned bound");
        assert!(self.banned_ips.len() <= self.limits.max_banned, "banned IP bound");
        assert!(self.index.pending.len() <= self.limits.max_pending, "pending bound");
        if let (Some(r), Some(p)) = (self.index.ready.last_key_value(), self.index.pending.first_key_value()) {
            assert!(r.0 < p.0, "a ready peer outranks a pending one");
        }
        assert!(
            self.index.pending.len() == self.limits.max_pending || self.index.ready.is_empty(),
            "pending not filled"
        );
    }
}

pub(super) fn limits() -> PoolLimits {
    PoolLimits {
        max_connections: 3,
        min_peers: 1,
        max_connecting: 2,
        max_pending: 4,
        reconnect_delay: Duration::from_secs(60),
        max_connect_failures: 3,
        max_known: 100,
        max_banned: 4,
        max_per_ip: 100,
    }
}

pub(super) fn addr(n: u16) -> PeerAddr {
    PeerAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], n)))
}

pub(super) fn ip_addr(ip: [u8; 4], port: u16) -> PeerAddr {
    PeerAddr::Tcp(SocketAddr::from((ip, port)))
}

#[test]
fn known_pending_connecting_connected() {
    let now = Instant::now();
    let mut p = Pool::new(limits());
    assert!(p.add(addr(1), now));
    assert!(!p.add(addr(1), now));
    assert_eq!(p.stats(), PoolStats { known: 1, pending: 1, ..Default::default() });
    assert_eq!(p.next_dial(now), Some(addr(1)));
    assert_eq!(p.stats().connecting, 1);
    p.connected(&addr(1));
    assert_eq!(p.stats().connected, 1);
    p.disconnected(&addr(1), now);
    assert_eq!(p.stats().pending, 0, "waits reconnect_delay");
    p.maintain(now + Duration::from_secs(61));
    assert_eq!(p.stats().pending, 1);
    p.check_invariants();
}

#[test]
fn addresses_nobody_listens_on_are_dropped() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    assert!(!p.add(addr(0), t), "port 0");
    assert!(!p.add(ip_addr([0, 0, 0, 0], 6881), t), "unspecified");
    assert!(!p.add(ip_addr([224, 0, 0, 1], 6881), t), "multicast");
    let conn = addr(40000);
    assert_eq!(p.accept_inbound(&conn), Ok(()));
    assert!(!p.learn_listen_addr(&conn, addr(0), t), "an extension handshake with p = 0");
    assert_eq!(p.stats().known, 1);
    p.check_invariants();
}

#[test]
fn bounds_on_connecting_and_connections() {
    let now = Instant::now();
    let mut p = Pool::new(limits());
    for n in 1..=4 {
        p.add(addr(n), now);
    }
    assert!(p.next_dial(now).is_some());
    assert!(p.next_dial(now).is_some());
    assert!(p.next_dial(now).is_none(), "max_connecting 2");
    assert_eq!(p.accept_inbound(&addr(100)), Ok(()), "inbound counts against max_connections 3");
    assert_eq!(p.accept_inbound(&addr(101)), Err(Refusal::Full));
    assert!(p.next_dial(now).is_none());
    assert!(p.needs_slot(), "two peers pending, no slot");
    p.check_invariants();
}

#[test]
fn full_queue_evicts_the_lowest_score() {
    let now = Instant::now();
    let mut p = Pool::new(limits());
    for n in 1..=4 {
        p.add(addr(n), now);
        p.set_score(&addr(n), n as f64);
    }
    // A fifth peer with a score of 0 finds the queue full and stays known.
    p.add(addr(5), now);
    assert_eq!(p.stats().pending, 4);
    p.set_score(&addr(5), 10.0);
    p.maintain(now);
    assert_eq!(p.stats().pending, 4);
    assert_eq!(p.next_dial(now), Some(addr(5)), "the better peer displaced addr(1) and is dialled first");
    assert_eq!(p.next_dial(now), Some(addr(4)));
    p.check_invariants();
}

#[test]
fn failures_back_off_then_forget() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    p.add(addr(1), t);
    p.next_dial(t);
    p.connect_failed(&addr(1), t);
    p.maintain(t + Duration::from_secs(59));
    assert_eq!(p.stats().pending, 0);
    p.maintain(t + Duration::from_secs(60));
    assert_eq!(p.next_dial(t), Some(addr(1)));
    p.connect_failed(&addr(1), t + Duration::from_secs(60));
    p.maintain(t + Duration::from_secs(60 + 119));
    assert_eq!(p.stats().pending, 0, "second wait doubles to 120 s");
    p.maintain(t + Duration::from_secs(180));
    assert_eq!(p.next_dial(t), Some(addr(1)));
    p.connect_failed(&addr(1), t);
    assert_eq!(p.stats().known, 0, "forgotten after 3 failures");
    p.check_invariants();
}

#[test]
fn a_huge_reconnect_delay_does_not_overflow() {
    let t = Instant::now();
    let mut p = Pool::new(PoolLimits { reconnect_delay: Duration::MAX, max_connect_failures: 40, ..limits() });
    p.add(addr(1), t);
    for _ in 0..30 {
        p.next_dial(t);
        p.connect_failed(&addr(1), t);
        p.add(addr(1), t);
    }
    p.check_invariants();
}

#[test]
fn hearing_of_a_waiting_peer_again_ends_its_wait() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    p.add(addr(1), t);
    p.next_dial(t);
    p.connect_failed(&addr(1), t);
    assert_eq!(p.stats().pending, 0);
    assert!(!p.add(addr(1), t));
    assert_eq!(p.next_dial(t), Some(addr(1)));
}

#[test]
fn banned_peers_stay_out() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    p.add(addr(1), t);
    p.ban(&addr(1));
    assert!(p.next_dial(t).is_none());
    assert_eq!(p.accept_inbound(&addr(1)), Err(Refusal::Banned));
    p.add(addr(1), t);
    p.maintain(t);
    assert!(p.next_dial(t).is_none());
    assert_eq!(p.stats().banned, 1);
    p.check_invariants();
}

#[test]
fn a_banned_inbound_peer_cannot_return_from_another_port() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    let liar = ip_addr([10, 0, 0, 9], 50001);
    assert_eq!(p.accept_inbound(&liar), Ok(()));
    assert!(p.learn_listen_addr(&liar, ip_addr([10, 0, 0, 9], 6881), t));
    p.ban(&liar);
    p.disconnected(&liar, t);
    assert_eq!(p.accept_inbound(&ip_addr([10, 0, 0, 9], 50002)), Err(Refusal::Banned), "new source port");
    assert!(p.is_banned(&ip_addr([10, 0, 0, 9], 6881)), "its listen address is banned with it");
    assert!(p.next_dial(t).is_none(), "and never dialled");
    assert!(p.is_ip_banned("10.0.0.9".parse().unwrap()));
    // A different client behind the same IP, listening elsewhere, may still be dialled.
    p.add(ip_addr([10, 0, 0, 9], 7000), t);
    assert_eq!(p.next_dial(t), Some(ip_addr([10, 0, 0, 9], 7000)));
    assert_eq!(p.accept_inbound(&ip_addr([10, 0, 0, 10], 50003)), Ok(()), "other IPs are fine");
    p.check_invariants();
}

#[test]
fn bans_are_bounded_oldest_forgotten() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    for n in 0..10u8 {
        p.ban(&ip_addr([10, 0, 0, n], 1000));
        p.check_invariants();
    }
    assert_eq!(p.stats().banned, 4, "max_banned 4");
    assert!(!p.is_ip_banned("10.0.0.0".parse().unwrap()), "the oldest ban is forgotten");
    assert!(p.is_ip_banned("10.0.0.9".parse().unwrap()));
    assert!(p.add(ip_addr([10, 0, 0, 0], 1000), t), "a forgotten ban is a new address");
}

#[test]
fn inbound_peers_are_not_redialled() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    assert_eq!(p.accept_inbound(&addr(7)), Ok(()));
    assert_eq!(p.accept_inbound(&addr(7)), Err(Refusal::AlreadyConnected));
    p.disconnected(&addr(7), t);
    assert_eq!(p.stats().known, 0);
    assert!(p.needs_more_peers());
}

#[test]
fn a_second_disconnect_or_a_late_dial_result_changes_nothing() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    p.add(addr(1), t);
    assert_eq!(p.next_dial(t), Some(addr(1)));
    p.connected(&addr(1));
    p.disconnected(&addr(1), t);
    p.disconnected(&addr(1), t + Duration::from_secs(600));
    p.maintain(t + Duration::from_secs(61));
    assert_eq!(p.stats().pending, 1, "the first disconnect's wait holds");
    // A libp2p peer dialled and meanwhile connected inbound: the dial's failure is stale.
    let peer = PeerAddr::P2p(libp2p::PeerId::random());
    p.add(peer, t);
    while p.next_dial(t).is_some_and(|a| a != peer) {}
    assert_eq!(p.accept_inbound(&peer), Ok(()));
    p.connect_failed(&peer, t);
    assert_eq!(p.stats().connected, 1);
    p.check_invariants();
}

#[test]
fn the_known_set_is_bounded_and_keeps_what_it_had() {
    let t = Instant::now();
    let mut p = Pool::new(PoolLimits { max_known: 10, ..limits() });
    for n in 1..=10 {
        assert!(p.add(addr(n), t));
    }
    assert!(!p.add(addr(11), t), "a fresh address is worth no more than the fresh ones held");
    assert_eq!(p.stats().known, 10);
    // A peer that failed ranks below a fresh one and makes room.
    let first = p.next_dial(t).unwrap();
    p.connect_failed(&first, t);
    assert!(p.add(addr(12), t));
    assert!(!p.add(first, t), "the failed peer was the one dropped");
    assert_eq!(p.stats().known, 10);
    // A peer that earned a score outranks fresh addresses.
    p.set_score(&addr(12), 5.0);
    for n in 100..200 {
        p.add(addr(n), t);
    }
    assert_eq!(p.next_dial(t), Some(addr(12)));
    p.check_invariants();
}

#[test]
fn repeated_extension_handshakes_add_one_address_per_connection() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    let conn = ip_addr([10, 0, 0, 1], 40000);
    assert_eq!(p.accept_inbound(&conn), Ok(()));
    for port in 1..=30_000u16 {
        p.learn_listen_addr(&conn, ip_addr([10, 0, 0, 1], port), t);
    }
    assert_eq!(p.stats().known, 2, "the connection and its latest listen address");
    assert!(!p.learn_listen_addr(&conn, conn, t), "its own source address is not a listen address");
    p.check_invariants();
}

#[test]
fn per_ip_bound_on_dials_and_inbound() {
    let t = Instant::now();
    let lim = PoolLimits { max_per_ip: 2, max_connections: 10, max_connecting: 10, max_pending: 10, ..limits() };
    let mut p = Pool::new(lim);
    for port in 1..=5 {
        p.add(ip_addr([10, 0, 0, 1], port), t);
    }
    p.add(ip_addr([10, 0, 0, 2], 1), t);
    let dialled: Vec<PeerAddr> = std::iter::from_fn(|| p.next_dial(t)).collect();
    let same_ip = dialled.iter().filter(|a| a.ip() == Some("10.0.0.1".parse().unwrap())).count();
    assert_eq!(same_ip, 2, "{dialled:?}");
    assert_eq!(dialled.len(), 3, "the other IP is dialled too");
    assert_eq!(p.accept_inbound(&ip_addr([10, 0, 0, 1], 9999)), Err(Refusal::IpLimit));
    assert_eq!(p.accept_inbound(&ip_addr([10, 0, 0, 3], 9999)), Ok(()));
    // The set-aside peers come back after reconnect_delay, once the IP has room.
    p.connect_failed(&dialled[0], t);
    p.maintain(t + Duration::from_secs(60));
    let again = p.next_dial(t + Duration::from_secs(60)).unwrap();
    assert_eq!(again.ip(), dialled[0].ip());
    p.check_invariants();
}

/// 50,000 addresses, then 10,000 ticks of housekeeping with dials that all fail: the bounds
/// hold throughout, with a tracker-like re-announce of 200 addresses every 30 s. No timing
/// assertion: the point is that it completes (the old pool scanned every entry per call).
#[test]
fn a_flood_of_addresses_stays_bounded() {
    let t0 = Instant::now();
    let lim = PoolLimits {
        max_connections: 50,
        min_peers: 25,
        max_connecting: 10,
        max_pending: 200,
        reconnect_delay: Duration::from_secs(60),
        max_connect_failures: 3,
        max_known: 2000,
        max_banned: 1000,
        max_per_ip: 8,
    };
    let mut p = Pool::new(lim);
    for i in 0..50_000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        p.add(ip_addr([10, b, c, d], 6881), t0);
    }
    assert_eq!(p.stats().known, 2000);
    let mut dials = 0;
    for tick in 0..10_000u64 {
        let now = t0 + Duration::from_millis(500 * tick);
        if tick % 60 == 0 {
            for i in 0..200u32 {
                let [_, b, c, d] = ((tick as u32 * 200 + i) % 50_000).to_be_bytes();
                p.add(ip_addr([10, b, c, d], 6881), now);
            }
        }
        p.maintain(now);
        while let Some(a) = p.next_dial(now) {
            dials += 1;
            p.connect_failed(&a, now);
        }
        let s = p.stats();
        assert!(s.known <= 2000 && s.pending <= 200, "tick {tick}: {s:?}");
    }
    assert!(dials >= 2000, "every kept address was tried: {dials}");
    p.check_invariants();
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u16),
    Learn(u8, u16, u16),
    Score(u8, u16, i8),
    Maintain(u16),
    Dial,
    Fail(u8, u16),
    Connected(u8, u16),
    Disconnected(u8, u16),
    Inbound(u8, u16),
    Ban(u8, u16),
    Duplicate(u8, u16, u16),
}

fn op() -> impl Strategy<Value = Op> {
    let ip = 0u8..4;
    let port = 0u16..24;
    prop_oneof![
        4 => (ip.clone(), port.clone()).prop_map(|(i, p)| Op::Add(i, p)),
        1 => (ip.clone(), port.clone(), port.clone()).prop_map(|(i, p, q)| Op::Learn(i, p, q)),
        2 => (ip.clone(), port.clone(), any::<i8>()).prop_map(|(i, p, s)| Op::Score(i, p, s)),
        2 => (0u16..200).prop_map(Op::Maintain),
        3 => Just(Op::Dial),
        2 => (ip.clone(), port.clone()).prop_map(|(i, p)| Op::Fail(i, p)),
        2 => (ip.clone(), port.clone()).prop_map(|(i, p)| Op::Connected(i, p)),
        2 => (ip.clone(), port.clone()).prop_map(|(i, p)| Op::Disconnected(i, p)),
        2 => (ip.clone(), port.clone()).prop_map(|(i, p)| Op::Inbound(i, p)),
        1 => (ip.clone(), port.clone()).prop_map(|(i, p)| Op::Ban(i, p)),
        1 => (ip, port.clone(), port).prop_map(|(i, p, q)| Op::Duplicate(i, p, q)),
    ]
}

fn at(i: u8, port: u16) -> PeerAddr {
    PeerAddr::Tcp(SocketAddr::from((Ipv4Addr::new(10, 0, 0, i), port)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Whatever the sequence of operations, the counts and indexes equal a recount and
    /// every bound holds.
    #[test]
    fn counts_always_equal_a_recount(ops in proptest::collection::vec(op(), 1..300)) {
        let t0 = Instant::now();
        let mut now = t0;
        let lim = PoolLimits { max_known: 12, max_banned: 3, max_per_ip: 2, max_pending: 4, max_connections: 6,
                               max_connecting: 3, ..limits() };
        let mut p = Pool::new(lim);
        for op in ops {
            match op {
                Op::Add(i, q) => { p.add(at(i, q), now); }
                Op::Learn(i, q, l) => { p.learn_listen_addr(&at(i, q), at(i, l), now); }
                Op::Score(i, q, s) => p.set_score(&at(i, q), f64::from(s)),
                Op::Maintain(secs) => { now += Duration::from_secs(u64::from(secs)); p.maintain(now); }
                Op::Dial => { p.next_dial(now); }
                Op::Fail(i, q) => p.connect_failed(&at(i, q), now),
                Op::Connected(i, q) => p.connected(&at(i, q)),
                Op::Disconnected(i, q) => p.disconnected(&at(i, q), now),
                Op::Inbound(i, q) => { let _ = p.accept_inbound(&at(i, q)); }
                Op::Ban(i, q) => p.ban(&at(i, q)),
                Op::Duplicate(i, q, c) => p.dialed_connected_peer(&at(i, q), &at(i, c), now),
            }
            p.check_invariants();
            let s = p.stats();
            prop_assert!(s.connecting <= 3 && s.connecting + s.connected <= 6, "{s:?}");
        }
    }
}

#[test]
fn limits_changed_while_running_apply_to_the_next_decision() {
    let mut p = Pool::new(limits());
    for n in 0..3 {
        p.accept_inbound(&addr(200 + n)).unwrap();
    }
    assert_eq!(p.accept_inbound(&addr(210)), Err(Refusal::Full));
    p.set_limits(PoolLimits { max_connections: 4, max_banned: 99, ..limits() });
    assert_eq!(p.accept_inbound(&addr(210)), Ok(()), "a raised bound makes room at once");
    p.set_limits(PoolLimits { max_connections: 2, ..limits() });
    assert_eq!(p.accept_inbound(&addr(211)), Err(Refusal::Full), "a lowered one turns newcomers away");
    assert_eq!(p.stats().connected, 4, "peers over a lowered bound stay until they leave");
    assert_eq!(p.limits().max_banned, limits().max_banned, "the ban lists keep their size");
    p.check_invariants();
}

#[test]
fn min_peers_is_the_low_water_mark() {
    let t = Instant::now();
    let mut p = Pool::new(PoolLimits { min_peers: 2, ..limits() });
    assert!(p.needs_more_peers(), "none connected");
    assert_eq!(p.accept_inbound(&addr(1)), Ok(()));
    assert!(p.needs_more_peers(), "one of two");
    assert_eq!(p.accept_inbound(&addr(2)), Ok(()));
    assert!(!p.needs_more_peers(), "at the mark, below max_connections");
    p.disconnected(&addr(2), t);
    assert!(p.needs_more_peers());
}
