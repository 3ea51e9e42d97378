//! Tracker clients: one announce over HTTP (BEP 3, BEP 23) or UDP (BEP 15), and the BEP 12
//! tier list that decides which tracker to ask.
//!
//! Reading order:
//! - the types shared by both transports ([`AnnounceParams`], [`Announce`], [`TrackerError`]);
//! - [`announce`], which dispatches on the URL scheme to [`http`] or [`udp`];
//! - [`TrackerList`], the plain struct holding tiers, order and per-tracker backoff;
//! - [`announcer`], the task that keeps one torrent announced using all of the above;
//! - [`redirect`], the rules for following HTTP redirects (hop limit, no public → local).
//!
//! This module decides nothing about peers: it returns addresses and lets the peer manager judge
//! them. Settings (numwant, timeouts, minimum interval) arrive as parameters from
//! `crate::config::Options`; nothing here invents its own defaults for them.
pub mod announcer;
pub mod http;
pub mod redirect;
pub mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;

use crate::metainfo::InfoHash;
use crate::wire::PeerId;

/// The `event` of an announce (BEP 3). A regular re-announce has no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Started,
    Completed,
    Stopped,
}

impl Event {
    /// The value of the HTTP `event` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Completed => "completed",
            Event::Stopped => "stopped",
        }
    }
}

/// What we tell a tracker in one announce.
#[derive(Clone, Debug)]
pub struct AnnounceParams {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// Our listening port for incoming peer connections.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<Event>,
    pub numwant: u32,
    /// A random value fixed for the life of the torrent, so a tracker can recognise us across
    /// IP changes (the `key` parameter of HTTP, the `key` field of BEP 15).
    pub key: u32,
}

/// What a tracker answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// How long to wait before the next regular announce.
    pub interval: Duration,
    /// The tracker's floor for any announce, when it states one.
    pub min_interval: Option<Duration>,
    /// Peer addresses, IPv4 and IPv6, in the order the tracker gave them.
    pub peers: Vec<SocketAddr>,
    /// A `warning message`: the announce succeeded but the tracker has something to say.
    pub warning: Option<String>,
    /// Peers with the whole torrent (`complete`), when reported.
    pub seeders: Option<u32>,
    /// Peers still downloading (`incomplete`), when reported.
    pub leechers: Option<u32>,
}

/// Running totals the announcer reports to trackers.
#[derive(Clone, Copy, Default, Debug)]
pub struct TransferTotals {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// Why one announce to one tracker failed. Every message names the tracker URL.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker {url}: invalid announce url: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("tracker {url}: unsupported url scheme {scheme:?} (expected http, https or udp)")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("tracker {url}: timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("tracker {url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The message carries reqwest's whole cause chain, so it is not repeated as a `source`.
    #[error("tracker {url}: http request failed: {}", error_chain(.cause))]
    Http { url: String, cause: reqwest::Error },
    #[error("tracker {url}: http status {status}")]
    Status { url: String, status: u16 },
    #[error("tracker {url}: {reason}")]
    Redirect { url: String, reason: String },
    #[error("tracker {url}: response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("tracker {url}: malformed response: {reason}")]
    Malformed { url: String, reason: String },
    /// The tracker refused the announce (`failure reason`, or BEP 15 action 3).
    #[error("tracker {url}: failure reason: {reason}")]
    Failure { url: String, reason: String },
}

/// `e` and its causes, joined: reqwest's own message hides the cause (refused, reset, ...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Announces once to the tracker at `url`, choosing HTTP(S) or UDP by the scheme.
///
/// `timeout` bounds the whole exchange, including name resolution and UDP retransmissions.
pub async fn announce(url: &str, params: &AnnounceParams, timeout: Duration) -> Result<Announce, TrackerError> {
    let parsed =
        url::Url::parse(url).map_err(|e| TrackerError::BadUrl { url: url.to_owned(), reason: e.to_string() })?;
    match parsed.scheme() {
        "http" | "https" => http::announce(url, params, timeout).await,
        "udp" => udp::announce(url, params, timeout).await,
        other => Err(TrackerError::UnsupportedScheme { url: url.to_owned(), scheme: other.to_owned() }),
    }
}

/// Most peer addresses taken from one announce reply, IPv4 and IPv6, compact or dictionary
/// form, HTTP or UDP; the rest are ignored. We ask for `numwant` (50 by default), and
/// opentracker never sends more than 200 IPv4 peers in a UDP reply (`OT_MAX_PEERS_UDP4`,
/// trackerlogic.h); five times that leaves room for generous trackers while a hostile one
/// answering 50,000 peers costs a length check, not 50,000 parsed addresses.
pub const MAX_PEERS_PER_ANNOUNCE: usize = 1000;

/// The most of a tracker's own text (a failure reason, a warning, a UDP error) we keep: it is
/// shown in logs and status, and a reply may be up to [`http::MAX_RESPONSE_BYTES`] long.
pub const MAX_TRACKER_TEXT: usize = 512;

/// A tracker's text for display: at most [`MAX_TRACKER_TEXT`] bytes of it, as UTF-8 with
/// invalid sequences replaced, and no raw control or bidi characters.
pub fn tracker_text(bytes: &[u8]) -> String {
    let kept = &bytes[..bytes.len().min(MAX_TRACKER_TEXT)];
    crate::metainfo::names::escape(&String::from_utf8_lossy(kept)).into_owned()
}

/// First retry delay after a tracker fails; doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest a failing tracker is left alone.
const BACKOFF_CAP: Duration = Duration::from_secs(30 * 60);

