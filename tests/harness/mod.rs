//! Shared set-up for loopback swarm tests: generated data, torrents, sessions on
//! 127.0.0.1, a throttling connector (fault injection: a slow link), and waiting on stats.
#![allow(dead_code)]
#[path = "data.rs"]
mod data;
use futures::future::BoxFuture;
use shoal::config::Options;
use shoal::manager::PeerAddr;
use shoal::metainfo::create::{create_torrent, CreateOptions};
use shoal::metainfo::Metainfo;
use shoal::peer::BoxStream;
use shoal::session::Session;
use shoal::torrent::{Connector, TcpConnector, TorrentStats};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

pub use data::make_file;

/// A bitfield message body claiming every one of `n` pieces (spare bits zero).
pub fn full_bitfield(n: u32) -> bytes::Bytes {
    let n = n as usize;
    let mut bits = vec![0xffu8; n.div_ceil(8)];
    if !n.is_multiple_of(8) {
        *bits.last_mut().expect("n > 0") = 0xffu8 << (8 - n % 8);
    }
    bits.into()
}

pub fn make_torrent(path: &Path, piece_length: u32) -> Arc<Metainfo> {
    let opts = CreateOptions { piece_length: Some(piece_length), ..Default::default() };
    let bytes = create_torrent(path, &opts).unwrap();
    Arc::new(Metainfo::from_bytes(&bytes).unwrap())
}

pub fn options() -> Arc<Options> {
    Arc::new(Options::default())
}

pub async fn session() -> Session {
    Session::start(options(), Some("127.0.0.1:0".parse().unwrap())).await.unwrap()
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

pub fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "{} and {} differ in length", a.display(), b.display());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
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

use std::future::Future;
