//! Reading what a `shoal` process wrote: tracing lines (timestamps, `name=value` fields, ANSI
//! colours stripped), the DHT lookups and connections it logged, its resume check and its
//! closing summary.

/// One `DHT lookup` log line: when (seconds since midnight UTC, from the log's timestamp)
/// and how many providers it found.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    pub at: f64,
    pub providers: usize,
}

/// Every `DHT lookup ... providers=N` line of a log, in order.
pub fn dht_lookups(log: &str) -> Vec<Lookup> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" DHT lookup "))
        .filter_map(|l| {
            let at = timestamp_secs(l.split_whitespace().next()?)?;
            let providers = field(&l, "providers")?.parse().ok()?;
            Some(Lookup { at, providers })
        })
        .collect()
}

/// The peers of every `connected peer=ADDR` debug line (`/p2p/<PeerId>` or `ip:port`), in order.
pub fn connected_peers(log: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" DEBUG connected "))
        .filter_map(|l| field(&l, "peer").map(str::to_string))
        .collect()
}

/// The peers of every `connected` debug line whose `source` field is `source`, in order.
pub fn connected_from(log: &str, source: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" DEBUG connected ") && field(l, "source") == Some(source))
        .filter_map(|l| field(&l, "peer").map(str::to_string))
        .collect()
}

/// When each log line containing `needle` was written (seconds since midnight UTC, as in
/// [`Lookup::at`]), in order.
pub fn event_times(log: &str, needle: &str) -> Vec<f64> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(needle))
        .filter_map(|l| timestamp_secs(l.split_whitespace().next()?))
        .collect()
}

/// The value of `name=value` in a tracing line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

/// `2025-01-02T03:04:05.678901Z` → seconds since that day's midnight.
fn timestamp_secs(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The pieces a `resume check bitfield have=HEX` debug line (shoal::storage) says were
/// found on disk, one bool per piece; `None` until the line is in `log`.
pub fn resume_claims(log: &str, pieces: usize) -> Option<Vec<bool>> {
    let line = log.lines().map(strip_ansi).find(|l| l.contains("resume check bitfield"))?;
    let hex = field(&line, "have")?.to_string();
    let bytes: Vec<u8> =
        (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect::<Option<_>>()?;
    Some((0..pieces).map(|i| bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0)).collect())
}

/// Lines of `text` containing `needle`.
pub fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The bytes received, from a download's closing `done: ... received 1.50 MiB from ...` line.
pub fn summary_received(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.starts_with("done: "))?;
    let rest = line.split(" received ").nth(1)?;
    let mut words = rest.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    let unit = match words.next()? {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * unit) as u64)
}

/// Log lines containing every one of `words`.
pub fn log_lines<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines().filter(|l| words.iter().all(|w| l.contains(w))).collect()
}
