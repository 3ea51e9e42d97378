//! Upload and download rate limits, in bytes per second: a token bucket per direction for the
//! session and one per torrent, each settable while peers run (0 is unlimited), and one for
//! each peer's share of the upload (set by its torrent, see [`crate::manager::share`]).
//!
//! governor's GCRA counts the bytes. A peer task takes a block's bytes from the upload buckets
//! before it reads the block from storage, and from the download buckets after a block
//! arrived and before it reads the next message: a limited peer's socket backs up and TCP
//! slows the sender, with nothing buffered on our side. A task waiting for bytes looks at the
//! limit again every 200 ms (`RECHECK`), so a new limit (or none) applies to waits already under way.
//!
//! A limit is for the link, as users set it below their line's rate: a block costs its bytes on
//! the wire ([`wire_bytes`]: the message header and TCP/IP headers too, as libtorrent counts by
//! default), and a bucket holds a quarter second of its rate, at least one block. With a
//! 128 KiB burst and payload only, a peer limited to 90 % of a 16 KiB/s uplink kept 60 to
//! 170 KB queued in front of that uplink (4 to 10 s, the link drained only 5 % faster than the
//! limit filled it), and every request it sent waited behind them (`scripts/swarm-sim`).
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Longest sleep before a waiting task looks at the limit again.
const RECHECK: Duration = Duration::from_millis(200);
/// Least burst: a 16 KiB block (on the wire) passes in one take. Larger blocks (up to
/// 128 KiB) are taken in parts.
const MIN_BURST: u32 = wire_bytes(crate::types::BLOCK_SIZE);
/// TCP payload per segment on a 1500-byte MTU with TCP timestamps, and the IP and TCP headers
/// each segment adds.
const SEGMENT: u32 = 1448;
const SEGMENT_HEADERS: u32 = 52;
/// A `piece` message's header: length, id, index, begin.
const PIECE_HEADER: u32 = 13;

/// What a block of `payload` bytes costs on the wire: its message header and the IP and TCP
/// headers of the segments that carry it.
pub const fn wire_bytes(payload: u32) -> u32 {
    let message = payload.saturating_add(PIECE_HEADER);
    message.saturating_add(message.div_ceil(SEGMENT).saturating_mul(SEGMENT_HEADERS))
}

/// One direction's limit.
#[derive(Default)]
pub struct RateLimit {
    bucket: RwLock<Option<Bucket>>,
    bytes_per_sec: AtomicU64,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        let limit = RateLimit::default();
        limit.set(bytes_per_sec);
        limit
    }

    /// The limit in bytes per second; 0 when there is none.
    pub fn get(&self) -> u64 {
        self.bytes_per_sec.load(Ordering::Relaxed)
    }

    /// Sets the limit (0: none). Unchanged limits keep their bucket and what it has counted.
    pub fn set(&self, bytes_per_sec: u64) {
        if self.bytes_per_sec.swap(bytes_per_sec, Ordering::Relaxed) == bytes_per_sec && bytes_per_sec != 0 {
            return;
        }
        *self.bucket.write().unwrap_or_else(|e| e.into_inner()) = bucket(bytes_per_sec);
    }

    /// Waits until `n` bytes may pass, in parts of at most the bucket's burst. Cancel-safe
    /// for `n` up to the burst (at least a 16 KiB block): nothing is taken until it returns.
    pub async fn take(&self, n: u32) {
        let mut left = n;
        while left > 0 {
            let Some(bucket) = self.bucket.read().unwrap_or_else(|e| e.into_inner()).clone() else { return };
            let part = left.min(bucket.burst);
            bucket.take(NonZeroU32::new(part).expect("part is not 0")).await;
            left -= part;
        }
    }
}

/// One limit's bucket, with what it holds at most.
#[derive(Clone)]
struct Bucket {
    limiter: Arc<DefaultDirectRateLimiter>,
    burst: u32,
}

impl Bucket {
    /// Waits until `n` (at most `burst`) bytes pass.
    async fn take(&self, n: NonZeroU32) {
        // Err (more than the bucket holds) cannot happen with n <= burst: let it go.
        while let Ok(Err(not_until)) = self.limiter.check_n(n) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tokio::time::sleep(wait.min(RECHECK)).await;
        }
    }
}

/// A bucket for `bytes_per_sec` (above 4 GiB/s there is no limit to keep).
fn bucket(bytes_per_sec: u64) -> Option<Bucket> {
    let rate = NonZeroU32::new(u32::try_from(bytes_per_sec).ok()?)?;
    // A quarter second of the rate, so short bursts pass while the average holds.
    let burst = NonZeroU32::new((rate.get() / 4).max(MIN_BURST)).expect("MIN_BURST is not 0");
    let limiter = Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)));
    Some(Bucket { limiter, burst: burst.get() })
}

/// The two directions of one scope (the session, or one torrent).
#[derive(Default)]
pub struct Rates {
    pub download: RateLimit,
    pub upload: RateLimit,
}

impl Rates {
    pub fn new(download: u64, upload: u64) -> Rates {
        Rates { download: RateLimit::new(download), upload: RateLimit::new(upload) }
    }
}

