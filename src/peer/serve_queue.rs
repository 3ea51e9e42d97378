//! The requests a peer made of us and we have not started reading: block descriptors only.
//!
//! Descriptors are 12 bytes, so a peer may queue thousands (ctorrent asks for a whole 16 MiB
//! piece and more at once, and waits for ever for requests that were silently dropped); the
//! block data is read later, one block at a time, as the peer's send buffer and the session's
//! send budget allow. Bounded by [`MAX_SERVE_QUEUE`] live entries.
//!
//! Invariants: `live` holds each queued request once (a duplicate request is served once);
//! `order` holds them in arrival order, plus entries cancelled since (skipped when popped).
//! `order` never grows past twice the bound: it is compacted first, which is linear but
//! happens at most once per `MAX_SERVE_QUEUE` cancellations, so a peer that floods
//! request/cancel pairs costs constant work per message.
use crate::types::BlockRef;
use std::collections::{HashSet, VecDeque};

/// Requests one peer may have queued with us; more are refused (rejected with the fast
/// extension). ctorrent 3.3 sends 2,560 at once for 16 MiB pieces; libtorrent accepts 2,000.
pub const MAX_SERVE_QUEUE: usize = 4096;

/// What [`ServeQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Added,
    /// The same block is already queued; it is served once.
    Duplicate,
    /// The queue is full: refused.
    Full,
}

#[derive(Debug, Default)]
pub struct ServeQueue {
    order: VecDeque<BlockRef>,
    live: HashSet<BlockRef>,
}

impl ServeQueue {
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn push(&mut self, b: BlockRef) -> Queued {
        if self.live.contains(&b) {
            return Queued::Duplicate;
        }
        if self.live.len() >= MAX_SERVE_QUEUE {
            return Queued::Full;
        }
        if self.order.len() >= 2 * MAX_SERVE_QUEUE {
            self.compact();
        }
        self.live.insert(b);
        self.order.push_back(b);
        Queued::Added
    }

    /// Forgets a queued request; false when it was not queued (already read, or never asked).
    pub fn cancel(&mut self, b: &BlockRef) -> bool {
        self.live.remove(b)
    }

    /// The oldest queued request, left in the queue.
    pub fn front(&mut self) -> Option<BlockRef> {
        while let Some(b) = self.order.front() {
            if self.live.contains(b) {
                return Some(*b);
            }
            self.order.pop_front();
        }
        None
    }

    /// Takes the oldest queued request.
    pub fn pop(&mut self) -> Option<BlockRef> {
        while let Some(b) = self.order.pop_front() {
            if self.live.remove(&b) {
                return Some(b);
            }
        }
        None
    }

    /// Puts requests taken from the front back there, in their order (reads given up before
    /// they were done). The queue may pass its bound by these few, which it held a moment ago.
    pub fn requeue_front(&mut self, blocks: Vec<BlockRef>) {
        for b in blocks.into_iter().rev() {
            if self.live.insert(b) {
                self.order.push_front(b);
            }
        }
    }

    /// Removes and returns, oldest first, every queued request `keep` says no to.
    pub fn drain_unless(&mut self, keep: impl Fn(&BlockRef) -> bool) -> Vec<BlockRef> {
        let mut dropped = Vec::new();
        let live = &mut self.live;
        self.order.retain(|b| {
            if !live.contains(b) {
                return false;
            }
            if keep(b) {
                return true;
            }
            live.remove(b);
            dropped.push(*b);
            false
        });
        self.shrink_if_empty();
        dropped
    }

    fn compact(&mut self) {
        let live = &self.live;
        self.order.retain(|b| live.contains(b));
        self.shrink_if_empty();
    }

    /// A peer that once queued thousands does not keep that memory once served.
    fn shrink_if_empty(&mut self) {
        if self.live.is_empty() {
            self.order = VecDeque::new();
            self.live = HashSet::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(piece: u32, begin: u32) -> BlockRef {
        BlockRef { piece, begin, length: 16384 }
    }

    #[test]
    fn serves_in_order_once_each_and_skips_cancelled() {
        let mut q = ServeQueue::default();
        assert_eq!(q.push(b(0, 0)), Queued::Added);
        assert_eq!(q.push(b(0, 16384)), Queued::Added);
        assert_eq!(q.push(b(0, 0)), Queued::Duplicate);
        assert_eq!(q.push(b(1, 0)), Queued::Added);
        assert!(q.cancel(&b(0, 16384)));
        assert!(!q.cancel(&b(0, 16384)), "cancelled once");
        assert_eq!(q.len(), 2);
        assert_eq!(q.front(), Some(b(0, 0)));
        assert_eq!(q.pop(), Some(b(0, 0)));
        assert_eq!(q.front(), Some(b(1, 0)));
        assert_eq!(q.pop(), Some(b(1, 0)));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn holds_thousands_then_refuses() {
        let mut q = ServeQueue::default();
        for i in 0..MAX_SERVE_QUEUE as u32 {
            assert_eq!(q.push(b(i / 1024, (i % 1024) * 16384)), Queued::Added);
        }
        assert_eq!(q.push(b(999, 0)), Queued::Full);
        assert!(q.cancel(&b(0, 0)));
        assert_eq!(q.push(b(999, 0)), Queued::Added, "room again after a cancel");
    }

    #[test]
    fn request_cancel_floods_stay_bounded() {
        let mut q = ServeQueue::default();
        q.push(b(7, 0));
        for i in 0..100_000u32 {
            let x = b(1, (i % 1024) * 16384);
            assert_eq!(q.push(x), Queued::Added);
            assert!(q.cancel(&x));
            assert!(q.order.len() <= 2 * MAX_SERVE_QUEUE);
        }
        assert_eq!(q.pop(), Some(b(7, 0)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn requeued_requests_come_first_in_their_order() {
        let mut q = ServeQueue::default();
        q.push(b(5, 0));
        q.push(b(1, 0));
        q.requeue_front(vec![b(2, 0), b(3, 0), b(1, 0)]);
        let order: Vec<BlockRef> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![b(2, 0), b(3, 0), b(5, 0), b(1, 0)], "a request still queued is not doubled");
    }

    #[test]
    fn drain_unless_keeps_what_it_is_told() {
        let mut q = ServeQueue::default();
        for p in 0..4 {
            q.push(b(p, 0));
        }
        q.cancel(&b(1, 0));
        assert_eq!(q.drain_unless(|x| x.piece == 2), vec![b(0, 0), b(3, 0)]);
        assert_eq!(q.pop(), Some(b(2, 0)));
        assert!(q.is_empty());
    }
}
