//! Cache: recently read whole pieces, so serving the 64 blocks of a 1 MiB piece costs one
//! disk read.
//!
//! One cache per process ([`PieceCache`], made by the session and handed to every torrent), so
//! its bound holds however many torrents are seeded: a cache per torrent let a peer that asks
//! each torrent of a daemon for a few first blocks make it hold 32 MiB per torrent. Each
//! torrent's storage reads through its own [`TorrentCache`], which keys its pieces apart from
//! the other torrents' and forgets them when the storage is dropped.
//!
//! Entries are `Arc<OnceCell<Bytes>>` slots in least-recently-used order, bounded both by count
//! and by bytes (at least one entry is always kept, so a piece bigger than the byte budget still
//! works). Room is made by dropping the least recently used piece of the torrent holding the
//! largest share of the cache, so one torrent's busy (or hostile) peer cannot push the others'
//! pieces out. Concurrent requests for the same uncached piece share one slot and so one read.
//! The `std::sync::Mutex` guards only the slot list and is never held across `.await`; the read
//! itself happens outside it.
//!
//! A slot is dropped when its piece is (re)written, so a piece read before it was on disk (e.g.
//! sparse zeros) can never be served afterwards: requests after the write get a fresh slot.
//!
//! The buffer of a dropped piece that nothing else holds is kept (up to [`MAX_SPARE`] of them)
//! for the next piece read: zeroing a fresh 1 MiB buffer per piece was 9 % of a seeder's CPU.
use crate::metrics::metrics;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

type Slot = Arc<OnceCell<Bytes>>;

/// Buffers of dropped pieces kept for reuse (as many as whole-piece reads run at once).
pub const MAX_SPARE: usize = 4;

/// A cached piece: which torrent's storage (its [`TorrentCache`]) and which piece.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    owner: u64,
    index: u32,
}

struct Entry {
    key: Key,
    size: u64,
    slot: Slot,
}

#[derive(Default)]
struct Lru {
    /// Least recently used first.
    entries: VecDeque<Entry>,
    bytes: u64,
    spare: Vec<BytesMut>,
}

impl Lru {
    /// Drops `e` from the accounting; keeps its buffer if nothing else holds it.
    fn retire(&mut self, e: Entry) {
        self.bytes -= e.size;
        metrics().add_piece_cache_bytes(-(e.size as i64));
        if self.spare.len() >= MAX_SPARE {
            return;
        }
        let kept = Arc::try_unwrap(e.slot).ok().and_then(OnceCell::into_inner).map(Bytes::try_into_mut);
        if let Some(Ok(buf)) = kept {
            self.spare.push(buf);
        }
    }

    /// Which entry to drop to make room for the newest (the last, never the victim itself):
    /// the least recently used piece of the torrent holding the largest share of the others,
    /// a torrent's share being the larger of its part of `max_pieces` and of `max_bytes`. So
    /// with one torrent this is plain LRU, and with several, a peer that makes one torrent read
    /// piece after piece pushes out that torrent's own pieces, whether its pieces are small
    /// (the count binds) or large (the bytes do). Needs at least two entries.
    fn victim(&self, max_pieces: usize, max_bytes: u64) -> usize {
        let mut older = self.entries.range(..self.entries.len() - 1);
        // (owner, pieces, bytes) for each torrent with an older entry.
        let mut held: Vec<(u64, u64, u64)> = Vec::new();
        for e in older.clone() {
            match held.iter_mut().find(|(owner, ..)| *owner == e.key.owner) {
                Some((_, pieces, bytes)) => (*pieces, *bytes) = (*pieces + 1, *bytes + e.size),
                None => held.push((e.key.owner, 1, e.size)),
            }
        }
        // pieces / max_pieces against bytes / max_bytes, both scaled by max_pieces * max_bytes.
        let share = |&(_, pieces, bytes): &(u64, u64, u64)| {
            (u128::from(pieces) * u128::from(max_bytes.max(1))).max(u128::from(bytes) * max_pieces as u128)
        };
        let (owner, ..) = held.into_iter().max_by_key(share).expect("at least two entries");
        older.position(|e| e.key.owner == owner).expect("the owner holds an older entry")
    }

