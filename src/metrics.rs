//! Process-wide metrics: one [`Metrics`] registry behind [`metrics()`], scraped as text.
//!
//! It owns three kinds of numbers:
//! - histograms of how long things take (block round trip, piece download, hash, disk write,
//!   DHT lookup), observed by the engine through `observe_*`;
//! - event counters fed by the engine (`inc_*`), among them the [`KeepaliveCounters`] that
//!   the JSON endpoint `/debug/p2p/keepalive/metrics` reads too, so the two never disagree,
//!   and the piece cache's size, which the cache keeps current (`add_piece_cache_bytes`);
//! - per-torrent totals and gauges, which are *not* stored here: the torrent tasks already
//!   keep them in their statistics. A collector reads the registered sources at scrape time,
//!   each torrent giving its [`TorrentRow`], so every number has one owner. (This module
//!   knows no torrent type: it is a leaf that the engine reports into.)
//!
//! [`Metrics::encode`] gives the Prometheus text format 0.0.4 (what `promtool check metrics`
//! lints and every scraper reads); [`Metrics::encode_openmetrics`] gives OpenMetrics 1.0.
//! Nothing here blocks or allocates on the hot path beyond an atomic add.
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

mod keepalive;
mod nat;
pub use keepalive::{KeepaliveCounters, KeepaliveSnapshot};
pub use nat::NatMetrics;

/// Content type of [`Metrics::encode`].
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The per-torrent numbers a scrape reports.
#[derive(Debug, Clone, Default)]
pub struct TorrentRow {
    pub info_hash: String,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    /// Peers of the torrent's pool by state (connected, pending, connecting, known).
    pub peers: [(&'static str, usize); 4],
    pub pieces_have: u32,
    pub pieces_total: u32,
}

/// What a torrent's statistics give a scrape.
pub trait TorrentFigures {
    fn row(&self) -> TorrentRow;
}

/// Where the rows of every torrent are read from at scrape time (cheap, non-blocking).
type RowSource = Arc<dyn Fn() -> Vec<TorrentRow> + Send + Sync>;

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Which side opened a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

type DirectionLabel = [(&'static str, &'static str); 1];
type DhtLabel = [(&'static str, &'static str); 1];

fn dht_lookup_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14)) // 10 ms .. 82 s
}

pub struct Metrics {
    registry: Registry,
    block_rtt: Histogram,
    piece_download: Histogram,
    piece_hash: Histogram,
    disk_write: Histogram,
    /// DHT lookup times by DHT: `kad` (shoal's Kademlia) or `mainline` (BEP 5).
    dht_lookup: Family<DhtLabel, Histogram, fn() -> Histogram>,
    pieces_verified: Counter,
    hash_failures: Counter,
    peer_connections: Family<DirectionLabel, Counter>,
    peers_banned: Counter,
    protocol_violations: Counter,
    piece_cache_bytes: Gauge,
    /// The libp2p node behind NAT: reachability, relay slots, hole punches (`shoal_p2p_*`).
    pub nat: NatMetrics,
    /// Counters of the key-peer monitor (`shoal_keepalive_<name>_total`).
    pub keepalive: KeepaliveCounters,
    torrents: TorrentSources,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("shoal");
        // Buckets double from the start value; the ranges cover a fast LAN to a slow swarm.
        let block_rtt = Histogram::new(exponential_buckets(0.001, 2.0, 16)); // 1 ms .. 33 s
        let piece_download = Histogram::new(exponential_buckets(0.01, 2.0, 16)); // 10 ms .. 5.5 min
        let piece_hash = Histogram::new(exponential_buckets(0.0001, 2.0, 16)); // 100 µs .. 3.3 s
        let disk_write = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let dht_lookup = Family::<DhtLabel, Histogram, fn() -> Histogram>::new_with_constructor(dht_lookup_histogram);
        for dht in ["kad", "mainline"] {
            let _ = dht_lookup.get_or_create(&[("dht", dht)]);
        }
        for (name, help, h) in [
            ("block_rtt", "Time from a block request to the block", &block_rtt),
            ("piece_download", "Time from a piece's first request to its verification", &piece_download),
            ("piece_hash", "Time to SHA-1 one piece", &piece_hash),
            ("disk_write", "Time to write one piece to disk", &disk_write),
        ] {
            registry.register_with_unit(name, help, Unit::Seconds, h.clone());
        }
        let lookups = "Time of one DHT lookup, by DHT (kad, mainline)";
        registry.register_with_unit("dht_lookup", lookups, Unit::Seconds, dht_lookup.clone());

