//! BEP 11 peer exchange, the torrent's bookkeeping: which connected peers take `ut_pex` and
//! under which id, what each has been told, when it may be told again, and how many peers
//! each may still teach us. Plain data with `now` passed in; the torrent task does the I/O.
//!
//! Bounds: each PEX-capable peer gets at most one message per `interval` (the first at the
//! first tick after its extension handshake), with at most [`MAX_PEX_SEND`] added and as
//! many dropped peers (libtorrent sends 50 too); one connection may teach us at most
//! [`MAX_PEX_LEARNED`] addresses over its life, the rest is ignored. A private torrent
//! (BEP 27) keeps this disabled: nothing is sent, nothing learned.
use crate::types::PeerKey;
use crate::wire::pex::{PexMessage, PexPeer};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Added (and, separately, dropped) peers in one message we send.
pub const MAX_PEX_SEND: usize = 50;
/// Addresses one connection may teach us over its life.
pub const MAX_PEX_LEARNED: usize = 500;

/// One connected peer as PEX sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertised {
    pub key: PeerKey,
    /// Where it accepts connections.
    pub addr: SocketAddr,
    /// BEP 11 flags ([`crate::wire::pex::flags`]).
    pub flags: u8,
}

#[derive(Debug)]
struct Link {
    /// The id it receives `ut_pex` under.
    id: u8,
    told: HashSet<SocketAddr>,
    next_at: Instant,
    learned: usize,
}

/// The PEX state of one torrent.
#[derive(Debug)]
pub struct Pex {
    enabled: bool,
    interval: Duration,
    links: HashMap<PeerKey, Link>,
    /// The listen address each inbound peer told us (its source port names nothing).
    listen: HashMap<PeerKey, SocketAddr>,
}

