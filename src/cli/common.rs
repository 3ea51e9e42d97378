//! What `download`, `seed` and `node` share: network flags, loading the configuration,
//! resolving `--peer`, logging, and waiting for Ctrl-C.
use crate::cli::bad_input;
use clap::Args;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use shoal::config::Options;
use shoal::mainline::{check_host_port, MainlineConfig, MainlineError};
use shoal::p2p::identity::{self, IdentityLock};
use shoal::p2p::{
    default_identity_path, ConnectionBounds, DhtMode, IdentityError, NatProbe, NodeConfig, NodeError, RelayLimits,
};
use shoal::session::{Session, StartError};
use shoal::types::PeerAddr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Address to accept BitTorrent peers on (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A peer to connect to (repeatable); on `seed`, a peer to serve.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// A DHT node to bootstrap from (repeatable), e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3...
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Addresses of the libp2p node (Kademlia DHT and encrypted peer streams), comma-separated:
    /// TCP (`/ip4/0.0.0.0/tcp/0`) and QUIC (`/ip4/0.0.0.0/udp/0/quic-v1`).
    #[arg(long = "kad-listen", value_name = "MULTIADDR")]
    pub kad_listen: Option<String>,
    /// Turn the DHT off.
    #[arg(long = "no-kad")]
    pub no_kad: bool,
    /// Turn the mainline DHT (BEP 5, the one other BitTorrent clients use) off.
    #[arg(long = "no-dht")]
    pub no_dht: bool,
    /// A mainline DHT node to bootstrap from (repeatable); replaces the usual public ones.
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    /// UDP address of the mainline DHT node (IPv4) [default: 0.0.0.0, port 6881 if free].
    #[arg(long = "dht-listen", value_name = "IP:PORT")]
    pub dht_listen: Option<String>,
    /// Where the mainline routing table is kept between runs (set by the daemon: its state
    /// directory); default: beside the identity file.
    #[arg(skip)]
    pub mainline_nodes: Option<PathBuf>,
    /// The node's key file (created on first use); default in the user's data directory.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// An address others reach our node at (repeatable); default: the listen addresses.
    #[arg(long = "external-addr", value_name = "MULTIADDR")]
    pub external_addrs: Vec<String>,
    /// Find peers on the local network with mDNS.
    #[arg(long)]
    pub mdns: bool,
    /// A peer the key-peer monitor keeps connected (repeatable): a PeerId or a multiaddr
    /// ending in `/p2p/<PeerId>`; added to the config's `key_peers`.
    #[arg(long = "key-peer", value_name = "MULTIADDR_OR_PEERID")]
    pub key_peers: Vec<String>,
    /// Serve diagnostics and metrics over HTTP on this address.
    #[arg(long, value_name = "ADDR")]
    pub diag: Option<SocketAddr>,
    /// TOML configuration file (see the README for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl NetArgs {
    /// Defaults, then the config file, then the environment, then flags; validated as a
    /// whole. The network flags replace their keys (`--listen` is `listen`, `--bootstrap`
    /// replaces `bootstrap`...); `--key-peer` adds to `key_peers`.
    pub fn options(&self) -> anyhow::Result<Arc<Options>> {
        let mut opts = match &self.config {
            Some(path) => Options::from_toml_file(path).map_err(|e| bad_input(e.to_string()))?,
            None => Options::default(),
        };
        opts = opts.with_env(std::env::vars()).map_err(|e| bad_input(e.to_string()))?;
        self.apply_flags(&mut opts)?;
        opts.validate().map_err(|e| bad_input(e.to_string()))?;
        Ok(Arc::new(opts))
    }

    /// The flags over `opts`. Multiaddr flags are checked here, so an error names the flag.
    fn apply_flags(&self, opts: &mut Options) -> anyhow::Result<()> {
        opts.key_peers.extend(self.key_peers.iter().cloned());
        if let Some(a) = self.listen {
            opts.listen = a.to_string();
        }
        if let Some(a) = self.diag {
            opts.diag = a.to_string();
        }
        opts.kad &= !self.no_kad;
        opts.mdns |= self.mdns;
        if let Some(a) = &self.kad_listen {
            let list: Vec<String> = a.split(',').map(|s| s.trim().to_string()).collect();
            multiaddrs("--kad-listen", &list)?;
            opts.kad_listen = a.clone();
        }
        if !self.bootstrap.is_empty() {
            for (a, m) in self.bootstrap.iter().zip(multiaddrs("--bootstrap", &self.bootstrap)?) {
                if !matches!(m.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
                    return Err(bad_input(format!("--bootstrap {a}: does not end in /p2p/<PeerId>")));
                }
            }
            opts.bootstrap = self.bootstrap.clone();
        }
        if !self.external_addrs.is_empty() {
            multiaddrs("--external-addr", &self.external_addrs)?;
            opts.external_addrs = self.external_addrs.clone();
        }
        Ok(())
    }

    /// Resolves every `--peer` (host names allowed); a bad one is the user's mistake.
    pub async fn peer_addrs(&self) -> anyhow::Result<Vec<PeerAddr>> {
        let mut out = Vec::new();
        for p in &self.peers {
            let addrs = tokio::net::lookup_host(p.as_str()).await.map_err(|e| bad_input(format!("--peer {p}: {e}")))?;
            out.extend(addrs.map(PeerAddr::Tcp));
        }
        Ok(out)
    }
}