        let pieces_verified = Counter::default();
        let hash_failures = Counter::default();
        let peer_connections = Family::<DirectionLabel, Counter>::default();
        let peers_banned = Counter::default();
        let protocol_violations = Counter::default();
        registry.register("pieces_verified", "Pieces that passed their hash check", pieces_verified.clone());
        registry.register("hash_failures", "Pieces that failed their hash check", hash_failures.clone());
        registry.register("peer_connections", "Peer connections established, by direction", peer_connections.clone());
        registry.register("peers_banned", "Peers banned for sending bad data", peers_banned.clone());
        registry.register(
            "protocol_violations",
            "Messages from peers that broke the protocol and were dropped (unrequested blocks)",
            protocol_violations.clone(),
        );
        let piece_cache_bytes = Gauge::default();
        registry.register_with_unit(
            "piece_cache",
            "Whole pieces held in memory to serve their blocks, over all torrents",
            Unit::Bytes,
            piece_cache_bytes.clone(),
        );
        for d in [Direction::Inbound, Direction::Outbound] {
            // Both series exist from the start, so a rate() over them never sees a gap.
            let _ = peer_connections.get_or_create(&[("direction", d.as_str())]);
        }

        let nat = NatMetrics::default();
        nat.register(registry.sub_registry_with_prefix("p2p"));

        let keepalive = KeepaliveCounters::default();
        keepalive.register(registry.sub_registry_with_prefix("keepalive"));

        let torrents = TorrentSources::default();
        registry.register_collector(Box::new(TorrentCollector { sources: torrents.clone() }));

        Metrics {
            registry,
            block_rtt,
            piece_download,
            piece_hash,
            disk_write,
            dht_lookup,
            pieces_verified,
            hash_failures,
            peer_connections,
            peers_banned,
            protocol_violations,
            piece_cache_bytes,
            nat,
            keepalive,
            torrents,
        }
    }

    pub fn observe_block_rtt(&self, d: Duration) {
        self.block_rtt.observe(d.as_secs_f64());
    }

    pub fn observe_piece_download(&self, d: Duration) {
        self.piece_download.observe(d.as_secs_f64());
    }

    pub fn observe_hash(&self, d: Duration) {
        self.piece_hash.observe(d.as_secs_f64());
    }

    pub fn observe_disk_write(&self, d: Duration) {
        self.disk_write.observe(d.as_secs_f64());
    }

    /// A lookup in shoal's Kademlia DHT.
    pub fn observe_dht_lookup(&self, d: Duration) {
        self.dht_lookup.get_or_create(&[("dht", "kad")]).observe(d.as_secs_f64());
    }

    /// A `get_peers` lookup in the mainline DHT.
    pub fn observe_mainline_lookup(&self, d: Duration) {
        self.dht_lookup.get_or_create(&[("dht", "mainline")]).observe(d.as_secs_f64());
    }

    pub fn inc_pieces_verified(&self) {
        self.pieces_verified.inc();
    }

    pub fn inc_hash_failures(&self) {
        self.hash_failures.inc();
    }

    pub fn inc_peer_connections(&self, direction: Direction) {
        self.peer_connections.get_or_create(&[("direction", direction.as_str())]).inc();
    }

    pub fn inc_peers_banned(&self) {
        self.peers_banned.inc();
    }

    pub fn inc_protocol_violations(&self) {
        self.protocol_violations.inc();
    }

    /// Bytes added to (or, negative, dropped from) the piece cache.
    pub fn add_piece_cache_bytes(&self, delta: i64) {
        self.piece_cache_bytes.inc_by(delta);
    }

    /// Adds a source of torrent statistics to scrape; it is read until the guard drops.
    /// A torrent reported by two sources is exported once (the first source wins).
    #[must_use = "the source is unregistered when the guard drops"]
    pub fn register_torrents<T: TorrentFigures + 'static>(
        &'static self,
        source: Arc<dyn Fn() -> Vec<T> + Send + Sync>,
    ) -> TorrentSourceGuard {
        let source: RowSource = Arc::new(move || source().iter().map(T::row).collect());
        let id = self.torrents.next_id.fetch_add(1, Ordering::Relaxed);
        self.torrents.list.lock().expect("metrics sources lock").push((id, source));
        TorrentSourceGuard { sources: &self.torrents, id }
    }

    /// The Prometheus text format 0.0.4, served with [`TEXT_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        openmetrics_to_text(&self.encode_openmetrics())
    }

    /// OpenMetrics 1.0 text, `# EOF` terminated, served with [`OPENMETRICS_CONTENT_TYPE`].
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector only fails on a formatter error.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode metrics into a string");
        out
    }
}

/// Turns OpenMetrics text into the Prometheus 0.0.4 text format. They differ in three ways
/// that matter to scrapers and `promtool`: a 0.0.4 counter family is named with its `_total`
/// suffix, and it has neither `# UNIT` lines nor the `# EOF` marker.
fn openmetrics_to_text(om: &str) -> String {
    let counters: HashSet<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Default, Clone)]
struct TorrentSources {
    list: Arc<Mutex<Vec<(u64, RowSource)>>>,
    next_id: Arc<AtomicU64>,
}

