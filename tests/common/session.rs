//! In-process swarms through the library: sessions on 127.0.0.1, waiting on a torrent's
//! stats, a connector that slows chosen links (fault injection: a slow link, so a test can
//! act mid-transfer), and libp2p nodes on loopback.
use futures::future::BoxFuture;
use shoal::config::Options;
use shoal::p2p::{DhtMode, NodeConfig, NodeHandle};
use shoal::peer::BoxStream;
use shoal::session::Session;
use shoal::torrent::{Connector, TcpConnector, TorrentStats};
use shoal::types::PeerAddr;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

pub fn options() -> Arc<Options> {
    Arc::new(Options::default())
}

/// A session with default options listening on 127.0.0.1.
pub async fn session() -> Session {
    session_with(options()).await
}

/// A session with these options listening on 127.0.0.1.
pub async fn session_with(options: Arc<Options>) -> Session {
    Session::start(options, Some("127.0.0.1:0".parse().unwrap())).await.unwrap()
}

pub fn addr(s: &Session) -> PeerAddr {
    PeerAddr::Tcp(s.listen_addr().unwrap())
}

/// Waits until `pred` holds for the torrent's stats, or panics after `secs`.
pub async fn wait_for(
    stats: &mut watch::Receiver<TorrentStats>,
    secs: u64,
    what: &str,
    pred: impl Fn(&TorrentStats) -> bool,
) -> TorrentStats {
    let r = tokio::time::timeout(Duration::from_secs(secs), stats.wait_for(|s| pred(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}: {:?}", *stats.borrow()),
    }
}

/// A libp2p node listening on 127.0.0.1, bootstrapped from `bootstrap`.
pub async fn spawn_node(
    keypair: libp2p::identity::Keypair,
    mode: DhtMode,
    bootstrap: &[libp2p::Multiaddr],
    query_timeout: Duration,
) -> NodeHandle {
    let mut config = NodeConfig::new(keypair, query_timeout);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.bootstrap = bootstrap.to_vec();
    config.dht_mode = mode;
    NodeHandle::spawn(config).await.expect("node starts")
}

/// A connector that slows the download direction of links to chosen addresses to
/// `bytes_per_sec`, so a test can act in the middle of a transfer.
pub struct SlowConnector {
    pub slow: Mutex<HashSet<SocketAddr>>,
    pub bytes_per_sec: u64,
}

impl SlowConnector {
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>, bytes_per_sec: u64) -> Arc<SlowConnector> {
        Arc::new(SlowConnector { slow: Mutex::new(addrs.into_iter().collect()), bytes_per_sec })
    }
}

impl Connector for SlowConnector {
    fn connect(&self, addr: PeerAddr) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        let slow = matches!(&addr, PeerAddr::Tcp(a) if self.slow.lock().unwrap().contains(a));
        let rate = self.bytes_per_sec;
        let inner = TcpConnector.connect(addr);
        Box::pin(async move {
            let s = inner.await?;
            Ok(if slow { Box::new(Throttled::new(s, rate)) as BoxStream } else { s })
        })
    }
}

/// Reads at most `rate` bytes per second (in 10 ms slices).
pub struct Throttled {
    inner: BoxStream,
    rate: u64,
    budget: u64,
    refill: Pin<Box<tokio::time::Sleep>>,
}

impl Throttled {
    pub fn new(inner: BoxStream, rate: u64) -> Throttled {
        Throttled { inner, rate, budget: rate / 100, refill: Box::pin(tokio::time::sleep(Duration::from_millis(10))) }
    }
}

impl AsyncRead for Throttled {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.budget == 0 {
            match self.refill.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    self.budget = (self.rate / 100).max(1);
                    let next = tokio::time::Instant::now() + Duration::from_millis(10);
                    self.refill.as_mut().reset(next);
                }
            }
        }
        let allowed = (self.budget as usize).min(buf.remaining());
        let mut limited = buf.take(allowed);
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = r {
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            self.budget -= n as u64;
        }
        r
    }
}

impl AsyncWrite for Throttled {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
