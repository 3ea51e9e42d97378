//! The piece-throughput benchmark behind `shoal bench`: a loopback swarm of generated data
//! run through the same `Session`s and torrent tasks as `download` and `seed`.
//!
//! Set-up (generating the data, making the torrent, the seeders' start-up hash check) is
//! timed apart from the transfer; the transfer clock starts when the leechers are added
//! and stops for each leecher when its last piece is verified on disk. The process's CPU
//! time (user and system, every thread: seeders and leechers together) is read at both ends
//! of the transfer, so the report says what the bytes cost as well as how fast they moved.
use serde::Serialize;
use shoal::config::Options;
use shoal::metainfo::create::{create_torrent, CreateOptions};
use shoal::metainfo::Metainfo;
use shoal::p2p::{peer_addr, DhtMode, NodeConfig};
use shoal::session::Session;
use shoal::torrent::{Phase, TorrentHandle};
use shoal::types::PeerAddr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the bench's peers talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The BitTorrent wire protocol over plain TCP.
    Tcp,
    /// The same protocol over `/shoal/bt/1.0.0` libp2p streams (TCP + TLS or Noise + Yamux; TLS with AES-GCM between shoal nodes).
    Libp2p,
    /// The same libp2p streams over QUIC.
    Quic,
}

impl Transport {
    /// Where a bench node listens, for the libp2p transports.
    fn listen(self) -> Option<&'static str> {
        match self {
            Transport::Tcp => None,
            Transport::Libp2p => Some("/ip4/127.0.0.1/tcp/0"),
            Transport::Quic => Some("/ip4/127.0.0.1/udp/0/quic-v1"),
        }
    }

    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Libp2p => "libp2p (tls + yamux)",
            Transport::Quic => "libp2p over quic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub transport: Transport,
    pub size: u64,
    pub piece_size: u32,
    pub seeders: usize,
    pub leechers: usize,
    /// Longest the transfer may take before the bench gives up.
    pub timeout: Duration,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            transport: Transport::Tcp,
            size: 1 << 30,
            piece_size: 1 << 20,
            seeders: 1,
            leechers: 1,
            timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LeecherResult {
    pub seconds: f64,
    pub mib_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub size: u64,
    pub piece_size: u32,
    pub seeders: usize,
    pub leechers: usize,
    pub transport: Transport,
    pub setup_seconds: f64,
    /// From adding the leechers until the last one completed.
    pub wall_seconds: f64,
    /// Bytes delivered to all leechers over the wall time.
    pub swarm_mib_per_s: f64,
    /// CPU time of the whole process (every seeder and leecher) over the wall time; absent
    /// where `/proc/self/stat` cannot be read.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds` per GiB delivered to all leechers.
    pub cpu_seconds_per_gib: Option<f64>,
    pub per_leecher: Vec<LeecherResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench set-up: {0}")]
    Setup(String),
    #[error("a leecher did not complete: {0}")]
    Incomplete(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Fills a file with pseudo-random bytes (xorshift64*), fast and incompressible enough.
fn generate(path: &Path, size: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(path)?);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// A session on 127.0.0.1 and the address others reach it at; with libp2p, a node of its own
/// that knows every node started before it.
async fn start_session(
    transport: Transport,
    options: &Arc<Options>,
    book: &mut Vec<(libp2p::PeerId, libp2p::Multiaddr)>,
) -> Result<(Session, PeerAddr), String> {
    let loopback = "127.0.0.1:0".parse().expect("valid address");
    let mut builder = Session::builder(options.clone()).listen(loopback);
    if let Some(listen) = transport.listen() {
        let mut cfg = NodeConfig::new(libp2p::identity::Keypair::generate_ed25519(), options.dht_query_timeout);
        cfg.listen = vec![listen.parse().expect("valid multiaddr")];
        cfg.dht_mode = DhtMode::Server;
        // Every node of the loopback swarm comes from 127.0.0.1.
        (cfg.limits.pending_per_ip, cfg.limits.established_per_ip) = (u32::MAX, u32::MAX);
        builder = builder.node(cfg);
    }
    let s = builder.start().await.map_err(|e| e.to_string())?;
    let Some(node) = s.node() else {
        let addr = PeerAddr::Tcp(s.listen_addr().expect("listening"));
        return Ok((s, addr));
    };
    for (peer, addr) in book.iter() {
        node.add_address(*peer, addr.clone()).await.map_err(|e| e.to_string())?;
    }
    let own = node.listen_addrs().await.map_err(|e| e.to_string())?.into_iter().next().ok_or("node has no address")?;
    book.push((node.peer_id(), shoal::p2p::book::strip_p2p(&own)));
    let addr = peer_addr(&node.peer_id());
    Ok((s, addr))
}

/// User and system CPU time of this process so far, from `/proc/self/stat` (fields 14 and 15,
/// in clock ticks of 1/100 s: Linux's `USER_HZ` on every architecture it ships for shoal).
fn process_cpu() -> Option<Duration> {
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

fn setup_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// The generated data (under `dir/seed/`) and its torrent.
async fn prepare_data(cfg: &BenchConfig, dir: &Path) -> Result<(PathBuf, Arc<Metainfo>), BenchError> {
    let seed_root = dir.join("seed");
    std::fs::create_dir_all(&seed_root).map_err(setup_err)?;
    let data = seed_root.join("shoal-bench.bin");
    let size = cfg.size;
    let data2 = data.clone();
    tokio::task::spawn_blocking(move || generate(&data2, size)).await.map_err(setup_err)?.map_err(setup_err)?;
    let opts = CreateOptions { piece_length: Some(cfg.piece_size), ..Default::default() };
    let bytes = tokio::task::spawn_blocking(move || create_torrent(&data, &opts))
        .await
        .map_err(setup_err)?
        .map_err(setup_err)?;
    let meta = Arc::new(Metainfo::from_bytes(&bytes).map_err(setup_err)?);
    Ok((seed_root, meta))
}

/// The defaults, but with per-IP bounds that admit every session of the swarm (all on
/// 127.0.0.1), and no key-peer monitor: its probes would be traffic the bench does not measure.
fn swarm_options(cfg: &BenchConfig) -> Arc<Options> {
    let peers = 2 * (cfg.seeders + cfg.leechers);
    Arc::new(Options {
        max_connections_per_ip: peers.max(Options::default().max_connections_per_ip),
        max_inbound_handshakes_per_ip: peers.max(Options::default().max_inbound_handshakes_per_ip),
        enable_key_peer_monitor: false,
        ..Options::default()
    })
}

/// The swarm's sessions, the addresses of those started so far, and (libp2p) their nodes.
#[derive(Default)]
struct Swarm {
    sessions: Vec<Session>,
    addrs: Vec<PeerAddr>,
    /// libp2p: every node learns the others' addresses as they start, so PeerIds dial.
    book: Vec<(libp2p::PeerId, libp2p::Multiaddr)>,
}

impl Swarm {
    /// Starts a session with the torrent at `output`; a leecher is told every earlier address.
    async fn add(
        &mut self,
        cfg: &BenchConfig,
        options: &Arc<Options>,
        meta: &Arc<Metainfo>,
        output: PathBuf,
        leecher: bool,
    ) -> Result<TorrentHandle, BenchError> {
        let (s, addr) = start_session(cfg.transport, options, &mut self.book).await.map_err(setup_err)?;
        let h = s.add_torrent(meta.clone(), output);
        if leecher {
            h.add_peers(self.addrs.clone()).await;
        }
        self.addrs.push(addr);
        self.sessions.push(s);
        Ok(h)
    }

    async fn shutdown(&self) {
        for s in &self.sessions {
            s.shutdown().await;
        }
    }
}

pub async fn run(cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    let setup = Instant::now();
    let dir = tempfile::Builder::new().prefix("shoal-bench").tempdir().map_err(setup_err)?;
    let (seed_root, meta) = prepare_data(cfg, dir.path()).await?;
    let options = swarm_options(cfg);
    let mut swarm = Swarm::default();
    let mut seeders = Vec::new();
    for _ in 0..cfg.seeders {
        seeders.push(swarm.add(cfg, &options, &meta, seed_root.clone(), false).await?);
    }
    for h in &seeders {
        h.wait_complete().await.map_err(|e| BenchError::Setup(format!("seeder: {e}")))?;
    }
    let setup_seconds = setup.elapsed().as_secs_f64();

    let start = Instant::now();
    let cpu_start = process_cpu();
    let mut leechers = Vec::new();
    for i in 0..cfg.leechers {
        leechers.push(swarm.add(cfg, &options, &meta, dir.path().join(format!("leech{i}")), true).await?);
    }
    let waits = leechers.iter().map(|h| async move { h.wait_complete().await.map(|_| start.elapsed()) });
    let done = tokio::time::timeout(cfg.timeout, futures::future::join_all(waits))
        .await
        .map_err(|_| BenchError::Timeout(cfg.timeout))?;
    let wall = start.elapsed();
    let cpu = process_cpu().zip(cpu_start).map(|(end, start)| end.saturating_sub(start).as_secs_f64());
    swarm.shutdown().await;
    let mib = cfg.size as f64 / (1024.0 * 1024.0);
    let gib_delivered = (cfg.size * cfg.leechers as u64) as f64 / (1u64 << 30) as f64;
    let mut per_leecher = Vec::new();
    for d in done {
        let t = d.map_err(|e| BenchError::Incomplete(e.to_string()))?.as_secs_f64();
        per_leecher.push(LeecherResult { seconds: t, mib_per_s: mib / t });
    }
    debug_assert!(leechers.iter().all(|h| h.stats().borrow().phase == Phase::Seeding));
    Ok(BenchReport {
        size: cfg.size,
        piece_size: cfg.piece_size,
        seeders: cfg.seeders,
        leechers: cfg.leechers,
        transport: cfg.transport,
        setup_seconds,
        wall_seconds: wall.as_secs_f64(),
        swarm_mib_per_s: mib * cfg.leechers as f64 / wall.as_secs_f64(),
        cpu_seconds: cpu,
        cpu_seconds_per_gib: cpu.map(|c| c / gib_delivered),
        per_leecher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_counts_the_work_done() {
        let start = process_cpu().expect("/proc/self/stat is readable on Linux");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        // Spin until the counter shows 50 ms more; a counter that never moves fails at the deadline.
        while process_cpu().expect("readable").saturating_sub(start) < Duration::from_millis(50) {
            assert!(Instant::now() < deadline, "50 ms of spinning never showed in /proc/self/stat");
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }
}
