//! What the rest of shoal holds of the node: the cloneable [`NodeHandle`], and the `Command`s
//! it sends to the event loop (`event_loop.rs`), each carrying a `oneshot` for the reply
//! (the shape of rust-libp2p's file-sharing example). Every call is bounded by
//! [`NodeConfig::query_timeout`]; a handle whose node has stopped fails with
//! [`NodeError::Stopped`].
use super::event_loop::EventLoop;
use super::node::{NodeConfig, NodeError, Provider, Reachability, Trouble, BT_PROTOCOL};
use super::pending::Reply;
use super::relay_server::Reservations;
use super::swarm;
use libp2p::{Multiaddr, PeerId};
use libp2p_stream::IncomingStreams;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Commands queued for the event loop before callers wait.
const COMMAND_QUEUE: usize = 64;
/// Troubles kept for a listener that is behind.
const TROUBLE_BACKLOG: usize = 16;
/// How long opening a stream waits for a hole punch to replace a relayed connection (DCUtR
/// makes up to three attempts).
const HOLE_PUNCH_WAIT: Duration = Duration::from_secs(15);

/// What a handle asks of the event loop.
pub(super) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    AddAddress { peer: PeerId, addr: Multiaddr, done: oneshot::Sender<()> },
    StartProviding { key: Vec<u8>, reply: Reply<()> },
    StopProviding { key: Vec<u8> },
    GetProviders { key: Vec<u8>, reply: Reply<Vec<Provider>> },
    FindPeer { peer: PeerId, reply: Reply<Vec<Multiaddr>> },
    Ping { peer: PeerId, reply: Reply<Duration> },
    Dial { peer: PeerId, reply: Reply<()> },
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    RoutingTableSize(oneshot::Sender<usize>),
    RoutingTablePeers(oneshot::Sender<Vec<PeerId>>),
    Reachability(oneshot::Sender<(Reachability, &'static str)>),
    Bootstrap(Reply<()>),
    AwaitDirect { peer: PeerId, reply: Reply<bool> },
    Shutdown,
}

/// A cloneable handle to the node task. The task stops on [`NodeHandle::shutdown`], when the
/// cancellation token it was spawned with is cancelled, or when the last handle is dropped.
#[derive(Clone)]
pub struct NodeHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    troubles: tokio::sync::broadcast::Sender<Trouble>,
    control: libp2p_stream::Control,
    incoming: Arc<Mutex<Option<IncomingStreams>>>,
    timeout: Duration,
}

impl NodeHandle {
    /// [`NodeHandle::spawn_tracked`] on a tracker and token of its own: the node runs until
    /// [`NodeHandle::shutdown`] or the last handle is dropped.
    pub async fn spawn(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        let tracker = TaskTracker::new();
        let node = NodeHandle::spawn_tracked(config, &tracker, CancellationToken::new()).await;
        tracker.close();
        node
    }

    /// Builds the swarm, starts listening (waiting until each listener has an address), dials
    /// the bootstrap nodes and spawns the event loop on `tracker`; the loop also stops when
    /// `cancel` is cancelled.
    pub async fn spawn_tracked(
        config: NodeConfig,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<NodeHandle, NodeError> {
        let peer_id = config.keypair.public().to_peer_id();
        let reservations = Reservations::default();
        let (swarm, listeners) = swarm::start(&config, &reservations)?;
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control.accept(BT_PROTOCOL).map_err(|e| NodeError::Transport(e.to_string()))?;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let troubles = tokio::sync::broadcast::channel(TROUBLE_BACKLOG).0;
        let mut event_loop = EventLoop::new(swarm, rx, troubles.clone(), &config, reservations);
        event_loop.await_listeners(listeners).await?;
        event_loop.dial_bootstrap(&config.bootstrap)?;
        tracker.spawn(event_loop.run(cancel));
        Ok(NodeHandle {
            peer_id,
            commands: tx,
            troubles,
            control,
            incoming: Arc::new(Mutex::new(Some(incoming))),
            timeout: config.query_timeout,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs that discovery should look again ([`Trouble`]), from now on. A listener that
    /// falls behind misses some; one is as good as many.
    pub fn troubles(&self) -> tokio::sync::broadcast::Receiver<Trouble> {
        self.troubles.subscribe()
    }

    /// Current listen addresses, each ending in `/p2p/<our PeerId>` (what others pass to
    /// `--bootstrap`).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask("listen_addrs", Command::ListenAddrs).await
    }

    /// Remembers an address of a peer (e.g. from `--peer /ip4/../p2p/<id>`) for later dials;
    /// returns once the node has it, so a dial that follows uses it.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask("add_address", |done| Command::AddAddress { peer, addr, done }).await
    }

    /// Announces us as a provider of `key` and keeps it announced (libp2p-kad republishes).
    /// Returns once the first announcement has been stored at the closest peers found.
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<(), NodeError> {
        self.ask("start_providing", |reply| Command::StartProviding { key, reply }).await?
    }

    /// Stops republishing; records already stored elsewhere expire after
    /// [`PROVIDER_TTL`](super::node::PROVIDER_TTL).
    pub async fn stop_providing(&self, key: Vec<u8>) -> Result<(), NodeError> {
        self.send(Command::StopProviding { key }).await
    }

    /// Providers of `key` (ourselves excluded) with their addresses, at most
    /// [`MAX_PROVIDERS_PER_LOOKUP`](super::node::MAX_PROVIDERS_PER_LOOKUP).
    pub async fn get_providers(&self, key: Vec<u8>) -> Result<Vec<Provider>, NodeError> {
        self.ask("get_providers", |reply| Command::GetProviders { key, reply }).await?
    }

    /// The addresses of `peer`, found with a closest-peers lookup of its PeerId.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask("find_peer", |reply| Command::FindPeer { peer, reply }).await?
    }

    /// Round-trip time to `peer`, dialling it when not connected: the latest ping on a live
    /// connection, or the first one on a new connection.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, NodeError> {
        self.ask("ping", |reply| Command::Ping { peer, reply }).await?
    }

