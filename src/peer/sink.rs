//! The sink: a peer connection's write half. It encodes messages and writes them out, and where
//! the transport takes vectored writes (TCP) a block's payload goes to the socket straight from
//! the buffer it was read into, behind its 13-byte header, instead of being copied into a
//! write buffer first (that copy was 15 % of a seeder's CPU).
//!
//! Invariants: `buffered` is the number of encoded bytes not yet taken by the socket, those in
//! `scratch` and those in `chunks`; `chunks` are written in order, then `scratch`. Small
//! messages and block headers gather in `scratch`, so a run of them is one slice, not many.
//! A transport without vectored writes (a libp2p stream, which copies every write into a frame
//! anyway) gets every message copied into `scratch`, as a `Framed` would.
use crate::wire::message::put_piece_head;
use crate::wire::{Message, MessageCodec, WireError};
use bytes::{Buf, Bytes, BytesMut};
use futures::Sink;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::codec::Encoder;

/// Most slices handed to one vectored write (32 blocks and their headers).
const MAX_SLICES: usize = 64;

/// Payloads shorter than this are copied into `scratch`: a slice of its own would cost more.
const MIN_SLICE: usize = 1024;

pub struct WireSink<W> {
    io: W,
    vectored: bool,
    scratch: BytesMut,
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// `poll_ready` writes out first once this much is buffered.
    boundary: usize,
    codec: MessageCodec,
}

impl<W: AsyncWrite + Unpin> WireSink<W> {
    /// A sink writing to `io`; `pending` is output already encoded (a `Framed`'s write buffer).
    /// (Encoding has no limit to apply: `MessageCodec`'s `max_len` bounds what it decodes.)
    pub fn new(io: W, boundary: usize, pending: BytesMut) -> WireSink<W> {
        let vectored = io.is_write_vectored();
        let buffered = pending.len();
        WireSink {
            io,
            vectored,
            scratch: pending,
            chunks: VecDeque::new(),
            buffered,
            boundary,
            codec: MessageCodec::default(),
        }
    }

    /// Moves what `scratch` holds to the end of `chunks`.
    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            self.chunks.push_back(self.scratch.split().freeze());
        }
    }

    /// Writes until nothing is buffered.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.buffered > 0 {
            if self.chunks.is_empty() {
                self.seal();
            }
            let n = if self.vectored {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut k = 0;
                for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                    *slot = IoSlice::new(chunk);
                    k += 1;
                }
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k]))?
            } else {
                ready!(Pin::new(&mut self.io).poll_write(cx, &self.chunks[0]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Drops the first `n` bytes of `chunks`, which the socket took.
    fn advance(&mut self, mut n: usize) {
        self.buffered -= n;
        while n > 0 {
            let front = self.chunks.front_mut().expect("the socket took no more than was offered");
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }
}

impl<W: AsyncWrite + Unpin> Sink<Message> for WireSink<W> {
    type Error = WireError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        let this = self.get_mut();
        if this.buffered >= this.boundary {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), WireError> {
        let this = self.get_mut();
        let before = this.scratch.len();
        match msg {
            Message::Piece { index, begin, data } if this.vectored && data.len() >= MIN_SLICE => {
                put_piece_head(&mut this.scratch, index, begin, data.len());
                this.buffered += this.scratch.len() - before + data.len();
                this.seal();
                this.chunks.push_back(data);
            }
            msg => {
                this.codec.encode(msg, &mut this.scratch)?;
                this.buffered += this.scratch.len() - before;
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WireError>> {
        ready!(self.as_mut().poll_flush(cx))?;
        ready!(Pin::new(&mut self.get_mut().io).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;

    /// A socket that takes at most `per_call` bytes per write, vectored or not.
    struct Trickle {
        got: Vec<u8>,
        per_call: usize,
        vectored: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            let n = data.len().min(self.per_call);
            self.got.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for s in slices {
                let take = s.len().min(self.per_call - n);
                self.got.extend_from_slice(&s[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn messages() -> Vec<Message> {
        let block = |i: u8, len: usize| Bytes::from((0..len).map(|j| i ^ j as u8).collect::<Vec<u8>>());
        vec![
            Message::Unchoke,
            Message::Piece { index: 3, begin: 0, data: block(1, 16384) },
            Message::Have { index: 9 },
            Message::Piece { index: 3, begin: 16384, data: block(2, 16384) },
            Message::Piece { index: 4, begin: 0, data: block(3, 100) },
            Message::Piece { index: 5, begin: 0, data: block(4, 5000) },
            Message::KeepAlive,
        ]
    }

    #[tokio::test]
    async fn what_goes_out_is_what_the_codec_encodes_however_the_socket_takes_it() {
        let mut want = BytesMut::from(&b"pending"[..]);
        for msg in messages() {
            MessageCodec::default().encode(msg, &mut want).unwrap();
        }
        for vectored in [true, false] {
            for per_call in [1, 7, 13, 4096, 1 << 20] {
                let io = Trickle { got: Vec::new(), per_call, vectored };
                let mut sink = WireSink::new(io, 20_000, BytesMut::from(&b"pending"[..]));
                for msg in messages() {
                    sink.feed(msg).await.unwrap();
                }
                sink.flush().await.unwrap();
                assert_eq!(sink.buffered, 0);
                assert!(sink.io.got == want, "vectored {vectored}, {per_call} bytes per write");
            }
        }
    }
}