/// The BitTorrent listen address: `listen` (the flag or the key), else the command's default.
pub fn listen_addr(opts: &Options, default: &str) -> SocketAddr {
    let chosen = if opts.listen.is_empty() { default } else { &opts.listen };
    chosen.parse().expect("validated by Options::validate")
}

/// The diagnostics address, `diag` (the flag or the key), if any.
fn diag_addr(opts: &Options) -> Option<SocketAddr> {
    (!opts.diag.is_empty()).then(|| opts.diag.parse().expect("validated by Options::validate"))
}

fn multiaddrs(flag: &str, values: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    values.iter().map(|v| v.parse().map_err(|e| bad_input(format!("{flag} {v}: {e}")))).collect()
}

impl NetArgs {
    /// The libp2p node these flags ask for, or none with `--no-kad`. `preferred` is the
    /// command's DHT mode when the config leaves it at `auto`.
    pub fn node_config(&self, opts: &Options, preferred: DhtMode) -> anyhow::Result<Option<NodeConfig>> {
        if !opts.kad {
            return Ok(None);
        }
        let keypair = self.keypair()?;
        let bootstrap = multiaddrs("bootstrap", &opts.bootstrap)?;
        refuse_own_peer_id(&keypair.public().to_peer_id(), &bootstrap, &opts.key_peers)?;
        let mut cfg = NodeConfig::new(keypair, opts.dht_query_timeout);
        let listen: Vec<String> = opts.kad_listen_addrs().into_iter().map(String::from).collect();
        cfg.listen = multiaddrs("kad_listen", &listen)?;
        cfg.bootstrap = bootstrap;
        cfg.external = multiaddrs("external_addrs", &opts.external_addrs)?;
        cfg.mdns = opts.mdns;
        cfg.limits = ConnectionBounds {
            established: opts.kad_max_connections,
            per_peer: opts.kad_max_connections_per_peer,
            pending_incoming: opts.kad_max_pending_incoming,
            pending_per_ip: opts.kad_max_pending_per_ip,
            established_per_ip: opts.kad_max_established_per_ip,
            memory_bytes: (opts.kad_max_memory_mb > 0)
                .then(|| (opts.kad_max_memory_mb as usize).saturating_mul(1 << 20)),
        };
        cfg.nat = NatProbe { interval: opts.autonat_interval, only_global_ips: opts.autonat_only_global_ips };
        cfg.relay = opts.relay.then_some(RelayLimits {
            max_circuit_duration: opts.relay_max_circuit_duration,
            max_circuit_bytes: opts.relay_max_circuit_bytes,
        });
        cfg.dht_mode = effective_mode(opts, preferred)?;
        Ok(Some(cfg))
    }