    fn position(&self, key: Key) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }
}

struct Shared {
    max_pieces: usize,
    max_bytes: u64,
    lru: Mutex<Lru>,
    next_owner: AtomicU64,
    /// Permits for whole-piece reads under way.
    loads: Arc<Semaphore>,
}

/// The process's piece cache; clones share it.
#[derive(Clone)]
pub struct PieceCache {
    shared: Arc<Shared>,
}

impl PieceCache {
    /// At most `max_pieces` pieces and `max_bytes` bytes (but at least one piece), and
    /// `max_loads` whole-piece reads at once.
    pub fn new(max_pieces: usize, max_bytes: u64, max_loads: usize) -> PieceCache {
        let shared = Shared {
            max_pieces: max_pieces.max(1),
            max_bytes,
            lru: Mutex::new(Lru::default()),
            next_owner: AtomicU64::new(0),
            loads: Arc::new(Semaphore::new(max_loads)),
        };
        PieceCache { shared: Arc::new(shared) }
    }

    /// A view for one torrent's storage, its pieces keyed apart from every other view's.
    pub fn for_torrent(&self) -> TorrentCache {
        let owner = self.shared.next_owner.fetch_add(1, Ordering::Relaxed);
        TorrentCache { cache: self.clone(), owner }
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.shared.lru.lock().expect("piece cache poisoned")
    }

    /// Pieces and bytes cached, over all torrents (the gauge `shoal_piece_cache_bytes` tracks
    /// the bytes).
    #[cfg(test)]
    fn usage(&self) -> (usize, u64) {
        let lru = self.lru();
        (lru.entries.len(), lru.bytes)
    }

    fn slot(&self, key: Key, size: u64) -> Slot {
        let mut lru = self.lru();
        if let Some(pos) = lru.position(key) {
            let e = lru.entries.remove(pos).expect("position is in range");
            let slot = e.slot.clone();
            lru.entries.push_back(e);
            return slot;
        }
        let slot = Slot::default();
        lru.entries.push_back(Entry { key, size, slot: slot.clone() });
        lru.bytes += size;
        metrics().add_piece_cache_bytes(size as i64);
        let (max_pieces, max_bytes) = (self.shared.max_pieces, self.shared.max_bytes);
        while lru.entries.len() > 1 && (lru.entries.len() > max_pieces || lru.bytes > max_bytes) {
            let pos = lru.victim(max_pieces, max_bytes);
            let e = lru.entries.remove(pos).expect("victim is in range");
            lru.retire(e);
        }
        slot
    }

    /// Forgets the piece `key` names (there is one entry per key at most), if cached and
    /// `pred` picks it.
    fn remove(&self, key: Key, pred: impl Fn(&Entry) -> bool) {
        let mut lru = self.lru();
        let pos = lru.position(key).filter(|&pos| pred(&lru.entries[pos]));
        if let Some(e) = pos.and_then(|pos| lru.entries.remove(pos)) {
            lru.retire(e);
        }
    }

    /// Forgets every piece `pred` picks.
    fn remove_all(&self, pred: impl Fn(&Entry) -> bool) {
        let mut lru = self.lru();
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = lru.entries.drain(..).partition(|e| pred(e));
        lru.entries = kept.into();
        for e in gone {
            lru.retire(e);
        }
    }
}

/// One torrent's storage's view of the [`PieceCache`]; dropping it forgets its pieces.
pub struct TorrentCache {
    cache: PieceCache,
    owner: u64,
}

impl TorrentCache {
    fn key(&self, index: u32) -> Key {
        Key { owner: self.owner, index }
    }

    /// The piece `index` (of `size` bytes), from the cache or by running `load` once.
    pub async fn get<E, F, Fut>(&self, index: u32, size: u32, load: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let slot = self.cache.slot(self.key(index), u64::from(size));
        let result = slot.get_or_try_init(load).await.cloned();
        if result.is_err() {
            // Don't let a failed read occupy the budget; the next request retries.
            self.cache.remove(self.key(index), |e| Arc::ptr_eq(&e.slot, &slot));
        }
        result
    }

