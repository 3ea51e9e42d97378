//! Unit tests of aliases: a connected peer's other address is not dialled while it stays.
use super::tests::{ip_addr, limits};
use super::*;
use std::time::Duration;

#[test]
fn a_connected_peers_listen_address_is_dialled_only_after_it_leaves() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    let conn = ip_addr([10, 0, 0, 1], 40000);
    let listen = ip_addr([10, 0, 0, 1], 6881);
    assert_eq!(p.accept_inbound(&conn), Ok(()));
    assert!(p.learn_listen_addr(&conn, listen, t));
    assert_eq!(p.next_dial(t), None, "the peer is connected already");
    p.add_from(listen, PeerSource::Pex, t);
    p.add(listen, t);
    assert_eq!(p.next_dial(t), None, "named again by PEX and a tracker: still connected");
    p.check_invariants();
    p.disconnected(&conn, t);
    assert_eq!(p.next_dial(t), None, "it waits reconnect_delay like any peer that left");
    p.maintain(t + Duration::from_secs(61));
    assert_eq!(p.next_dial(t + Duration::from_secs(61)), Some(listen));
    p.check_invariants();
}

#[test]
fn a_dial_that_reaches_a_connected_peer_is_not_repeated_while_it_stays() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    let conn = ip_addr([10, 0, 0, 1], 40000);
    let listen = ip_addr([10, 0, 0, 1], 6881);
    assert_eq!(p.accept_inbound(&conn), Ok(()));
    p.add(listen, t);
    assert_eq!(p.next_dial(t), Some(listen), "its listen address is not known to be the same peer yet");
    p.dialed_connected_peer(&listen, &conn, t);
    assert_eq!(p.stats().connecting, 0);
    p.add(listen, t);
    p.maintain(t + Duration::from_secs(3600));
    assert_eq!(p.next_dial(t + Duration::from_secs(3600)), None, "not while the connection lasts");
    // A dial in flight when the peer names its listen address, closed by the peer (which
    // refuses the duplicate), does not count as a failure and is not retried either.
    let conn2 = ip_addr([10, 0, 0, 2], 40000);
    let listen2 = ip_addr([10, 0, 0, 2], 6881);
    p.add(listen2, t);
    assert_eq!(p.next_dial(t), Some(listen2));
    assert_eq!(p.accept_inbound(&conn2), Ok(()));
    assert!(!p.learn_listen_addr(&conn2, listen2, t), "known already");
    p.connect_closed(&listen2, t);
    p.maintain(t + Duration::from_secs(3600));
    assert_eq!(p.next_dial(t + Duration::from_secs(3600)), None);
    p.check_invariants();
    // A user who removes the connection removes its alias with it.
    assert!(p.remove(&conn2));
    assert_eq!(p.stats().known, 2, "conn and listen of the first peer");
    p.check_invariants();
}

#[test]
fn a_dial_in_flight_to_a_named_address_that_reaches_another_peer_counts_as_a_connection() {
    let t = Instant::now();
    let mut p = Pool::new(limits());
    let conn = ip_addr([10, 0, 0, 1], 40000);
    let listen = ip_addr([10, 0, 0, 1], 6881);
    p.add(listen, t);
    assert_eq!(p.next_dial(t), Some(listen));
    assert_eq!(p.accept_inbound(&conn), Ok(()));
    p.learn_listen_addr(&conn, listen, t);
    assert_eq!(p.stats().connecting, 1, "the dial under way is left to its result");
    p.connected(&listen);
    assert_eq!(p.stats().connected, 2, "a peer of its own after all");
    p.check_invariants();
}
