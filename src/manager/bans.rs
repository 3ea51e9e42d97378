//! Bounded ban lists: banned peer addresses and banned source IPs, each a set with a
//! first-in first-out order.
//!
//! Bans are what a hostile swarm can inflate (every liar caught is one more entry), so both
//! lists hold at most `max` entries; past that the oldest ban is forgotten. Forgetting an old
//! ban is the lesser harm: unbounded lists would let the attacker grow our memory instead.
//!
//! IPs are compared by [`ip_key`](crate::types::ip_key): an IPv6 host is its /64 (one customer's prefix, which a
//! single host can spread over freely), an IPv4-mapped IPv6 address is its IPv4 address.
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// A set of at most `max` items that forgets the oldest first.
#[derive(Debug)]
pub struct BoundedSet<T> {
    max: usize,
    items: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: Clone + Eq + Hash> BoundedSet<T> {
    pub fn new(max: usize) -> BoundedSet<T> {
        BoundedSet { max: max.max(1), items: HashSet::new(), order: VecDeque::new() }
    }

    /// Adds `item`; returns the items forgotten to make room (oldest first).
    pub fn insert(&mut self, item: T) -> Vec<T> {
        if !self.items.insert(item.clone()) {
            return Vec::new();
        }
        self.order.push_back(item);
        let mut gone = Vec::new();
        while self.order.len() > self.max {
            let old = self.order.pop_front().expect("longer than max >= 1");
            self.items.remove(&old);
            gone.push(old);
        }
        gone
    }

    pub fn contains(&self, item: &T) -> bool {
        self.items.contains(item)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.order.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_is_forgotten_first() {
        let mut s = BoundedSet::new(2);
        assert!(s.insert(1).is_empty());
        assert!(s.insert(2).is_empty());
        assert!(s.insert(2).is_empty(), "a repeat is not a new entry");
        assert_eq!(s.insert(3), vec![1]);
        assert!(!s.contains(&1) && s.contains(&2) && s.contains(&3));
        assert_eq!(s.len(), 2);
    }
}