    /// A permit to read a whole piece, if fewer than the process's bound are under way.
    pub fn try_load(&self) -> Option<OwnedSemaphorePermit> {
        self.cache.shared.loads.clone().try_acquire_owned().ok()
    }

    /// A buffer of `size` bytes to read a piece into: a dropped piece's if one is kept (its old
    /// bytes still in it: the reader overwrites all of them or fails), else a zeroed one.
    pub fn buffer(&self, size: usize) -> BytesMut {
        let spare = self.cache.lru().spare.pop();
        match spare {
            // Shorter: cut; longer (the last piece's buffer, say): only the new part is zeroed.
            Some(mut buf) => {
                buf.resize(size, 0);
                buf
            }
            None => BytesMut::zeroed(size),
        }
    }

    /// The piece `index` if it is cached and loaded (no load is started or waited for).
    pub fn loaded(&self, index: u32) -> Option<Bytes> {
        let lru = self.cache.lru();
        lru.position(self.key(index)).and_then(|pos| lru.entries[pos].slot.get().cloned())
    }

    /// Whether piece `index` has a slot: loaded, or being loaded.
    pub fn has(&self, index: u32) -> bool {
        self.cache.lru().position(self.key(index)).is_some()
    }

    /// Forgets piece `index` (called after it is written).
    pub fn invalidate(&self, index: u32) {
        self.cache.remove(self.key(index), |_| true);
    }

    #[cfg(test)]
    fn cached(&self) -> Vec<u32> {
        self.cache.lru().entries.iter().filter(|e| e.key.owner == self.owner).map(|e| e.key.index).collect()
    }
}

