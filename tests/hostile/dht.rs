//! [`EndlessDht`]: a fake mainline DHT (BEP 5) network on 127.0.0.1 in which a `get_peers`
//! lookup takes a long time and finds nothing.
//!
//! The nodes come in layers of eight UDP sockets, each layer bound when the one before first
//! answers. Every node answers every query after [`DELAY`] (inside the `mainline` crate's 2 s
//! request timeout). To `get_peers` it answers with the eight nodes of the next layer, whose
//! ids are one bit closer to the target than its own, so a lookup always has closer nodes to
//! ask and never gets a peer. To anything else (`find_node`, `ping`) it answers with no nodes,
//! so the querier's routing table holds the first layer only and each lookup starts there.
//!
//! The `mainline` crate keeps one candidate per IP address among those whose ids differ in the
//! first 21 bits, so it asks one node per layer and stops after 21 layers: a lookup here takes
//! about `21 × DELAY` (25 s). At most [`LAYERS`] layers are bound.
use shoal::bencode::{decode, encode, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// How long each node takes to answer.
pub const DELAY: Duration = Duration::from_millis(1200);
/// Layers of nodes at most (below 152, so an id's last byte is free to tell a layer's apart).
pub const LAYERS: usize = 40;
const _: () = assert!(LAYERS < 152);
const PER_LAYER: usize = 8;

struct Shared {
    /// The bound layers, each `PER_LAYER` addresses.
    layers: Mutex<Vec<Vec<SocketAddr>>>,
    /// `get_peers` queries answered for each target, and the deepest layer that answered one.
    get_peers: Mutex<BTreeMap<[u8; 20], (usize, usize)>>,
    queries: AtomicUsize,
    tasks: Mutex<JoinSet<()>>,
}

/// The network; its sockets close when it is dropped.
pub struct EndlessDht {
    shared: Arc<Shared>,
    /// The node to bootstrap from (layer 0).
    pub bootstrap: SocketAddr,
}

impl EndlessDht {
    /// Binds the first layer; call inside a Tokio runtime.
    pub fn start() -> EndlessDht {
        let shared = Arc::new(Shared {
            layers: Mutex::new(Vec::new()),
            get_peers: Mutex::new(BTreeMap::new()),
            queries: AtomicUsize::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        bind_layer(&shared);
        let bootstrap = shared.layers.lock().unwrap()[0][0];
        EndlessDht { shared, bootstrap }
    }

    /// `get_peers` queries answered for `info_hash` so far, and the deepest layer that
    /// answered one.
    pub fn get_peers_for(&self, info_hash: &[u8; 20]) -> (usize, usize) {
        self.shared.get_peers.lock().unwrap().get(info_hash).copied().unwrap_or((0, 0))
    }

    /// Queries of any kind received so far.
    pub fn queries(&self) -> usize {
        self.shared.queries.load(Ordering::Relaxed)
    }
}

impl Drop for EndlessDht {
    fn drop(&mut self) {
        self.shared.tasks.lock().unwrap().abort_all();
    }
}

/// Binds the next layer (unless all are bound) and starts serving it.
fn bind_layer(shared: &Arc<Shared>) {
    let depth = shared.layers.lock().unwrap().len();
    if depth >= LAYERS {
        return;
    }
    let mut sockets = Vec::new();
    for _ in 0..PER_LAYER {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a fake DHT node");
        socket.set_nonblocking(true).unwrap();
        sockets.push(Arc::new(UdpSocket::from_std(socket).unwrap()));
    }
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    {
        let mut layers = shared.layers.lock().unwrap();
        if layers.len() != depth {
            return; // another node bound this layer meanwhile
        }
        layers.push(addrs);
    }
    let mut tasks = shared.tasks.lock().unwrap();
    for socket in sockets {
        tasks.spawn(serve(socket, depth, shared.clone()));
    }
}

/// One node of layer `depth`: answers each query after `DELAY`.
async fn serve(socket: Arc<UdpSocket>, depth: usize, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
        let Ok(query) = decode(&buf[..n]) else { continue };
        if query.get("y").and_then(Value::as_bytes) != Some(b"q") {
            continue;
        }
        shared.queries.fetch_add(1, Ordering::Relaxed);
        let (socket, shared, query) = (socket.clone(), shared.clone(), query.clone());
        tokio::spawn(async move {
            tokio::time::sleep(DELAY).await;
            if let Some(reply) = answer(&query, depth, &shared) {
                let _ = socket.send_to(&reply, from).await;
            }
        });
    }
}

/// The reply of a node of layer `depth` to `query`: its id, one bit closer to the target than
/// the layer before; to `get_peers`, the next layer's nodes, one bit closer still.
fn answer(query: &Value, depth: usize, shared: &Arc<Shared>) -> Option<Vec<u8>> {
    let t = query.get("t")?.as_bytes()?.to_vec();
    let method = query.get("q")?.as_bytes()?;
    let args = query.get("a")?;
    let target: [u8; 20] = args
        .get("info_hash")
        .or_else(|| args.get("target"))
        .or_else(|| args.get("id"))
        .and_then(Value::as_bytes)
        .and_then(|b| b.try_into().ok())?;
    let mut r = Value::dict().with("id", Value::Bytes(id_near(&target, depth, 0).to_vec()));
    if method == b"get_peers" {
        {
            let mut seen = shared.get_peers.lock().unwrap();
            let e = seen.entry(target).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(depth);
        }
        if shared.layers.lock().unwrap().len() <= depth + 1 {
            bind_layer(shared);
        }
        let next = shared.layers.lock().unwrap().get(depth + 1).cloned().unwrap_or_default();
        let mut nodes = Vec::new();
        for (i, addr) in next.iter().enumerate() {
            nodes.extend_from_slice(&id_near(&target, depth + 1, i as u8));
            let SocketAddr::V4(v4) = addr else { unreachable!("bound on 127.0.0.1") };
            nodes.extend_from_slice(&v4.ip().octets());
            nodes.extend_from_slice(&v4.port().to_be_bytes());
        }
        r = r.with("nodes", Value::Bytes(nodes)).with("token", Value::Bytes(b"fake".to_vec()));
    }
    let reply = Value::dict().with("t", Value::Bytes(t)).with("y", Value::Bytes(b"r".to_vec())).with("r", r.build());
    Some(encode(&reply.build()))
}

/// An id at distance about 2^(159 - depth) from `target` (bit `depth` flipped), told apart
/// from its layer's others by its last byte.
fn id_near(target: &[u8; 20], depth: usize, which: u8) -> [u8; 20] {
    let mut id = *target;
    id[depth / 8] ^= 0x80 >> (depth % 8);
    id[19] = which;
    id
}
