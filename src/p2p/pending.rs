//! The event loop's tables of callers waiting for an answer: replies keyed by Kademlia query
//! (provide, bootstrap, find-peer), provider lookups in progress, and per-peer waiter lists
//! for the next ping and the next connection.
//!
//! Plain data, no I/O: the event loop ([`super::event_loop`]) fills them when a command
//! arrives and empties them when the swarm reports the outcome. Every table is bounded or
//! swept: a waiter list holds at most its `max` callers per key, and [`Waiters::sweep`] /
//! [`Lookups::take`] forget callers that gave up (their `oneshot` receiver dropped), so a caller
//! that times out leaves nothing behind.
use super::node::{NodeError, Provider, MAX_PROVIDERS_PER_LOOKUP};
use libp2p::PeerId;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Instant;
use tokio::sync::oneshot;

/// How a handle call is answered.
pub(super) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// Callers waiting for the same outcome of one key (a peer's next ping, a peer's next
/// connection), at most `max` per key. Several callers share one libp2p operation, and each
/// hears its outcome.
pub(super) struct Waiters<K, V> {
    lists: HashMap<K, Vec<oneshot::Sender<V>>>,
    max: usize,
}

impl<K: Eq + Hash, V> Waiters<K, V> {
    pub(super) fn new(max: usize) -> Waiters<K, V> {
        Waiters { lists: HashMap::new(), max }
    }

    /// Queues `reply` on `key`; hands it back when `key` already has `max` waiters.
    pub(super) fn push(&mut self, key: K, reply: oneshot::Sender<V>) -> Result<(), oneshot::Sender<V>> {
        let list = self.lists.entry(key).or_default();
        if list.len() >= self.max {
            return Err(reply);
        }
        list.push(reply);
        Ok(())
    }

    /// Answers, and forgets, everyone waiting on `key`; `answer` makes each one's value.
    pub(super) fn finish(&mut self, key: &K, mut answer: impl FnMut() -> V) {
        for reply in self.lists.remove(key).unwrap_or_default() {
            let _ = reply.send(answer());
        }
    }

    /// Forgets the waiters that gave up, and the keys left with none.
    pub(super) fn sweep(&mut self) {
        self.lists.retain(|_, list| {
            list.retain(|r| !r.is_closed());
            !list.is_empty()
        });
    }

    /// Waiters queued on all keys.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lists.values().map(Vec::len).sum()
    }
}

/// A `get_providers` in progress: the Kademlia query, then the dials of the providers it found.
pub(super) struct ProvidersLookup {
    pub(super) reply: Reply<Vec<Provider>>,
    /// Providers found, in order, at most [`MAX_PROVIDERS_PER_LOOKUP`].
    pub(super) found: Vec<PeerId>,
    /// Providers dialled and not yet connected or failed.
    pub(super) dialing: HashSet<PeerId>,
    pub(super) query_done: bool,
    pub(super) deadline: Instant,
}

impl ProvidersLookup {
    pub(super) fn new(reply: Reply<Vec<Provider>>, deadline: Instant) -> ProvidersLookup {
        ProvidersLookup { reply, found: Vec::new(), dialing: HashSet::new(), query_done: false, deadline }
    }

    /// Records a provider; false when it is ourselves, already found, or past the bound.
    pub(super) fn add_found(&mut self, peer: PeerId, me: PeerId) -> bool {
        if peer == me || self.found.contains(&peer) || self.found.len() >= MAX_PROVIDERS_PER_LOOKUP {
            return false;
        }
        self.found.push(peer);
        true
    }

    /// Complete: the query is over and every provider it found has connected or failed.
    pub(super) fn is_complete(&self) -> bool {
        self.query_done && self.dialing.is_empty()
    }

    /// Answered with what it has: past its deadline, or no one is waiting any more.
    pub(super) fn is_expired(&self, now: Instant) -> bool {
        self.deadline <= now || self.reply.is_closed()
    }
}

/// The provider lookups in progress, by query id (generic so it is testable without libp2p
/// handing out `QueryId`s).
pub(super) struct Lookups<Q> {
    map: HashMap<Q, ProvidersLookup>,
}

impl<Q: Eq + Hash + Copy> Lookups<Q> {
    pub(super) fn new() -> Lookups<Q> {
        Lookups { map: HashMap::new() }
    }

    pub(super) fn insert(&mut self, id: Q, lookup: ProvidersLookup) {
        self.map.insert(id, lookup);
    }

    pub(super) fn get_mut(&mut self, id: &Q) -> Option<&mut ProvidersLookup> {
        self.map.get_mut(id)
    }

    /// A dial (ours or anyone's) to `peer` ended: no lookup waits on it any more.
    pub(super) fn dial_ended(&mut self, peer: &PeerId) {
        for lookup in self.map.values_mut() {
            lookup.dialing.remove(peer);
        }
    }