/// What a peer task is held to: its session's limits, its torrent's and its own upload share.
#[derive(Clone, Default)]
pub struct PeerRates {
    pub session: Arc<Rates>,
    pub torrent: Arc<Rates>,
    /// This peer's share of the upload (0: none of its own).
    pub share: Arc<RateLimit>,
}

impl PeerRates {
    /// The same limits with an upload share of the peer's own, which the caller keeps to set.
    pub fn for_peer(&self) -> (PeerRates, Arc<RateLimit>) {
        let share = Arc::new(RateLimit::default());
        (PeerRates { share: share.clone(), ..self.clone() }, share)
    }

    /// The upload limit in force before any peer's share: the lower of the two set ones
    /// (0: none).
    pub fn upload_limit(&self) -> u64 {
        let (s, t) = (self.session.upload.get(), self.torrent.upload.get());
        match (s, t) {
            (0, t) => t,
            (s, 0) => s,
            (s, t) => s.min(t),
        }
    }

    /// Waits until a received block of `n` bytes fits both download limits.
    pub async fn download(&self, n: u32) {
        let n = wire_bytes(n);
        self.session.download.take(n).await;
        self.torrent.download.take(n).await;
    }

    /// Waits until a block of `n` bytes to send fits this peer's share and both upload limits.
    pub async fn upload(&self, n: u32) {
        let n = wire_bytes(n);
        self.share.take(n).await;
        self.session.upload.take(n).await;
        self.torrent.upload.take(n).await;
    }
}

impl std::fmt::Debug for PeerRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |s: &Rates| (s.download.get(), s.upload.get());
        f.debug_struct("PeerRates")
            .field("session", &r(&self.session))
            .field("torrent", &r(&self.torrent))
            .field("share", &self.share.get())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_limit_holds_the_average_and_zero_is_none() {
        let limit = RateLimit::new(0);
        assert!(limit.bucket.read().unwrap().is_none(), "0 is no limit: nothing to wait on");
        // 1 MiB/s with a 256 KiB burst: 768 KiB takes at least half a second.
        limit.set(1 << 20);
        let t0 = Instant::now();
        for _ in 0..48 {
            limit.take(16 * 1024).await;
        }
        assert!(t0.elapsed() >= Duration::from_millis(450), "{:?}", t0.elapsed());
        assert_eq!(limit.get(), 1 << 20);
    }

    #[tokio::test]
    async fn a_peer_is_held_to_its_own_share_and_its_siblings_are_not() {
        let rates = PeerRates::default();
        let (peer, share) = rates.for_peer();
        let (sibling, _) = rates.for_peer();
        share.set(1 << 20);
        // As above: 768 KiB at 1 MiB/s with a 256 KiB burst takes at least half a second.
        let t0 = Instant::now();
        for _ in 0..48 {
            peer.upload(16 * 1024).await;
        }
        assert!(t0.elapsed() >= Duration::from_millis(450), "{:?}", t0.elapsed());
        assert_eq!(sibling.share.get(), 0, "a share is the peer's own");
        assert!(sibling.share.bucket.read().unwrap().is_none());
        assert_eq!(rates.upload_limit(), 0);
    }

    #[tokio::test]
    async fn a_slow_limit_lets_one_block_through_at_a_time() {
        // One block a second: the bucket holds one block, so after any idle time the next
        // three blocks take two seconds, not none (with the old 128 KiB burst, eight blocks
        // passed at once and queued 8 s in front of a 16 KiB/s uplink).
        let limit = RateLimit::new(wire_bytes(16384) as u64);
        let t0 = Instant::now();
        for _ in 0..3 {
            limit.take(wire_bytes(16384)).await;
        }
        assert!(t0.elapsed() >= Duration::from_millis(1800), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_block_costs_its_headers_on_the_wire() {
        // 16,397 bytes of message in 12 segments of at most 1,448, 52 bytes of headers each.
        assert_eq!(wire_bytes(16384), 16384 + 13 + 12 * 52);
        assert_eq!(wire_bytes(0), 13 + 52);
        assert_eq!(wire_bytes(u32::MAX), u32::MAX, "saturates");
    }

    #[test]
    fn the_upload_limit_is_the_lower_of_the_set_ones() {
        let rates = PeerRates::default();
        rates.torrent.upload.set(3000);
        assert_eq!(rates.upload_limit(), 3000);
        rates.session.upload.set(2000);
        assert_eq!(rates.upload_limit(), 2000);
        rates.torrent.upload.set(0);
        assert_eq!(rates.upload_limit(), 2000);
    }

    #[tokio::test]
    async fn lifting_a_limit_frees_a_task_already_waiting() {
        let limit = Arc::new(RateLimit::new(1024));
        // The first take empties the burst; the second would wait minutes at 1 KiB/s.
        limit.take(MIN_BURST).await;
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.take(MIN_BURST).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        limit.set(0);
        tokio::time::timeout(Duration::from_secs(60), waiting).await.expect("freed by the new limit").unwrap();
    }
}
