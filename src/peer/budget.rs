//! The session's send budget: bytes of block data read for peers and not yet handed to
//! their sockets, across every peer of every torrent.
//!
//! Each peer task takes a block's length from the budget before it reads the block and
//! gives it back when its sink has the bytes. A per-peer buffer alone bounds one peer; this
//! bounds the sum, so 200 peers that stop reading cost `max_send_buffer`, not 200 buffers.
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone, Debug)]
pub struct SendBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl SendBudget {
    pub fn new(total_bytes: usize) -> SendBudget {
        let total = total_bytes.min(Semaphore::MAX_PERMITS);
        SendBudget { bytes: Arc::new(Semaphore::new(total)), total }
    }

    /// `n` bytes if they are free now.
    pub fn try_take(&self, n: u32) -> Option<OwnedSemaphorePermit> {
        self.bytes.clone().try_acquire_many_owned(self.clamp(n)).ok()
    }

    /// Waits for `n` bytes. Cancel-safe: dropping the wait gives up its place in the queue.
    pub async fn take(&self, n: u32) -> OwnedSemaphorePermit {
        self.bytes.clone().acquire_many_owned(self.clamp(n)).await.expect("the budget's semaphore is never closed")
    }

    /// Bytes taken right now, for diagnostics.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    /// The share a block of `n` bytes takes: a block larger than the whole budget takes all
    /// of it rather than waiting forever.
    pub fn share(&self, n: u32) -> usize {
        (n as usize).min(self.total).max(1)
    }

    fn clamp(&self, n: u32) -> u32 {
        self.share(n) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_come_back_when_the_permit_drops() {
        let b = SendBudget::new(100);
        let p = b.try_take(60).unwrap();
        assert!(b.try_take(60).is_none());
        assert_eq!(b.in_use(), 60);
        drop(p);
        assert!(b.try_take(60).is_some());
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn a_block_larger_than_the_budget_takes_all_of_it() {
        let b = SendBudget::new(10);
        let p = b.take(64).await;
        assert_eq!(p.num_permits(), 10);
        assert!(b.try_take(1).is_none());
    }
}
