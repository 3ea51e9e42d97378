//! Unit tests of quick retries: the backoff ladder, peers the user named (never forgotten,
//! first in line) and peers that closed during the handshake.
use super::tests::addr;
use super::*;

/// The shared test limits with a small known set.
fn limits() -> PoolLimits {
    PoolLimits { max_known: 3, ..super::tests::limits() }
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn the_ladder_doubles_from_one_second_up_to_the_cap() {
    let waits: Vec<u64> = (1..=9).map(|n| quick_retry_wait(n, S(60)).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(quick_retry_wait(u32::MAX, S(60)), S(60), "no overflow");
    assert_eq!(quick_retry_wait(1, Duration::from_millis(300)), Duration::from_millis(300), "cap below 1 s");
}

/// Dials `a` when it is due at `at`, and checks nothing else is dialled.
fn dial_at(p: &mut Pool, a: PeerAddr, at: Instant) {
    p.maintain(at);
    assert_eq!(p.next_dial(at), Some(a), "due at {at:?}");
}

#[test]
fn an_explicit_peer_is_retried_quickly_and_never_forgotten() {
    let t0 = Instant::now();
    let mut p = Pool::new(limits());
    let a = addr(1);
    assert!(p.add_from(a, PeerSource::Explicit, t0));
    assert_eq!(p.next_dial(t0), Some(a));
    let mut t = t0;
    for expected in [1, 2, 4, 8, 16, 32, 60, 60, 60, 60] {
        p.connect_failed(&a, t);
        p.maintain(t + S(expected) - Duration::from_millis(1));
        assert_eq!(p.next_dial(t), None, "not before {expected} s");
        t += S(expected);
        dial_at(&mut p, a, t);
        p.check_invariants();
    }
    assert_eq!(p.source(&a), Some(PeerSource::Explicit), "ten failures, still known");
    // A disconnect after a connection is on the ladder too (it is not reset by connecting).
    p.connected(&a);
    p.disconnected(&a, t);
    p.maintain(t + S(59));
    assert_eq!(p.next_dial(t + S(59)), None);
    dial_at(&mut p, a, t + S(60));
}

#[test]
fn the_first_disconnect_of_an_explicit_peer_is_retried_after_one_second() {
    let t0 = Instant::now();
    let mut p = Pool::new(limits());
    let a = addr(1);
    p.add_from(a, PeerSource::Explicit, t0);
    assert_eq!(p.next_dial(t0), Some(a));
    p.connected(&a);
    p.disconnected(&a, t0);
    dial_at(&mut p, a, t0 + S(1));
}

#[test]
fn explicit_peers_are_never_trimmed_and_dialled_first() {
    let t0 = Instant::now();
    let mut p = Pool::new(PoolLimits { max_connecting: 1, ..limits() });
    for n in 1..=3 {
        p.add(addr(n), t0);
    }
    let named = addr(9);
    assert!(p.add_from(named, PeerSource::Explicit, t0), "kept though the known set was full");
    for n in 10..20 {
        p.add(addr(n), t0);
    }
    assert_eq!(p.source(&named), Some(PeerSource::Explicit));
    assert_eq!(p.next_dial(t0), Some(named));
    p.check_invariants();
}

#[test]
fn naming_a_known_peer_makes_it_explicit() {
    let t0 = Instant::now();
    let mut p = Pool::new(limits());
    p.add_from(addr(1), PeerSource::Pex, t0);
    p.add(addr(1), t0);
    assert_eq!(p.source(&addr(1)), Some(PeerSource::Pex), "first source kept");
    p.add_from(addr(1), PeerSource::Explicit, t0);
    assert_eq!(p.source(&addr(1)), Some(PeerSource::Explicit));
    p.check_invariants();
}

#[test]
fn a_peer_closing_during_the_handshake_climbs_the_ladder_before_failures_count() {
    let t0 = Instant::now();
    let mut p = Pool::new(limits());
    let a = addr(1);
    p.add(a, t0);
    assert_eq!(p.next_dial(t0), Some(a));
    let mut t = t0;
    for wait in [1, 2, 4, 8, 16, 32] {
        p.connect_closed(&a, t);
        t += S(wait);
        dial_at(&mut p, a, t);
    }
    // The ladder reached the cap: from here on it is an ordinary failure (60 s, 120 s, gone).
    p.connect_closed(&a, t);
    p.maintain(t + S(59));
    assert_eq!(p.next_dial(t + S(59)), None);
    t += S(60);
    dial_at(&mut p, a, t);
    p.connect_closed(&a, t);
    t += S(120);
    dial_at(&mut p, a, t);
    p.connect_closed(&a, t);
    assert_eq!(p.source(&a), None, "forgotten after max_connect_failures");
    p.check_invariants();
}

#[test]
fn an_ordinary_failure_still_waits_reconnect_delay() {
    let t0 = Instant::now();
    let mut p = Pool::new(limits());
    p.add(addr(1), t0);
    assert_eq!(p.next_dial(t0), Some(addr(1)));
    p.connect_failed(&addr(1), t0);
    p.maintain(t0 + S(59));
    assert_eq!(p.next_dial(t0 + S(59)), None);
    dial_at(&mut p, addr(1), t0 + S(60));
}
