//! The block reads under way for one peer: each waits for the upload limits, then reads its
//! block from storage, holding the block's share of the session's send budget.
//!
//! The blocks are kept beside the futures, in the same order, so that a choke can give up
//! the reads still under way. Left to finish, a choked peer's reads went on taking the upload
//! limit's bytes and were then rejected: a free rider's 14 KiB/s went block by block to peers
//! it had choked (each read waited up to 34 s behind the others at the limiter), its unchoked
//! peers got almost nothing, and when it held the only copy of a piece the swarm stalled
//! (`scripts/swarm-sim`).
//!
//! A cancelled request whose read is under way is given up the same way, on its own: the
//! peer got its blocks elsewhere meanwhile. Left to finish, a free rider sent its peers 200 KiB
//! of blocks they had cancelled 20 s before (eight reads at 7 KiB/s each), that traffic used up
//! the piece's worth the choker lets a holder have, and the holder lost its slot before it
//! got the piece only that free rider had (`scripts/swarm-sim`).
//!
//! Invariant: `entries` holds every read not yet yielded, cancelled or not, in the order they
//! started (so at most as many as the caller lets run); `bytes` counts those not cancelled.
use crate::storage::StorageError;
use crate::types::BlockRef;
use bytes::Bytes;
use futures::future::{AbortHandle, Abortable, Aborted};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::OwnedSemaphorePermit;

/// What a read gives back: the block, its bytes, and the budget share it holds.
pub(super) type ReadDone = (BlockRef, Result<Bytes, StorageError>, OwnedSemaphorePermit);
type BlockRead = Abortable<Pin<Box<dyn Future<Output = ReadDone> + Send>>>;

/// One read: its block, the handle that stops it, and whether it was cancelled.
struct Entry {
    block: BlockRef,
    abort: AbortHandle,
    cancelled: bool,
}

#[derive(Default)]
pub(super) struct Reads {
    futures: FuturesOrdered<BlockRead>,
    /// The reads of `futures`, in the same order.
    entries: VecDeque<Entry>,
    /// The bytes of those not cancelled.
    bytes: usize,
}

