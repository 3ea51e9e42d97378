//! The block reads under way for one peer: each waits for the upload limits, then reads its
//! block from storage, holding the block's share of the session's send budget.
//!
//! The blocks are kept beside the futures, in the same order, so that a choke can give up
//! the reads still under way. Left to finish, a choked peer's reads went on taking the upload
//! limit's bytes and were then rejected: a free rider's 14 KiB/s went block by block to peers
//! it had choked (each read waited up to 34 s behind the others at the limiter), its unchoked
//! peers got almost nothing, and when it held the only copy of a piece the swarm stalled
//! (`scripts/swarm-sim`).
use crate::storage::StorageError;
use crate::types::BlockRef;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::OwnedSemaphorePermit;

/// What a read gives back: the block, its bytes, and the budget share it holds.
pub(super) type ReadDone = (BlockRef, Result<Bytes, StorageError>, OwnedSemaphorePermit);
type BlockRead = Pin<Box<dyn Future<Output = ReadDone> + Send>>;

#[derive(Default)]
pub(super) struct Reads {
    futures: FuturesOrdered<BlockRead>,
    /// The blocks of `futures`, in the same order.
    blocks: VecDeque<BlockRef>,
    /// Their bytes.
    bytes: usize,
}

impl Reads {
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Block bytes being read.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, b: BlockRef, read: impl Future<Output = ReadDone> + Send + 'static) {
        self.bytes += b.length as usize;
        self.blocks.push_back(b);
        self.futures.push_back(Box::pin(read));
    }

    /// The next finished read, in the order they were started. Cancel-safe: nothing is
    /// taken until a read has finished.
    pub async fn next(&mut self) -> Option<ReadDone> {
        let done = self.futures.next().await?;
        let b = self.blocks.pop_front().expect("a block per read");
        self.bytes -= b.length as usize;
        Some(done)
    }

    /// Gives up every read unless all of them are for pieces `keep` names: returns the
    /// blocks of the given-up reads that `keep` names (to be read again) and those it does
    /// not (dropped), each in the order they were started. Reads still waiting for the rate
    /// limits take nothing more from them, and their budget shares go back at once.
    pub fn give_up(&mut self, keep: impl Fn(u32) -> bool) -> (Vec<BlockRef>, Vec<BlockRef>) {
        if self.blocks.iter().all(|b| keep(b.piece)) {
            return (Vec::new(), Vec::new());
        }
        self.futures = FuturesOrdered::new();
        self.bytes = 0;
        self.blocks.drain(..).partition(|b| keep(b.piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::budget::SendBudget;

    fn b(piece: u32) -> BlockRef {
        BlockRef { piece, begin: 0, length: 16384 }
    }

    #[tokio::test]
    async fn given_up_reads_return_their_blocks_and_budget_at_once() {
        let budget = SendBudget::new(1 << 20);
        let mut reads = Reads::default();
        for piece in [3, 1, 3] {
            let permit = budget.try_take(16384).unwrap();
            // Never finishes: a read waiting on a limit that gives nothing.
            reads.push(b(piece), async move {
                std::future::pending::<()>().await;
                (b(piece), Ok(Bytes::new()), permit)
            });
        }
        assert_eq!((reads.len(), reads.bytes(), budget.in_use()), (3, 3 * 16384, 3 * 16384));
        assert_eq!(reads.give_up(|_| true), (vec![], vec![]), "all kept: nothing is given up");
        assert_eq!(reads.len(), 3);
        assert_eq!(reads.give_up(|p| p == 1), (vec![b(1)], vec![b(3), b(3)]));
        assert_eq!((reads.len(), reads.bytes(), budget.in_use()), (0, 0, 0));
    }

    #[tokio::test]
    async fn finished_reads_come_in_the_order_they_started() {
        let budget = SendBudget::new(1 << 20);
        let mut reads = Reads::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let permit = budget.try_take(16384).unwrap();
        reads.push(b(0), async move {
            let _ = rx.await;
            (b(0), Ok(Bytes::new()), permit)
        });
        let permit = budget.try_take(16384).unwrap();
        reads.push(b(1), async move { (b(1), Ok(Bytes::new()), permit) });
        tx.send(()).unwrap();
        assert_eq!(reads.next().await.unwrap().0, b(0));
        assert_eq!((reads.len(), reads.bytes()), (1, 16384));
        assert_eq!(reads.next().await.unwrap().0, b(1));
        assert!(reads.is_empty() && reads.next().await.is_none());
    }
}
