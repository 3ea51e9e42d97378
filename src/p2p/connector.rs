//! The [`Connector`] that reaches libp2p peers: `PeerAddr::P2p` opens a `/shoal/bt/1.0.0`
//! stream through the node, `PeerAddr::Tcp` goes to plain TCP. The libp2p stream speaks
//! futures-io; it is adapted to tokio-io with `tokio_util::compat` so the peer connection code
//! runs on it unchanged.
use super::handle::NodeHandle;
use crate::peer::BoxStream;
use crate::torrent::{Connector, TcpConnector};
use crate::types::PeerAddr;
use futures::future::BoxFuture;
use libp2p::PeerId;
use std::io;
use tokio_util::compat::FuturesAsyncReadCompatExt;

pub struct P2pConnector {
    node: NodeHandle,
    fallback: TcpConnector,
}

impl P2pConnector {
    pub fn new(node: NodeHandle) -> P2pConnector {
        P2pConnector { node, fallback: TcpConnector }
    }
}

impl Connector for P2pConnector {
    fn connect(&self, addr: PeerAddr) -> BoxFuture<'static, io::Result<BoxStream>> {
        let id = match addr {
            PeerAddr::P2p(id) => id,
            tcp @ PeerAddr::Tcp(_) => return self.fallback.connect(tcp),
        };
        let node = self.node.clone();
        Box::pin(async move {
            let stream = node.open_stream(id).await.map_err(io::Error::other)?;
            Ok(into_box_stream(stream))
        })
    }
}

/// A libp2p stream as a peer stream (for inbound streams too).
pub fn into_box_stream(stream: libp2p::Stream) -> BoxStream {
    Box::new(stream.compat())
}

/// How the pool names a libp2p peer.
pub fn peer_addr(peer: &PeerId) -> PeerAddr {
    PeerAddr::P2p(*peer)
}
