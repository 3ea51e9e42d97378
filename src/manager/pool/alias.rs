//! Other addresses of connected peers. An inbound peer names the address it listens on in its
//! extension handshake (BEP 10 `p`), and a dial can reach a peer that is already connected
//! under another address. While that connection lasts, such an address is `Aliased`: it is
//! not dialled, because a dial would only reach the same peer again, and the peer refuses
//! the duplicate. Without this, two peers that each knew the other's listen address
//! redialled it every time a tracker or PEX named it again: in a 40-peer swarm that was
//! about ten wasted handshakes a second per peer.
//!
//! When the connection closes, its alias waits `reconnect_delay` and is then dialled like
//! any other address. A connection has one alias: a peer that repeats its extension
//! handshake with new ports replaces its alias, and the old one is forgotten unless it is
//! in use, so this cannot grow the pool.
use super::index::State;
use super::{after, Pool, PoolLimits};
use crate::types::{PeerAddr, PeerSource};
use std::collections::HashMap;
use std::time::Instant;

/// The links between connections and their aliases, both ways, kept in step.
#[derive(Debug, Default)]
pub(super) struct Aliases {
    of_conn: HashMap<PeerAddr, PeerAddr>,
    conn_of: HashMap<PeerAddr, PeerAddr>,
}

impl Aliases {
    /// The alias of connection `conn`.
    pub(super) fn of(&self, conn: &PeerAddr) -> Option<PeerAddr> {
        self.of_conn.get(conn).copied()
    }

    /// The connection `alias` is an alias of.
    pub(super) fn conn(&self, alias: &PeerAddr) -> Option<PeerAddr> {
        self.conn_of.get(alias).copied()
    }

    /// Links `alias` to `conn`; returns the alias `conn` had before.
    fn link(&mut self, conn: PeerAddr, alias: PeerAddr) -> Option<PeerAddr> {
        self.unlink(&alias);
        let old = self.of_conn.insert(conn, alias);
        if let Some(o) = old {
            self.conn_of.remove(&o);
        }
        self.conn_of.insert(alias, conn);
        old
    }

    /// Removes every link of `addr`, as a connection or as an alias. Returns its alias
    /// when `addr` was a connection.
    pub(super) fn unlink(&mut self, addr: &PeerAddr) -> Option<PeerAddr> {
        if let Some(conn) = self.conn_of.remove(addr) {
            self.of_conn.remove(&conn);
        }
        let alias = self.of_conn.remove(addr)?;
        self.conn_of.remove(&alias);
        Some(alias)
    }

    #[cfg(test)]
    pub(super) fn links(&self) -> impl Iterator<Item = (&PeerAddr, &PeerAddr)> {
        assert_eq!(self.of_conn.len(), self.conn_of.len(), "alias maps out of step");
        self.of_conn.iter()
    }
}

impl Pool {
    /// The listen address an inbound peer on connection `conn` told us (BEP 10 `p`): known
    /// from now on, and not dialled while `conn` lasts. Returns whether `listen` was added as
    /// a new entry.
    pub fn learn_listen_addr(&mut self, conn: &PeerAddr, listen: PeerAddr, now: Instant) -> bool {
        if listen == *conn || !listen.is_dialable() || self.aliases.of(conn) == Some(listen) {
            return false;
        }
        if self.entries.get(conn).is_none_or(|e| e.state != State::Connected) {
            return false;
        }
        let added = self.add_from(listen, PeerSource::Listen, now);
        if self.entries.get(&listen).is_some_and(|e| e.state != State::Connected && e.state != State::Banned) {
            self.alias(*conn, listen);
        }
        added
    }

    /// A dial to `addr` reached the peer connected at `conn`: `addr` is its other address.
    pub fn dialed_connected_peer(&mut self, addr: &PeerAddr, conn: &PeerAddr, now: Instant) {
        let connecting = self.entries.get(addr).is_some_and(|e| e.state == State::Connecting);
        if connecting && self.entries.get(conn).is_some_and(|e| e.state == State::Connected) {
            self.alias(*conn, *addr);
            self.keep_aliased(addr);
        } else {
            self.connect_failed(addr, now);
        }
    }

    /// Links `alias` to connected `conn` and sets it aside (unless a dial to it is under way:
    /// its result does that). The alias `conn` had before is forgotten unless it is in use.
    fn alias(&mut self, conn: PeerAddr, alias: PeerAddr) {
        if let Some(old) = self.aliases.link(conn, alias).filter(|o| *o != alias) {
            let unused = self.entries.get(&old).is_some_and(|o| o.state == State::Aliased || o.is_queued());
            if unused && self.source(&old) != Some(PeerSource::Explicit) {
                self.forget(&old);
            }
        }
        if self.entries.get(&alias).is_some_and(|e| e.is_queued()) {
            self.keep_aliased(&alias);
        }
        self.rebalance();
    }

    /// Sets `addr` aside if it is linked as an alias (a failed dial to it then does not
    /// count); returns whether it was.
    pub(super) fn keep_aliased(&mut self, addr: &PeerAddr) -> bool {
        if self.aliases.conn(addr).is_none() {
            return false;
        }
        self.update(addr, |e| {
            e.state = State::Aliased;
            e.failures = 0;
        });
        self.rebalance();
        true
    }

    /// Connection `conn` is gone: its alias (if any) is dialled again after `now` plus
    /// `reconnect_delay`.
    pub(super) fn release_alias(&mut self, conn: &PeerAddr, now: Instant) {
        let Some(alias) = self.aliases.unlink(conn) else { return };
        if self.entries.get(&alias).is_some_and(|e| e.state == State::Aliased) {
            let PoolLimits { reconnect_delay, .. } = self.limits;
            self.set_state(&alias, State::Waiting(after(now, reconnect_delay)));
            self.trim_known();
            self.rebalance();
        }
    }
}