impl Reads {
    /// Reads not yet yielded, cancelled ones included (they leave in their turn).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Block bytes being read.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, b: BlockRef, read: impl Future<Output = ReadDone> + Send + 'static) {
        let (abort, registration) = AbortHandle::new_pair();
        self.bytes += b.length as usize;
        self.entries.push_back(Entry { block: b, abort, cancelled: false });
        let read: Pin<Box<dyn Future<Output = ReadDone> + Send>> = Box::pin(read);
        self.futures.push_back(Abortable::new(read, registration));
    }

    /// The next finished read, in the order they were started; cancelled ones are skipped.
    /// Cancel-safe: nothing is taken until a read has finished.
    pub async fn next(&mut self) -> Option<ReadDone> {
        loop {
            let done = self.futures.next().await?;
            let e = self.entries.pop_front().expect("an entry per read");
            match done {
                Ok(done) if !e.cancelled => {
                    self.bytes -= e.block.length as usize;
                    return Some(done);
                }
                // Aborted, or done before the cancel came and waiting for its turn: dropped
                // (its bytes were taken off and its reject sent at the cancel).
                Ok(_) | Err(Aborted) => continue,
            }
        }
    }

    /// Gives up the read of `b` if one is under way and not yet done: it takes nothing more
    /// from the rate limits and its budget share goes back as soon as its turn comes (its
    /// future is dropped). True when there was one. At most `len` steps.
    pub fn cancel(&mut self, b: BlockRef) -> bool {
        let Some(e) = self.entries.iter_mut().find(|e| e.block == b && !e.cancelled) else { return false };
        e.cancelled = true;
        e.abort.abort();
        self.bytes -= b.length as usize;
        true
    }

    /// Gives up every read unless all of them are for pieces `keep` names: returns the
    /// blocks of the given-up reads that `keep` names (to be read again) and those it does
    /// not (dropped), each in the order they were started. Reads still waiting for the rate
    /// limits take nothing more from them, and their budget shares go back at once.
    pub fn give_up(&mut self, keep: impl Fn(u32) -> bool) -> (Vec<BlockRef>, Vec<BlockRef>) {
        if self.entries.iter().all(|e| e.cancelled || keep(e.block.piece)) {
            return (Vec::new(), Vec::new());
        }
        self.futures = FuturesOrdered::new();
        self.bytes = 0;
        self.entries.drain(..).filter(|e| !e.cancelled).map(|e| e.block).partition(|b| keep(b.piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::budget::SendBudget;

    fn b(piece: u32) -> BlockRef {
        BlockRef { piece, begin: 0, length: 16384 }
    }

    /// Reads of a block of each of `pieces` that never finish (each waits on a limit that gives
    /// nothing), each holding its share of `budget`.
    fn waiting(budget: &SendBudget, pieces: &[u32]) -> Reads {
        let mut reads = Reads::default();
        for &piece in pieces {
            let permit = budget.try_take(16384).unwrap();
            reads.push(b(piece), async move {
                std::future::pending::<()>().await;
                (b(piece), Ok(Bytes::new()), permit)
            });
        }
        reads
    }

    #[tokio::test]
    async fn given_up_reads_return_their_blocks_and_budget_at_once() {
        let budget = SendBudget::new(1 << 20);
        let mut reads = waiting(&budget, &[3, 1, 3]);
        assert_eq!((reads.len(), reads.bytes(), budget.in_use()), (3, 3 * 16384, 3 * 16384));
        assert_eq!(reads.give_up(|_| true), (vec![], vec![]), "all kept: nothing is given up");
        assert_eq!(reads.len(), 3);
        assert_eq!(reads.give_up(|p| p == 1), (vec![b(1)], vec![b(3), b(3)]));
        assert_eq!((reads.len(), reads.bytes(), budget.in_use()), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_read_stops_and_gives_its_budget_back() {
        use futures::FutureExt;
        let budget = SendBudget::new(1 << 20);
        let mut reads = waiting(&budget, &[0, 1, 2]);
        assert!(reads.cancel(b(1)));
        assert!(!reads.cancel(b(1)), "cancelled once");
        assert!(!reads.cancel(b(9)), "never read");
        assert_eq!(reads.bytes(), 2 * 16384);
        // The first read still waits; polling drops the cancelled one's future, and its share.
        assert!(reads.next().now_or_never().is_none());
        assert_eq!(budget.in_use(), 2 * 16384);
        assert_eq!(reads.len(), 3, "it leaves in its turn");
        assert_eq!(reads.give_up(|_| false), (vec![], vec![b(0), b(2)]), "a cancelled read is not given up twice");
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_read_is_skipped_even_when_done() {
        let budget = SendBudget::new(1 << 20);
        let mut reads = Reads::default();
        for piece in [0, 1] {
            let permit = budget.try_take(16384).unwrap();
            reads.push(b(piece), async move { (b(piece), Ok(Bytes::new()), permit) });
        }
        assert!(reads.cancel(b(0)));
        assert_eq!(reads.next().await.unwrap().0, b(1));
        assert!(reads.is_empty() && reads.next().await.is_none());
        assert_eq!((reads.bytes(), budget.in_use()), (0, 0));
    }

    /// Two reads: of piece 0, done once the sender is used, and of piece 1, done at once.
    fn first_waits(budget: &SendBudget) -> (Reads, tokio::sync::oneshot::Sender<()>) {
        let mut reads = Reads::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let permit = budget.try_take(16384).unwrap();
        reads.push(b(0), async move {
            let _ = rx.await;
            (b(0), Ok(Bytes::new()), permit)
        });
        let permit = budget.try_take(16384).unwrap();
        reads.push(b(1), async move { (b(1), Ok(Bytes::new()), permit) });
        (reads, tx)
    }

    #[tokio::test]
    async fn a_read_done_before_its_cancel_is_dropped_in_its_turn() {
        use futures::FutureExt;
        let budget = SendBudget::new(1 << 20);
        let (mut reads, tx) = first_waits(&budget);
        // The second read finishes and waits behind the first; then its request is cancelled.
        assert!(reads.next().now_or_never().is_none());
        assert!(reads.cancel(b(1)));
        tx.send(()).unwrap();
        assert_eq!(reads.next().await.unwrap().0, b(0));
        assert!(reads.next().await.is_none(), "the cancelled block is not handed out");
        assert_eq!((reads.len(), reads.bytes(), budget.in_use()), (0, 0, 0));
    }

    #[tokio::test]
    async fn finished_reads_come_in_the_order_they_started() {
        let budget = SendBudget::new(1 << 20);
        let (mut reads, tx) = first_waits(&budget);
        tx.send(()).unwrap();
        assert_eq!(reads.next().await.unwrap().0, b(0));
        assert_eq!((reads.len(), reads.bytes()), (1, 16384));
        assert_eq!(reads.next().await.unwrap().0, b(1));
        assert!(reads.is_empty() && reads.next().await.is_none());
    }
}