impl Drop for TorrentCache {
    fn drop(&mut self) {
        let owner = self.owner;
        self.cache.remove_all(|e| e.key.owner == owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn load(cache: &TorrentCache, index: u32, size: u32, loads: &AtomicU32) -> Bytes {
        cache
            .get(index, size, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(Bytes::from(vec![index as u8; size as usize]))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn hits_do_not_reload_and_lru_evicts_oldest() {
        let cache = PieceCache::new(2, 1 << 20, 4).for_torrent();
        let loads = AtomicU32::new(0);
        load(&cache, 1, 4, &loads).await;
        load(&cache, 2, 4, &loads).await;
        load(&cache, 1, 4, &loads).await;
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        load(&cache, 3, 4, &loads).await; // evicts 2, the least recently used
        assert_eq!(cache.cached(), vec![1, 3]);
    }

    #[tokio::test]
    async fn byte_budget_bounds_but_keeps_one() {
        let cache = PieceCache::new(16, 10, 4).for_torrent();
        let loads = AtomicU32::new(0);
        load(&cache, 1, 6, &loads).await;
        load(&cache, 2, 6, &loads).await;
        assert_eq!(cache.cached(), vec![2]);
        load(&cache, 3, 100, &loads).await;
        assert_eq!(cache.cached(), vec![3]);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_errors_are_not_kept() {
        let cache = PieceCache::new(4, 1 << 20, 4).for_torrent();
        let loads = AtomicU32::new(0);
        let (a, b) = tokio::join!(load(&cache, 7, 4, &loads), load(&cache, 7, 4, &loads));
        assert_eq!(a, b);
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        let failed = cache.get(9, 4, || async { Err::<Bytes, _>("disk on fire") }).await;
        assert!(failed.is_err());
        assert_eq!(cache.cached(), vec![7]);
        cache.invalidate(7);
        assert!(cache.cached().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_piece_lends_its_buffer_unless_someone_holds_it() {
        let cache = PieceCache::new(1, 1 << 20, 4).for_torrent();
        let loads = AtomicU32::new(0);
        let held = load(&cache, 1, 8, &loads).await;
        load(&cache, 2, 8, &loads).await; // evicts 1, which `held` still holds: not kept
        let two = cache.loaded(2).unwrap().as_ptr();
        load(&cache, 3, 8, &loads).await; // evicts 2, which nothing holds: kept
        let buf = cache.buffer(4);
        assert_eq!((buf.as_ptr(), &buf[..]), (two, &[2u8; 4][..]));
        let fresh = cache.buffer(8);
        assert_ne!(fresh.as_ptr(), held.as_ptr());
        assert_eq!(&fresh[..], &[0u8; 8]);
    }

    #[tokio::test]
    async fn torrents_share_one_bound_keep_their_pieces_apart_and_take_them_when_dropped() {
        let shared = PieceCache::new(3, 1 << 20, 2);
        let (a, b) = (shared.for_torrent(), shared.for_torrent());
        let loads = AtomicU32::new(0);
        load(&a, 1, 4, &loads).await;
        let from_b = b.get(1, 4, || async { Ok::<_, ()>(Bytes::from_static(b"bbbb")) }).await.unwrap();
        assert_eq!(&from_b[..], b"bbbb", "b's piece 1 is not a's");
        load(&a, 1, 4, &loads).await; // a hit: b's piece 1 is now the least recently used
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        load(&a, 2, 4, &loads).await;
        // The fourth piece in the process: a holds the most, so a's least recent goes, not b's.
        load(&a, 3, 4, &loads).await;
        assert_eq!((a.cached(), b.cached()), (vec![2, 3], vec![1]));
        assert_eq!(shared.usage(), (3, 12));
        b.get(5, 4, || async { Ok::<_, ()>(Bytes::from_static(b"bbbb")) }).await.unwrap();
        assert_eq!((a.cached(), b.cached()), (vec![3], vec![1, 5]), "the bound holds across torrents");
        let first = a.try_load().expect("a first whole-piece read");
        let second = b.try_load().expect("a second, from the other torrent");
        assert!(a.try_load().is_none(), "two reads at once in the process, whoever asks");
        drop((first, second));
        assert!(a.try_load().is_some(), "a read that ended gives its permit back");
        drop(a);
        assert_eq!((b.cached(), shared.usage()), (vec![1, 5], (2, 8)), "a dropped view's pieces went with it");
    }

    /// A peer of torrent a asks for the first block of piece after piece (each read whole into
    /// the cache): it churns a's pieces only, and b's stay cached however long it goes on.
    #[tokio::test]
    async fn one_torrents_churn_cannot_push_out_anothers_pieces() {
        let shared = PieceCache::new(5, 1 << 20, 2);
        let (a, b) = (shared.for_torrent(), shared.for_torrent());
        let loads = AtomicU32::new(0);
        load(&b, 1, 8, &loads).await;
        load(&b, 2, 8, &loads).await;
        for index in 0..100 {
            load(&a, index, 8, &loads).await;
        }
        assert_eq!(b.cached(), vec![1, 2], "b's pieces outlived a hundred of a's");
        assert_eq!(a.cached(), vec![97, 98, 99], "a keeps what is left of the bound, its newest");
        assert_eq!(shared.usage(), (5, 40));
        load(&b, 1, 8, &loads).await;
        assert_eq!(loads.load(Ordering::SeqCst), 102, "b's piece 1 was a hit");
        // A torrent that holds nothing yet still gets room: from the one that holds the most.
        let c = shared.for_torrent();
        load(&c, 7, 8, &loads).await;
        assert_eq!((a.cached(), b.cached(), c.cached()), (vec![98, 99], vec![2, 1], vec![7]));
    }

    /// Shares count both bounds: a torrent of small pieces churned up to the count bound loses
    /// its own, not the one large piece of another torrent that holds more bytes.
    #[tokio::test]
    async fn a_large_piece_is_not_pushed_out_by_many_small_ones() {
        let shared = PieceCache::new(4, 100, 2);
        let (large, small) = (shared.for_torrent(), shared.for_torrent());
        let loads = AtomicU32::new(0);
        load(&large, 0, 40, &loads).await;
        for index in 0..100 {
            load(&small, index, 1, &loads).await;
        }
        assert_eq!((large.cached(), small.cached()), (vec![0], vec![97, 98, 99]));
        // And many bytes in few pieces lose to the byte bound the same way.
        for index in 1..50 {
            load(&large, index, 40, &loads).await;
        }
        assert_eq!(small.cached(), vec![98, 99], "only the count bound's room was taken");
        assert_eq!((large.cached(), shared.usage()), (vec![48, 49], (4, 82)));
    }
}