/// The trackers of one torrent in BEP 12 tiers, with per-tracker backoff.
///
/// Invariants: no tier is empty; each URL appears once. Order within a tier is shuffled once at
/// construction; afterwards the only reordering is [`TrackerList::record_success`] moving a
/// tracker to the front of its tier. Tiers never change order.
#[derive(Debug, Clone)]
pub struct TrackerList {
    tiers: Vec<Vec<String>>,
    failures: HashMap<String, Backoff>,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    consecutive: u32,
    until: Instant,
}

impl TrackerList {
    /// Builds the list from `announce-list` tiers (or `[[announce]]`), shuffling each tier.
    /// Empty tiers and repeated URLs are dropped.
    pub fn new(tiers: Vec<Vec<String>>, rng: &mut impl Rng) -> TrackerList {
        let mut seen = std::collections::HashSet::new();
        let tiers = tiers
            .into_iter()
            .map(|tier| {
                let mut tier: Vec<String> = tier.into_iter().filter(|u| seen.insert(u.clone())).collect();
                tier.shuffle(rng);
                tier
            })
            .filter(|tier| !tier.is_empty())
            .collect();
        TrackerList { tiers, failures: HashMap::new() }
    }

    /// The tiers in their current order.
    pub fn tiers(&self) -> &[Vec<String>] {
        &self.tiers
    }

    /// Every URL, tier by tier, in the order BEP 12 says to try them.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.tiers.iter().flatten().map(String::as_str)
    }

    /// The URLs to try now, in order, skipping trackers still backing off.
    pub fn candidates(&self, now: Instant) -> Vec<String> {
        self.urls().filter(|u| self.failures.get(*u).is_none_or(|b| b.until <= now)).map(str::to_owned).collect()
    }

    /// The tracker at `url` answered: forget its failures and move it to the front of its tier.
    pub fn record_success(&mut self, url: &str) {
        self.failures.remove(url);
        for tier in &mut self.tiers {
            if let Some(pos) = tier.iter().position(|u| u == url) {
                let t = tier.remove(pos);
                tier.insert(0, t);
                return;
            }
        }
    }

    /// The tracker at `url` failed: back it off exponentially (capped). Returns the delay.
    pub fn record_failure(&mut self, url: &str, now: Instant) -> Duration {
        let consecutive = self.failures.get(url).map_or(0, |b| b.consecutive) + 1;
        let delay = BACKOFF_BASE.saturating_mul(1u32 << (consecutive - 1).min(16)).min(BACKOFF_CAP);
        let until = announcer::later(now, delay);
        self.failures.insert(url.to_owned(), Backoff { consecutive, until });
        delay
    }

    /// When the first backed-off tracker becomes available again, if any is backing off.
    pub fn next_available(&self) -> Option<Instant> {
        self.failures.values().map(|b| b.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn list(tiers: &[&[&str]]) -> TrackerList {
        let tiers = tiers.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect();
        TrackerList::new(tiers, &mut rand::rngs::StdRng::seed_from_u64(7))
    }

    #[test]
    fn tiers_keep_their_order_and_members() {
        let l = list(&[&["a", "b", "c"], &[], &["d", "a"]]);
        assert_eq!(l.tiers().len(), 2, "empty tier dropped");
        let mut first = l.tiers()[0].clone();
        first.sort();
        assert_eq!(first, ["a", "b", "c"]);
        assert_eq!(l.tiers()[1], ["d"], "repeated url dropped");
        assert_eq!(l.urls().last(), Some("d"));
    }

    #[test]
    fn shuffle_happens_within_tiers() {
        let tiers: Vec<Vec<String>> = vec![(0..20).map(|i| i.to_string()).collect()];
        let orders: std::collections::HashSet<Vec<String>> = (0..5)
            .map(|seed| {
                TrackerList::new(tiers.clone(), &mut rand::rngs::StdRng::seed_from_u64(seed)).tiers()[0].clone()
            })
            .collect();
        assert!(orders.len() > 1);
    }

    #[test]
    fn success_moves_to_front_of_its_tier_only() {
        let mut l = list(&[&["a", "b", "c"], &["d", "e"]]);
        let last = l.tiers()[0][2].clone();
        l.record_success(&last);
        assert_eq!(l.tiers()[0][0], last);
        assert_eq!(l.tiers()[0].len(), 3);
        l.record_success("e");
        assert_eq!(l.tiers()[1], ["e", "d"]);
        assert_eq!(l.tiers()[0][0], last, "other tier untouched");
    }

    #[test]
    fn failures_back_off_exponentially_with_a_cap() {
        let mut l = list(&[&["a"], &["b"]]);
        let now = Instant::now();
        assert_eq!(l.record_failure("a", now), BACKOFF_BASE);
        assert_eq!(l.record_failure("a", now), BACKOFF_BASE * 2);
        assert_eq!(l.candidates(now), ["b"]);
        assert_eq!(l.next_available(), Some(now + BACKOFF_BASE * 2));
        assert_eq!(l.candidates(now + BACKOFF_BASE * 2), ["a", "b"]);
        for _ in 0..40 {
            l.record_failure("a", now);
        }
        assert_eq!(l.record_failure("a", now), BACKOFF_CAP);
        l.record_success("a");
        assert_eq!(l.candidates(now), ["a", "b"]);
        assert_eq!(l.next_available(), None);
    }

    #[tokio::test]
    async fn other_schemes_are_refused_by_name() {
        let p = AnnounceParams {
            info_hash: InfoHash([0; 20]),
            peer_id: PeerId([0; 20]),
            port: 1,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: None,
            numwant: 1,
            key: 0,
        };
        let err = announce("wss://t.example/announce", &p, Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().contains("wss://t.example/announce"), "{err}");
        assert!(matches!(err, TrackerError::UnsupportedScheme { .. }));
        let err = announce("not a url", &p, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, TrackerError::BadUrl { .. }));
    }
}