    /// Removes and returns every lookup `done` says is finished.
    pub(super) fn take(&mut self, done: impl Fn(&ProvidersLookup) -> bool) -> Vec<(Q, ProvidersLookup)> {
        let ids: Vec<Q> = self.map.iter().filter(|(_, l)| done(l)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.map.remove(&id).map(|l| (id, l))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_waiter_on_a_key_hears_the_outcome_and_others_do_not() {
        let mut w: Waiters<u8, Result<u32, String>> = Waiters::new(4);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let (tx3, mut rx3) = oneshot::channel();
        assert!(w.push(1, tx1).is_ok() && w.push(1, tx2).is_ok() && w.push(2, tx3).is_ok());
        w.finish(&1, || Ok(7));
        assert_eq!(rx1.try_recv().unwrap(), Ok(7));
        assert_eq!(rx2.try_recv().unwrap(), Ok(7));
        assert!(rx3.try_recv().is_err(), "a waiter on another key was answered");
        assert_eq!(w.len(), 1);
        w.finish(&2, || Err("refused".into()));
        assert_eq!(rx3.try_recv().unwrap(), Err("refused".to_string()));
        assert_eq!(w.len(), 0);
        w.finish(&3, || panic!("no waiter on 3, so no answer is made"));
    }

    #[test]
    fn waiters_per_key_are_bounded() {
        let mut w: Waiters<u8, ()> = Waiters::new(2);
        let mut keep = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = oneshot::channel();
            keep.push(rx);
            assert!(w.push(1, tx).is_ok());
        }
        let (tx, _rx) = oneshot::channel();
        let refused = w.push(1, tx).expect_err("a third waiter was queued past max 2");
        assert!(!refused.is_closed(), "the refused reply is handed back usable");
        let (tx, _rx2) = oneshot::channel();
        assert!(w.push(2, tx).is_ok(), "the bound is per key");
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn sweep_forgets_waiters_that_gave_up() {
        let mut w: Waiters<u8, ()> = Waiters::new(4);
        let (tx1, rx1) = oneshot::channel();
        let (tx2, _rx2) = oneshot::channel();
        let (tx3, rx3) = oneshot::channel();
        w.push(1, tx1).unwrap();
        w.push(1, tx2).unwrap();
        w.push(2, tx3).unwrap();
        drop((rx1, rx3));
        w.sweep();
        assert_eq!(w.len(), 1);
        assert_eq!(w.lists.len(), 1, "key 2 has no waiter left and is forgotten");
    }

    fn lookup(deadline: Instant) -> (ProvidersLookup, oneshot::Receiver<Result<Vec<Provider>, NodeError>>) {
        let (tx, rx) = oneshot::channel();
        (ProvidersLookup::new(tx, deadline), rx)
    }

    #[test]
    fn providers_found_skip_ourselves_duplicates_and_the_bound() {
        let me = PeerId::random();
        let (mut l, _rx) = lookup(Instant::now());
        assert!(!l.add_found(me, me));
        let p = PeerId::random();
        assert!(l.add_found(p, me));
        assert!(!l.add_found(p, me));
        while l.found.len() < MAX_PROVIDERS_PER_LOOKUP {
            assert!(l.add_found(PeerId::random(), me));
        }
        assert!(!l.add_found(PeerId::random(), me));
        assert_eq!(l.found.len(), MAX_PROVIDERS_PER_LOOKUP);
    }

    #[test]
    fn a_lookup_completes_when_its_query_and_dials_are_over() {
        let t0 = Instant::now();
        let mut lookups: Lookups<u32> = Lookups::new();
        let (a, _rx_a) = lookup(t0 + Duration::from_secs(10));
        let (b, rx_b) = lookup(t0 + Duration::from_secs(10));
        lookups.insert(1, a);
        lookups.insert(2, b);
        let dialed = PeerId::random();
        let one = lookups.get_mut(&1).unwrap();
        one.dialing.insert(dialed);
        one.query_done = true;
        assert!(lookups.take(ProvidersLookup::is_complete).is_empty(), "a dial is still running");
        lookups.dial_ended(&dialed);
        let done = lookups.take(ProvidersLookup::is_complete);
        assert_eq!(done.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1]);
        assert!(lookups.take(|l| l.is_expired(t0)).is_empty(), "lookup 2 is neither late nor abandoned");
        drop(rx_b);
        assert_eq!(lookups.take(|l| l.is_expired(t0)).len(), 1, "lookup 2's caller gave up");
        let (c, _rx_c) = lookup(t0);
        lookups.insert(3, c);
        assert_eq!(lookups.take(|l| l.is_expired(t0)).len(), 1, "lookup 3 is at its deadline");
    }
}
