//! The Yamux stream multiplexer (`/yamux/1.0.0`) with data frames of up to [`SPLIT_SEND_SIZE`].
//!
//! `libp2p-yamux` leaves yamux's split size at its default, so every write goes out in frames
//! of at most 16 KiB, and it offers no setting to change that. Each frame is a fresh buffer on
//! both sides, a message from the stream to the connection's task and a wake-up of the
//! reader: for a bulk transfer (a peer's blocks) 65,536 of each per GiB, on top of the frames'
//! headers. With frames of up to 256 KiB, `shoal bench --transport libp2p` spends about 7 %
//! less CPU per GiB (five interleaved rounds against the stock muxer: medians 2.39 against 2.57
//! CPU s per GiB, 693 against 652 MiB/s; `docs/performance-log.md` has the other runs).
//!
//! The wire protocol is unchanged. A frame never carries more than the receiver's window has
//! granted (yamux cuts every write at the credit it holds), so every yamux implementation
//! accepts them. Everything else is yamux 0.13 as `libp2p-yamux` sets it up: read-after-close
//! off, inbound streams the swarm has not taken yet wait in a queue of
//! `MAX_WAITING_INBOUND` (32), past which a new one is dropped (reset).
//!
//! What a stranger can send is bounded by yamux: at most [`MAX_STREAMS`] streams, a frame's
//! body at most 1 MiB and within the window we granted. A stream's window starts at yamux's
//! 256 KiB and doubles at a window update when the reader keeps up with a round trip (which
//! the peer's pongs tell); the growth of all a connection's streams together is bounded by
//! [`WINDOW_GROWTH`]. yamux's default was 1 GiB less 128 MiB: a peer that let us read fast,
//! answered pings late (so every update looked quick), then made us stop reading (by not
//! reading what we send) could leave up to 1 GiB per connection in our buffers. With 8 MiB
//! a stream's window reaches 8.25 MiB, 84 MB/s at 100 ms, near the 6 MiB a TCP socket buffers
//! (`tcp_rmem`). The swarm's connection and memory limits (`swarm`) bound the rest.
use futures::{future, AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// The protocol name multistream-select negotiates.
pub const PROTOCOL: &str = "/yamux/1.0.0";
/// The largest data frame we send.
pub const SPLIT_SEND_SIZE: usize = 256 * 1024;
/// Streams open at once on a connection (yamux's default).
pub const MAX_STREAMS: usize = 512;
/// How far the receive windows of a connection's streams may grow in all, beyond the 256 KiB
/// each starts with.
pub const WINDOW_GROWTH: usize = 8 << 20;
/// A stream's receive window before it grows (the yamux spec's).
const START_WINDOW: usize = 256 * 1024;
/// Inbound streams that may wait for the swarm to take them. The swarm takes a stream as soon
/// as fewer than 128 are being negotiated, so a peer's streams wait only while it holds 128
/// negotiations open (silent streams do, for 10 s each). Each waiting stream holds up to its
/// 256 KiB window unread: 8 MiB a connection here, 64 MiB with yamux's ACK backlog (256),
/// which libp2p-yamux waits for (tests: `inbound_streams_past_the_queue_are_dropped...`).
const MAX_WAITING_INBOUND: usize = 32;

/// The multiplexer upgrade.
#[derive(Clone, Debug)]
pub struct Config(yamux::Config);

impl Config {
    pub fn new() -> Config {
        let mut config = yamux::Config::default();
        config
            .set_split_send_size(SPLIT_SEND_SIZE)
            .set_read_after_close(false)
            .set_max_num_streams(MAX_STREAMS)
            .set_max_connection_receive_window(Some(MAX_STREAMS * START_WINDOW + WINDOW_GROWTH));
        Config(config)
    }

    fn upgrade<C>(self, io: C, mode: yamux::Mode) -> future::Ready<Result<Muxer<C>, std::io::Error>>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let connection = yamux::Connection::new(io, self.0, mode);
        future::ready(Ok(Muxer { connection, inbound: VecDeque::new(), inbound_waker: None }))
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C: AsyncRead + AsyncWrite + Send + Unpin + 'static> InboundConnectionUpgrade<C> for Config {
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = future::Ready<Result<Muxer<C>, std::io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        self.upgrade(io, yamux::Mode::Server)
    }
}

impl<C: AsyncRead + AsyncWrite + Send + Unpin + 'static> OutboundConnectionUpgrade<C> for Config {
    type Output = Muxer<C>;
    type Error = std::io::Error;
    type Future = future::Ready<Result<Muxer<C>, std::io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        self.upgrade(io, yamux::Mode::Client)
    }
}

/// One multiplexed connection.
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Streams the peer opened while [`StreamMuxer::poll`] drove the connection, waiting for
    /// [`StreamMuxer::poll_inbound`].
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Muxer<C> {
    fn next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        self.connection.poll_next_inbound(cx).map(|next| next.unwrap_or(Err(yamux::ConnectionError::Closed)))
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> StreamMuxer for Muxer<C> {
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, Self::Error>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        let polled = self.next_inbound(cx);
        if polled.is_pending() {
            self.inbound_waker = Some(cx.waker().clone());
        }
        polled
    }

    fn poll_outbound(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, Self::Error>> {
        self.connection.poll_new_outbound(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connection.poll_close(cx)
    }

    /// Drives the connection: reads frames, sends what the streams queued, and keeps the
    /// streams the peer opens until [`StreamMuxer::poll_inbound`] takes them.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = &mut *self;
        loop {
            let stream = std::task::ready!(this.next_inbound(cx))?;
            if this.inbound.len() >= MAX_WAITING_INBOUND {
                tracing::debug!("yamux: dropping an inbound stream, {MAX_WAITING_INBOUND} already wait");
                continue;
            }
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests;