    /// Starts the session a command runs: the BitTorrent listener on `listen` (none: no
    /// listener), the libp2p node unless `--no-kad`, the key-peer monitor on it, and
    /// diagnostics with `--diag`. A bad address or key peer is the user's mistake.
    pub async fn start_session(
        &self,
        options: &Arc<Options>,
        listen: Option<SocketAddr>,
        preferred: DhtMode,
    ) -> anyhow::Result<Session> {
        let mut builder = Session::builder(options.clone());
        if let Some(addr) = listen {
            builder = builder.listen(addr);
        }
        if let Some(cfg) = self.node_config(options, preferred)? {
            builder = builder.node(cfg);
        }
        // Without a BitTorrent listener (`node`) there is nothing to announce or download.
        if let Some(cfg) = self.mainline_config(options)?.filter(|_| listen.is_some()) {
            builder = builder.mainline(cfg);
        }
        let diag = diag_addr(options);
        if let Some(addr) = diag {
            builder = builder.diagnostics(addr);
        }
        builder.start().await.map_err(|e| match e {
            StartError::Node(NodeError::BootstrapAddr(_) | NodeError::Listen { .. }) | StartError::KeyPeers(_) => {
                bad_input(e.to_string())
            }
            StartError::Diagnostics(_) => bad_input(format!("--diag {}: {e}", diag.expect("asked for"))),
            StartError::Mainline(MainlineError::Listen { .. } | MainlineError::Bootstrap(_)) => {
                bad_input(e.to_string())
            }
            StartError::Listen(_) | StartError::Node(_) | StartError::Mainline(_) => anyhow::Error::new(e),
        })
    }
}

/// Prints the `listening ...` lines scripts wait for: `bt` (with `bt`, when the session
/// listens), each address of the libp2p node, and the diagnostics.
pub async fn announce_listening(session: &Session, bt: bool) -> anyhow::Result<()> {
    if let Some(a) = session.listen_addr().filter(|_| bt) {
        announce_line(&format!("listening bt {a}"));
    }
    if let Some(node) = session.node() {
        for a in node.listen_addrs().await? {
            announce_line(&format!("listening kad {a}"));
        }
    }
    if let Some(dht) = session.mainline() {
        announce_line(&format!("listening dht {}", dht.local_addr()));
    }
    if let Some(a) = session.diag_addr() {
        announce_line(&format!("listening diag {a}"));
    }
    Ok(())
}

impl NetArgs {
    /// The mainline DHT node these flags and `options` ask for: none with `--no-dht`, or when
    /// `mainline_dht = false` and no `--dht-*` flag asks for it. `--dht-bootstrap` replaces
    /// the bootstrap list. The routing table is kept between runs in `mainline-nodes` beside
    /// the identity file (the daemon: in its state directory), marked with the bootstrap list
    /// it was learned from.
    pub fn mainline_config(&self, opts: &Options) -> anyhow::Result<Option<MainlineConfig>> {
        let asked = !self.dht_bootstrap.is_empty() || self.dht_listen.is_some();
        if self.no_dht && asked {
            return Err(bad_input("--no-dht: cannot be given with --dht-bootstrap or --dht-listen"));
        }
        if self.no_dht || !(opts.mainline_dht || asked) {
            return Ok(None);
        }
        for b in &self.dht_bootstrap {
            check_host_port(b).map_err(|why| bad_input(format!("--dht-bootstrap {b}: {why}")))?;
        }
        let listen = match &self.dht_listen {
            Some(s) => Some(s.parse().map_err(|_| bad_input(format!("--dht-listen {s}: not an IPv4 IP:PORT")))?),
            None => opts.mainline_listen_addr().map_err(|e| bad_input(e.to_string()))?,
        };
        let bootstrap =
            if self.dht_bootstrap.is_empty() { opts.mainline_bootstrap.clone() } else { self.dht_bootstrap.clone() };
        let nodes_file = self.mainline_nodes.clone().or_else(|| {
            let identity = self.identity.clone().or_else(|| default_identity_path().ok())?;
            Some(identity.parent()?.join("mainline-nodes"))
        });
        Ok(Some(MainlineConfig { bootstrap, listen, nodes_file }))
    }
}