impl TorrentSources {
    /// Reads every source, outside the lock, keeping the first report of each torrent.
    fn read(&self) -> Vec<TorrentRow> {
        let sources: Vec<RowSource> =
            self.list.lock().expect("metrics sources lock").iter().map(|(_, s)| s.clone()).collect();
        let mut seen = HashSet::new();
        sources.iter().flat_map(|s| s()).filter(|t| seen.insert(t.info_hash.clone())).collect()
    }
}

/// Keeps a torrent source registered with [`metrics()`]; unregisters it on drop.
#[derive(Debug)]
pub struct TorrentSourceGuard {
    sources: &'static TorrentSources,
    id: u64,
}

impl Drop for TorrentSourceGuard {
    fn drop(&mut self) {
        self.sources.list.lock().expect("metrics sources lock").retain(|(id, _)| *id != self.id);
    }
}

impl std::fmt::Debug for TorrentSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorrentSources").finish_non_exhaustive()
    }
}

/// Emits the per-torrent families from the torrents' own statistics at scrape time.
#[derive(Debug)]
struct TorrentCollector {
    sources: TorrentSources,
}

type Label<'a> = (&'static str, &'a str);

impl TorrentCollector {
    fn family<'a, M: EncodeMetric>(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        series: impl IntoIterator<Item = (Vec<Label<'a>>, M)>,
        kind: prometheus_client::metrics::MetricType,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
        for (labels, metric) in series {
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for TorrentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::metrics::MetricType::{Counter as C, Gauge as G};
        let torrents = self.sources.read();
        fn ih(t: &TorrentRow) -> &str {
            &t.info_hash
        }
        fn one(t: &TorrentRow) -> Vec<Label<'_>> {
            vec![("info_hash", ih(t))]
        }
        let bytes = Some(&Unit::Bytes);
        let e = &mut encoder;
        let series = |f: fn(&TorrentRow) -> u64| torrents.iter().map(move |t| (one(t), ConstCounter::new(f(t))));
        Self::family(
            e,
            "torrent_downloaded",
            "Payload bytes received this session.",
            bytes,
            series(|t| t.downloaded),
            C,
        )?;
        Self::family(e, "torrent_uploaded", "Payload bytes sent this session.", bytes, series(|t| t.uploaded), C)?;
        let rate = |f: fn(&TorrentRow) -> f64| torrents.iter().map(move |t| (one(t), ConstGauge::new(f(t))));
        Self::family(
            e,
            "torrent_download_rate_bytes",
            "Download rate in bytes per second.",
            None,
            rate(|t| t.download_rate),
            G,
        )?;
        Self::family(
            e,
            "torrent_upload_rate_bytes",
            "Upload rate in bytes per second.",
            None,
            rate(|t| t.upload_rate),
            G,
        )?;
        let peers = torrents.iter().flat_map(|t| {
            t.peers.map(|(state, n)| (vec![("info_hash", ih(t)), ("state", state)], ConstGauge::new(n as i64)))
        });
        Self::family(e, "torrent_peers", "Peers of the torrent's pool, by state.", None, peers, G)?;
        let pieces = torrents.iter().flat_map(|t| {
            [("have", t.pieces_have), ("total", t.pieces_total)]
                .map(|(state, n)| (vec![("info_hash", ih(t)), ("state", state)], ConstGauge::new(i64::from(n))))
        });
        Self::family(e, "torrent_pieces", "Pieces of the torrent, had and in total.", None, pieces, G)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_with_total_and_openmetrics_markers_dropped() {
        let om = "# HELP x_bytes Things.\n# TYPE x_bytes counter\n# UNIT x_bytes bytes\nx_bytes_total 2\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(text, "# HELP x_bytes_total Things.\n# TYPE x_bytes_total counter\nx_bytes_total 2\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n");
    }

    #[test]
    fn dht_lookup_times_are_labelled_by_dht() {
        metrics().observe_mainline_lookup(Duration::from_millis(30));
        let text = metrics().encode();
        for dht in ["kad", "mainline"] {
            let series = format!("shoal_dht_lookup_seconds_count{{dht=\"{dht}\"}}");
            assert!(text.contains(&series), "no {series} in\n{text}");
        }
    }

    #[test]
    fn keepalive_snapshot_has_exactly_the_nine_fields() {
        let c = KeepaliveCounters::default();
        c.inc_probe_fail();
        c.inc_probe_fail();
        c.inc_reset_events_published();
        let json = serde_json::to_value(c.snapshot()).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "probe_attempts",
            "probe_success",
            "probe_fail",
            "reconnect_attempts",
            "reconnect_success",
            "repair_triggered",
            "repair_success",
            "repair_fail",
            "reset_events_published",
        ];
        let mut keys = keys;
        keys.sort();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(json["probe_fail"], 2);
        assert_eq!(json["reset_events_published"], 1);
        assert_eq!(json["probe_attempts"], 0);
    }
}
