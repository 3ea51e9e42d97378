//! Peer scoring: one number per peer, weighted as the design asks.
//!
//! ```text
//! score = 0.40 · rate / max_rate              download rate from the peer (higher is better)
//!       − 0.30 · queue / max_queue            its outstanding requests (a full pipe is busy)
//!       + 0.20 · best_response / response     its block round-trip time (faster is better)
//!       + 0.10 · rarity / max_rarity          rarity of the pieces it has that we still need
//! ```
//!
//! Each part is normalised against the best value among the current peers (`ScoreScale`),
//! so the score is in [−0.3, 0.7] and comparable across peers of one torrent. A part whose
//! scale is zero (no peer has sent anything yet) contributes zero.
use std::time::Duration;

pub const W_RATE: f64 = 0.40;
pub const W_QUEUE: f64 = 0.30;
pub const W_RESPONSE: f64 = 0.20;
pub const W_RARITY: f64 = 0.10;

/// What is known of one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoreInputs {
    /// Bytes per second received from the peer.
    pub download_rate: f64,
    /// Requests outstanding to the peer.
    pub queue_len: usize,
    /// Smoothed block round-trip time; `None` before the first block.
    pub response_time: Option<Duration>,
    /// Sum over the pieces it has that we need of 1 / availability.
    pub rarity: f64,
}

/// The best values among the peers being compared.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoreScale {
    pub max_rate: f64,
    pub max_queue: usize,
    pub best_response: Option<Duration>,
    pub max_rarity: f64,
}

impl ScoreScale {
    pub fn of<'a>(peers: impl IntoIterator<Item = &'a ScoreInputs>) -> ScoreScale {
        peers.into_iter().fold(ScoreScale::default(), |s, p| ScoreScale {
            max_rate: s.max_rate.max(p.download_rate),
            max_queue: s.max_queue.max(p.queue_len),
            best_response: match (s.best_response, p.response_time) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_rarity: s.max_rarity.max(p.rarity),
        })
    }
}

/// The score and its weighted parts (shown in diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ScoreParts {
    pub rate: f64,
    pub queue: f64,
    pub response: f64,
    pub rarity: f64,
    pub total: f64,
}

fn ratio(v: f64, max: f64) -> f64 {
    if max > 0.0 {
        (v / max).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

pub fn score(p: &ScoreInputs, s: &ScoreScale) -> ScoreParts {
    let rate = W_RATE * ratio(p.download_rate, s.max_rate);
    let queue = -W_QUEUE * ratio(p.queue_len as f64, s.max_queue as f64);
    let response = match (p.response_time, s.best_response) {
        (Some(rt), Some(best)) if !rt.is_zero() => W_RESPONSE * ratio(best.as_secs_f64(), rt.as_secs_f64()),
        (Some(_), Some(_)) => W_RESPONSE,
        _ => 0.0,
    };
    let rarity = W_RARITY * ratio(p.rarity, s.max_rarity);
    ScoreParts { rate, queue, response, rarity, total: rate + queue + response + rarity }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn the_best_peer_on_every_axis_scores_point_seven() {
        let p = ScoreInputs { download_rate: 100.0, queue_len: 0, response_time: ms(10), rarity: 5.0 };
        let s = ScoreScale { max_rate: 100.0, max_queue: 10, best_response: ms(10), max_rarity: 5.0 };
        let parts = score(&p, &s);
        assert!((parts.total - 0.7).abs() < 1e-9, "{parts:?}");
    }

    #[test]
    fn weights_are_forty_thirty_twenty_ten() {
        let s = ScoreScale { max_rate: 100.0, max_queue: 10, best_response: ms(10), max_rarity: 4.0 };
        let base = ScoreInputs { download_rate: 0.0, queue_len: 0, response_time: None, rarity: 0.0 };
        assert_eq!(score(&base, &s).total, 0.0);
        let r = score(&ScoreInputs { download_rate: 50.0, ..base }, &s);
        assert!((r.rate - 0.2).abs() < 1e-9);
        let q = score(&ScoreInputs { queue_len: 10, ..base }, &s);
        assert!((q.total + 0.3).abs() < 1e-9);
        let t = score(&ScoreInputs { response_time: ms(20), ..base }, &s);
        assert!((t.response - 0.1).abs() < 1e-9);
        let y = score(&ScoreInputs { rarity: 4.0, ..base }, &s);
        assert!((y.rarity - 0.1).abs() < 1e-9);
    }

    #[test]
    fn faster_peer_wins_and_busy_peer_loses() {
        let fast = ScoreInputs { download_rate: 90.0, queue_len: 5, response_time: ms(5), rarity: 1.0 };
        let slow = ScoreInputs { download_rate: 10.0, queue_len: 5, response_time: ms(50), rarity: 1.0 };
        let busy = ScoreInputs { queue_len: 50, ..fast };
        let s = ScoreScale::of([&fast, &slow, &busy]);
        assert!(score(&fast, &s).total > score(&slow, &s).total);
        assert!(score(&fast, &s).total > score(&busy, &s).total);
    }

    #[test]
    fn empty_scale_gives_zero_not_nan() {
        let p = ScoreInputs { download_rate: 0.0, queue_len: 3, response_time: None, rarity: 0.0 };
        let parts = score(&p, &ScoreScale::default());
        assert_eq!(parts.total, 0.0);
    }
}
