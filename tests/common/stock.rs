//! Stock rust-libp2p parts for tests that play a stranger's node: a swarm listening on
//! 127.0.0.1, and the protobuf varints of the messages such a node writes by hand.
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm};

/// Listens on a fresh 127.0.0.1 TCP port and returns the address once `swarm` reports it.
/// Events before it are dropped: call it before dialling anything.
pub async fn listen_on_loopback<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Appends `n` as a protobuf varint.
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Takes a protobuf varint off the front of `bytes`; panics if it is cut short.
pub fn read_varint(bytes: &mut &[u8]) -> u64 {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().expect("a truncated varint");
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
    }
    n
}
