//! The [`Connector`] that reaches libp2p peers: `PeerAddr::P2p` opens a `/shoal/bt/1.0.0`
//! stream through the node, `PeerAddr::Tcp` goes to plain TCP. The libp2p stream speaks
//! futures-io; `Libp2pIo` adapts it to tokio-io so the peer connection code runs on it
//! unchanged.
use super::handle::NodeHandle;
use crate::peer::BoxStream;
use crate::torrent::{Connector, TcpConnector};
use crate::types::PeerAddr;
use futures::future::BoxFuture;
use libp2p::PeerId;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::ReadBuf;

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
    Box::new(Libp2pIo::new(stream))
}

/// The read buffer a libp2p stream starts with, and the most it grows to.
const SCRATCH_MIN: usize = 16 * 1024;
const SCRATCH_MAX: usize = 128 * 1024;

/// tokio-io over a libp2p stream (futures-io), reading through a buffer of its own.
///
/// futures-io reads only into initialised memory, and the peer codec offers tokio-io up to
/// 256 KiB of fresh buffer per read: `tokio_util::compat` zeroed all of it on every read (8 %
/// of the samples of `shoal bench --transport libp2p`). This one reads into `scratch`,
/// zeroed once, and copies out what arrived: 493–503 -> 520–525 MiB/s in that bench. The
/// buffer starts small and doubles, up to [`SCRATCH_MAX`], each time a read fills it, so
/// only connections that move data hold the large one.
struct Libp2pIo<S> {
    stream: S,
    scratch: Vec<u8>,
    /// `scratch[start..end]` arrived and is not yet handed on.
    start: usize,
    end: usize,
}

impl<S> Libp2pIo<S> {
    fn new(stream: S) -> Libp2pIo<S> {
        Libp2pIo { stream, scratch: vec![0; SCRATCH_MIN], start: 0, end: 0 }
    }
}

impl<S: futures::AsyncRead + Unpin> tokio::io::AsyncRead for Libp2pIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            let n = ready!(Pin::new(&mut this.stream).poll_read(cx, &mut this.scratch))?;
            (this.start, this.end) = (0, n);
            if n == this.scratch.len() && n < SCRATCH_MAX {
                this.scratch.resize(n * 2, 0);
            }
        }
        let n = (this.end - this.start).min(buf.remaining());
        buf.put_slice(&this.scratch[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: futures::AsyncWrite + Unpin> tokio::io::AsyncWrite for Libp2pIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// How the pool names a libp2p peer.
pub fn peer_addr(peer: &PeerId) -> PeerAddr {
    PeerAddr::P2p(*peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    #[tokio::test]
    async fn bytes_arrive_whole_and_in_order_whatever_the_reads_and_the_buffer_stops_growing() {
        let (near, far) = tokio::io::duplex(256 * 1024);
        let mut io = Libp2pIo::new(far.compat());
        let sent: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut near = near;
                near.write_all(&sent).await.unwrap();
                near.shutdown().await.unwrap();
            })
        };
        let mut got = Vec::new();
        // Small reads first (what is left in the buffer is handed on later), then large.
        let mut small = [0u8; 1000];
        for _ in 0..100 {
            io.read_exact(&mut small).await.unwrap();
            got.extend_from_slice(&small);
        }
        io.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes read differ from those sent");
        assert_eq!(io.scratch.len(), SCRATCH_MAX);
    }
}