impl Pex {
    pub fn new(enabled: bool, interval: Duration) -> Pex {
        Pex { enabled, interval, links: HashMap::new(), listen: HashMap::new() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A peer's extension handshake: `id` is its `m["ut_pex"]` (absent or 0: no PEX), and
    /// `listen` the address an inbound peer said it listens on. A repeated handshake keeps
    /// what the peer was told.
    pub fn on_extensions(&mut self, key: PeerKey, id: Option<u8>, listen: Option<SocketAddr>, now: Instant) {
        if let Some(l) = listen {
            self.listen.insert(key, l);
        }
        match id.filter(|i| *i != 0 && self.enabled) {
            Some(id) => self.links.entry(key).or_insert_with(|| Link::new(id, now)).id = id,
            None => {
                self.links.remove(&key);
            }
        }
    }

    /// The listen address an inbound peer told us.
    pub fn listen_addr(&self, key: PeerKey) -> Option<SocketAddr> {
        self.listen.get(&key).copied()
    }

    pub fn remove(&mut self, key: PeerKey) {
        self.links.remove(&key);
        self.listen.remove(&key);
    }

    /// How many of the `offered` addresses in a message from `key` may be learned (and
    /// counts them against its allowance); 0 when disabled or it never said it does PEX.
    pub fn may_learn(&mut self, key: PeerKey, offered: usize) -> usize {
        let Some(link) = self.links.get_mut(&key).filter(|_| self.enabled) else { return 0 };
        let n = offered.min(MAX_PEX_LEARNED - link.learned);
        link.learned += n;
        n
    }

    /// The messages due now, given the connected peers: for each peer whose wait is over,
    /// the peers connected now it was not told of, and those it was told of that are gone.
    /// Empty messages are not sent, but the wait restarts all the same.
    pub fn due(&mut self, now: Instant, connected: &[Advertised]) -> Vec<(PeerKey, u8, PexMessage)> {
        let mut out = Vec::new();
        let current: HashSet<SocketAddr> = connected.iter().map(|a| a.addr).collect();
        for (key, link) in self.links.iter_mut().filter(|(_, l)| l.next_at <= now) {
            link.next_at = now + self.interval;
            let own = connected.iter().find(|a| a.key == *key).map(|a| a.addr);
            let added: Vec<PexPeer> = connected
                .iter()
                .filter(|a| a.key != *key && Some(a.addr) != own && !link.told.contains(&a.addr))
                .take(MAX_PEX_SEND)
                .map(|a| PexPeer { addr: a.addr, flags: Some(a.flags) })
                .collect();
            let dropped: Vec<SocketAddr> =
                link.told.iter().filter(|a| !current.contains(a)).take(MAX_PEX_SEND).copied().collect();
            for a in &dropped {
                link.told.remove(a);
            }
            link.told.extend(added.iter().map(|p| p.addr));
            if !added.is_empty() || !dropped.is_empty() {
                out.push((*key, link.id, PexMessage { added, dropped }));
            }
        }
        out
    }
}

impl Link {
    fn new(id: u8, now: Instant) -> Link {
        Link { id, told: HashSet::new(), next_at: now, learned: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pex::flags;

    fn adv(key: PeerKey, port: u16) -> Advertised {
        Advertised { key, addr: SocketAddr::from(([10, 0, 0, 1], port)), flags: flags::REACHABLE }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn first_message_at_once_then_diffs_at_most_once_an_interval() {
        let t0 = Instant::now();
        let mut pex = Pex::new(true, MIN);
        pex.on_extensions(1, Some(7), None, t0);
        let m = pex.due(t0, &[adv(1, 1), adv(2, 2), adv(3, 3)]);
        assert_eq!(m.len(), 1);
        let (key, id, msg) = &m[0];
        assert_eq!((*key, *id), (1, 7));
        let mut ports: Vec<u16> = msg.added.iter().map(|p| p.addr.port()).collect();
        ports.sort();
        assert_eq!(ports, [2, 3], "not its own address");
        assert!(pex.due(t0 + MIN - Duration::from_millis(1), &[adv(1, 1), adv(4, 4)]).is_empty(), "too soon");
        let m = pex.due(t0 + MIN, &[adv(1, 1), adv(3, 3), adv(4, 4)]);
        assert_eq!(m[0].2.added.iter().map(|p| p.addr.port()).collect::<Vec<_>>(), [4]);
        assert_eq!(m[0].2.dropped.iter().map(|a| a.port()).collect::<Vec<_>>(), [2]);
        assert!(pex.due(t0 + 2 * MIN, &[adv(1, 1), adv(3, 3), adv(4, 4)]).is_empty(), "nothing new: nothing sent");
    }

    #[test]
    fn at_most_fifty_a_message_and_the_rest_next_time() {
        let t0 = Instant::now();
        let mut pex = Pex::new(true, MIN);
        pex.on_extensions(1, Some(2), None, t0);
        let peers: Vec<Advertised> = (0..120).map(|i| adv(i + 10, i as u16 + 10)).collect();
        assert_eq!(pex.due(t0, &peers)[0].2.added.len(), MAX_PEX_SEND);
        assert_eq!(pex.due(t0 + MIN, &peers)[0].2.added.len(), MAX_PEX_SEND);
        assert_eq!(pex.due(t0 + 2 * MIN, &peers)[0].2.added.len(), 20);
        let dropped = pex.due(t0 + 3 * MIN, &[]);
        assert_eq!(dropped[0].2.dropped.len(), MAX_PEX_SEND);
    }

    #[test]
    fn peers_without_ut_pex_and_private_torrents_get_nothing_and_teach_nothing() {
        let t0 = Instant::now();
        let mut pex = Pex::new(true, MIN);
        pex.on_extensions(1, None, None, t0);
        pex.on_extensions(2, Some(0), None, t0);
        assert!(pex.due(t0, &[adv(1, 1), adv(2, 2), adv(3, 3)]).is_empty());
        assert_eq!(pex.may_learn(1, 10), 0);
        let mut private = Pex::new(false, MIN);
        private.on_extensions(1, Some(2), None, t0);
        assert!(private.due(t0, &[adv(1, 1), adv(2, 2)]).is_empty());
        assert_eq!(private.may_learn(1, 10), 0);
    }

    #[test]
    fn one_connection_teaches_at_most_max_pex_learned() {
        let t0 = Instant::now();
        let mut pex = Pex::new(true, MIN);
        pex.on_extensions(1, Some(2), None, t0);
        let mut total = 0;
        for _ in 0..10 {
            total += pex.may_learn(1, 200);
        }
        assert_eq!(total, MAX_PEX_LEARNED);
        assert_eq!(pex.may_learn(1, 1), 0);
        // A repeated extension handshake does not refill the allowance.
        pex.on_extensions(1, Some(3), None, t0);
        assert_eq!(pex.may_learn(1, 1), 0);
    }

    #[test]
    fn inbound_listen_addresses_are_remembered_until_the_peer_goes() {
        let t0 = Instant::now();
        let mut pex = Pex::new(true, MIN);
        let l = SocketAddr::from(([10, 0, 0, 9], 6881));
        pex.on_extensions(5, None, Some(l), t0);
        assert_eq!(pex.listen_addr(5), Some(l));
        pex.remove(5);
        assert_eq!(pex.listen_addr(5), None);
    }
}