/// The identity lock of this process, held until it exits.
static IDENTITY_LOCK: OnceLock<IdentityLock> = OnceLock::new();

impl NetArgs {
    /// The node's key, its file locked for the life of the process. An explicit `--identity`
    /// in use by another process is refused; the default file in use means a fresh key for
    /// this run, with one warning, so side-by-side processes are distinct peers.
    fn keypair(&self) -> anyhow::Result<Keypair> {
        let (path, explicit) = match &self.identity {
            Some(p) => (p.clone(), true),
            None => (default_identity_path()?, false),
        };
        match identity::load_locked(&path) {
            Ok((keypair, lock)) => {
                // Set at most once: a second lock of the same file would have failed above.
                let _ = IDENTITY_LOCK.set(lock);
                Ok(keypair)
            }
            Err(IdentityError::Locked { .. }) if !explicit => {
                tracing::warn!(
                    "identity file {} is in use by another shoal process; this one runs with a temporary \
                     identity (give it a lasting one with --identity FILE)",
                    path.display()
                );
                Ok(Keypair::generate_ed25519())
            }
            Err(e) => Err(bad_input(e.to_string())),
        }
    }
}

/// A bootstrap node or key peer that is this node itself is a mistake (usually the address
/// of another process that shared our identity): refused with the flag or key that named it.
fn refuse_own_peer_id(own: &PeerId, bootstrap: &[Multiaddr], key_peers: &[String]) -> anyhow::Result<()> {
    for addr in bootstrap {
        if let Some(Protocol::P2p(id)) = addr.iter().last() {
            if id == *own {
                return Err(bad_input(format!("--bootstrap {addr}: that is this node's own PeerId {own}")));
            }
        }
    }
    for entry in key_peers {
        if shoal::types::parse_key_peer(entry).is_ok_and(|(id, _)| id == *own) {
            return Err(bad_input(format!("key peer {entry}: that is this node's own PeerId {own}")));
        }
    }
    Ok(())
}

/// The DHT mode: the config's unless it says `auto`, then the command's preference.
pub fn effective_mode(opts: &Options, preferred: DhtMode) -> anyhow::Result<DhtMode> {
    Ok(match opts.dht_mode.parse::<DhtMode>().map_err(|e| bad_input(format!("config key `dht_mode`: {e}")))? {
        DhtMode::Auto => preferred,
        chosen => chosen,
    })
}

/// Logs to stderr; `RUST_LOG` overrides the default (warnings, and shoal's own info lines
/// unless quiet). The `mainline` crate's own lines are off: it logs a bootstrap that found no
/// node as an ERROR every two seconds; shoal warns once instead (`shoal::mainline`).
pub fn init_logging(quiet: bool) {
    let default = if quiet { "error,mainline=off" } else { "warn,shoal=info,mainline=off" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Prints a line on stdout and flushes it, for scripts that wait for it.
pub fn announce_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How long an orderly shutdown (the trackers' `stopped`, peers closed, tasks joined) may
/// take after Ctrl-C before the process exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Runs an orderly shutdown, but never for more than `SHUTDOWN_GRACE`, and not at all past
/// a second Ctrl-C: whatever peers or trackers do, an interrupted shoal exits promptly.
pub async fn shutdown_promptly(shutdown: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = shutdown => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("shutdown took longer than {SHUTDOWN_GRACE:?}; exiting without waiting for the rest");
        }
        _ = interrupted() => tracing::warn!("interrupted again; exiting now"),
    }
}

/// Formats bytes in binary units, as the progress line shows them.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    // Rates decay toward zero and may end a hair below it.
    let mut v = b.max(0.0);
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
