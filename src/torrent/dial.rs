//! Opening connections to peers: the transport is behind [`Connector`], so the torrent
//! dials TCP addresses and libp2p peers the same way.
use crate::peer::handshake::{self, MessageStream};
use crate::peer::{BoxStream, PeerError};
use crate::types::PeerAddr;
use crate::wire::Handshake;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// Opens a byte stream to a peer address.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, addr: PeerAddr) -> BoxFuture<'static, std::io::Result<BoxStream>>;
}

/// Plain TCP; libp2p addresses are refused (no node running).
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, addr: PeerAddr) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        Box::pin(async move {
            match addr {
                PeerAddr::Tcp(sa) => {
                    let s = tokio::net::TcpStream::connect(sa).await?;
                    s.set_nodelay(true)?;
                    Ok(Box::new(s) as BoxStream)
                }
                PeerAddr::P2p(id) => Err(std::io::Error::other(format!("no libp2p node to reach {id}"))),
            }
        })
    }
}

/// Dials and shakes hands, each step bounded by its timeout.
pub async fn dial(
    connector: Arc<dyn Connector>,
    addr: PeerAddr,
    ours: Handshake,
    connect_timeout: Duration,
    handshake_timeout: Duration,
) -> Result<(MessageStream<BoxStream>, Handshake), PeerError> {
    let stream = tokio::time::timeout(connect_timeout, connector.connect(addr))
        .await
        .map_err(|_| PeerError::Timeout("connect"))??;
    handshake::outbound(stream, ours, handshake_timeout).await
}
