//! Progress for people: an indicatif bar on a terminal, a plain line every few seconds when
//! stderr is not a terminal, nothing with `--quiet`; and the summary at the end. A magnet's
//! "fetching metadata" phase comes first, as a spinner or lines of its own.
use crate::cli::common::human_bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoal::metadata::FetchStatus;
use shoal::torrent::{Phase, TorrentStats};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Plain lines are written at most this often.
const LINE_EVERY: Duration = Duration::from_secs(5);

enum Mode {
    Bar(ProgressBar),
    Lines { last: Option<Instant> },
    Quiet,
}

pub struct Progress {
    mode: Mode,
}

impl Progress {
    pub fn new(quiet: bool, total: u64) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template("{spinner} {percent:>3}% [{bar:30}] {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            Mode::Bar(bar)
        } else {
            Mode::Lines { last: None }
        };
        Progress { mode }
    }

    pub fn update(&mut self, s: &TorrentStats) {
        let done = s.bytes_total - s.bytes_left;
        let eta = if s.download_rate > 1.0 && s.bytes_left > 0 {
            format!("{:.0}s", s.bytes_left as f64 / s.download_rate)
        } else {
            "-".into()
        };
        let rates = format!(
            "down {}/s up {}/s peers {}/{} eta {eta}",
            human_bytes(s.download_rate),
            human_bytes(s.upload_rate),
            s.pool.connected,
            s.pool.known
        );
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(match s.phase {
                    Phase::Checking => format!("checking {}/{}", s.pieces_checked, s.pieces_total),
                    Phase::Seeding => format!("seeding up {}/s peers {}", human_bytes(s.upload_rate), s.pool.connected),
                    _ => rates,
                });
                bar.tick();
            }
            Mode::Lines { last } => {
                if last.is_some_and(|t| t.elapsed() < LINE_EVERY) {
                    return;
                }
                *last = Some(Instant::now());
                let pct = if s.bytes_total == 0 { 100.0 } else { done as f64 * 100.0 / s.bytes_total as f64 };
                eprintln!(
                    "{} {:5.1}% {}/{} {rates}",
                    s.name,
                    pct,
                    human_bytes(done as f64),
                    human_bytes(s.bytes_total as f64)
                );
            }
        }
    }

    pub fn finish(&mut self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }

    /// Follows a torrent's statistics until the watch closes or `until` says stop.
    pub async fn follow(mut self, mut stats: watch::Receiver<TorrentStats>, until: impl Fn(&TorrentStats) -> bool) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let s = stats.borrow_and_update().clone();
            self.update(&s);
            if until(&s) {
                break;
            }
            tokio::select! {
                r = stats.changed() => if r.is_err() { break },
                _ = tick.tick() => {}
            }
        }
        self.finish();
    }
}

/// The "fetching metadata" phase of a magnet, until the fetch drops its status sender.
pub async fn follow_metadata(quiet: bool, info_hash: String, mut status: watch::Receiver<FetchStatus>) {
    if quiet {
        return;
    }
    let line = |s: &FetchStatus| {
        let (got, all) = s.pieces;
        format!(
            "fetching metadata for {info_hash}: {} peers known, {} asked now, {} banned, {got}/{all} pieces",
            s.known, s.asking, s.banned
        )
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    });
    let mut last: Option<Instant> = None;
    loop {
        let s = status.borrow_and_update().clone();
        match &bar {
            Some(bar) => bar.set_message(line(&s)),
            None if last.is_none_or(|t| t.elapsed() >= LINE_EVERY) => {
                last = Some(Instant::now());
                eprintln!("{}", line(&s));
            }
            None => {}
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(LINE_EVERY) => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// The closing line of a download.
pub fn summary(s: &TorrentStats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "done: {} {} in {:.1} s ({}/s average), received {} from {} peer{}, {} hash failure{}",
        s.name,
        human_bytes(s.bytes_total as f64),
        secs,
        human_bytes(s.downloaded as f64 / secs),
        human_bytes(s.downloaded as f64),
        s.peers_used,
        if s.peers_used == 1 { "" } else { "s" },
        s.hash_failures,
        if s.hash_failures == 1 { "" } else { "s" },
    )
}