    /// Connects to `peer` by PeerId (addresses from the address book and Kademlia) and
    /// returns once a connection is established; at once when one already is.
    pub async fn dial(&self, peer: PeerId) -> Result<(), NodeError> {
        self.ask("dial", |reply| Command::Dial { peer, reply }).await?
    }

    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask("connected_peers", Command::ConnectedPeers).await
    }

    pub async fn is_connected(&self, peer: PeerId) -> Result<bool, NodeError> {
        Ok(self.connected_peers().await?.contains(&peer))
    }

    /// Peers in the Kademlia routing table.
    pub async fn routing_table_size(&self) -> Result<usize, NodeError> {
        self.ask("routing_table_size", Command::RoutingTableSize).await
    }

    /// The peers in the Kademlia routing table (Kademlia keeps only those that answer),
    /// closest buckets first.
    pub async fn routing_table_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask("routing_table_peers", Command::RoutingTablePeers).await
    }

    /// AutoNAT's latest verdict on whether other peers can dial us.
    pub async fn reachability(&self) -> Result<Reachability, NodeError> {
        Ok(self.ask("reachability", Command::Reachability).await?.0)
    }

    /// The verdict and Kademlia's mode now (`server` or `client`), which follows the verdict
    /// in `DhtMode::Auto`.
    pub async fn reachability_and_mode(&self) -> Result<(Reachability, &'static str), NodeError> {
        self.ask("reachability", Command::Reachability).await
    }

    /// Runs a Kademlia bootstrap (self-lookup and bucket refresh) to completion.
    pub async fn bootstrap(&self) -> Result<(), NodeError> {
        self.ask("bootstrap", Command::Bootstrap).await?
    }

    /// Opens a `/shoal/bt/1.0.0` stream to `peer`, dialling it by PeerId when not connected
    /// (addresses from the address book and Kademlia).
    ///
    /// Each call clones the stream `Control`, and each clone owns one queue slot inside
    /// libp2p-stream; concurrent calls are bounded by the caller (the pool's `max_connecting`).
    pub async fn open_stream(&self, peer: PeerId) -> Result<libp2p::Stream, NodeError> {
        self.dial(peer).await?;
        // Reached only through a relay, the peer may be getting a direct connection (a hole
        // punch): wait for it, within bounds, so the stream does not stay on the relay.
        let wait = HOLE_PUNCH_WAIT.min(self.timeout);
        let direct = self.ask("await_direct", |reply| Command::AwaitDirect { peer, reply });
        if let Ok(Ok(Ok(false))) = tokio::time::timeout(wait, direct).await {
            tracing::debug!(%peer, "opening a stream through a relay");
        }
        let mut control = self.control.clone();
        match tokio::time::timeout(self.timeout, control.open_stream(peer, BT_PROTOCOL)).await {
            Err(_) => Err(NodeError::Timeout("open_stream")),
            Ok(Err(e)) => Err(NodeError::OpenStream { peer, reason: e.to_string() }),
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    /// The inbound `/shoal/bt/1.0.0` streams; `Some` only on the first call. Streams that
    /// arrive while no one polls are dropped by libp2p-stream, not queued.
    pub fn take_incoming(&self) -> Option<IncomingStreams> {
        self.incoming.lock().ok()?.take()
    }

    /// Stops the event loop; connections close and later calls fail with `Stopped`.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    async fn send(&self, cmd: Command) -> Result<(), NodeError> {
        match tokio::time::timeout(self.timeout, self.commands.send(cmd)).await {
            Err(_) => Err(NodeError::Timeout("command queue")),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn ask<T>(
        &self,
        what: &'static str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.commands.send(make(tx)).await.map_err(|_| NodeError::Stopped)?;
            rx.await.map_err(|_| NodeError::Stopped)
        };
        tokio::time::timeout(self.timeout, asked).await.map_err(|_| NodeError::Timeout(what))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    #[tokio::test]
    async fn the_event_loop_is_tracked_and_stops_on_cancel() {
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let config = NodeConfig::new(Keypair::generate_ed25519(), Duration::from_secs(30));
        let node = NodeHandle::spawn_tracked(config, &tracker, cancel.clone()).await.expect("node starts");
        assert_eq!(tracker.len(), 1, "the event loop runs on the caller's tracker");
        assert!(node.connected_peers().await.expect("the loop answers").is_empty());
        tracker.close();
        cancel.cancel();
        // A handle is still alive, so only the token can have stopped the loop.
        tokio::time::timeout(Duration::from_secs(60), tracker.wait())
            .await
            .expect("the event loop did not stop within 60 s of cancel");
        assert!(matches!(node.connected_peers().await, Err(NodeError::Stopped)));
    }
}
