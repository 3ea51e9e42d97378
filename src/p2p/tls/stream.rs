//! The TLS 1.3 record layer after the handshake: ours, over rustls' AEAD objects.
//!
//! rustls' own connection copies each record's plaintext out of its receive buffer into a
//! fresh `Vec` before the reader gets it, and reads or writes a record per system call unless
//! buffered from outside, which is one more copy each way. Here a record is decrypted in place
//! in the receive buffer and copied once, into the reader's buffer; sealed records queue and go
//! out together in one vectored write.
//!
//! The handshake is rustls' (`super::handshake`); at its end rustls hands over the traffic
//! secrets and a `KernelConnection`, its API for record layers outside rustls (as kTLS is),
//! which computes the next secrets on a key update. The cipher work is rustls' too: its
//! `MessageEncrypter` and `MessageDecrypter` for the suite (nonces, padding, the inner content
//! type). What this module owns is the framing, the sequence numbers and the few messages TLS
//! 1.3 allows after the handshake.
//!
//! What a stranger can send: records of at most 2^14 + 256 bytes of ciphertext (RFC 8446
//! §5.2), checked from the header before any byte of the body is awaited, into a buffer of
//! fixed size; application data, alerts (close_notify ends the stream, any other alert is an
//! error), and of the handshake messages only NewSessionTicket (ignored: resumption is off)
//! and KeyUpdate, at most [`KEY_UPDATES_IN_A_ROW`] without application data between them, and
//! answered once however many ask (§4.6.3). Anything else, a record that fails to decrypt or a
//! handshake message split across records is an error, and the connection ends.
use futures::{AsyncRead, AsyncWrite};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::cipher::{InboundOpaqueMessage, MessageDecrypter, MessageEncrypter, OutboundPlainMessage};
use rustls::Tls13CipherSuite;
use rustls::{AlertDescription, ConnectionTrafficSecrets, ContentType, HandshakeType, ProtocolVersion};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// A record's header: content type, legacy version, length.
const HEADER: usize = 5;
/// The most plaintext one record carries (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// The largest record a peer may send: ciphertext of at most 2^14 + 256 bytes (§5.2).
const MAX_RECORD: usize = HEADER + MAX_PLAINTEXT + 256;
/// The receive buffer, fixed: several records per system call.
pub const RECEIVE_BUFFER: usize = 64 * 1024;
/// Sealed records waiting for the socket, at most; a writer past it waits for the socket.
const SEND_QUEUE: usize = 256 * 1024;
/// Records handed to one vectored write, at most.
const SLICES_PER_WRITE: usize = 64;
/// KeyUpdates taken in a row without application data between them (BoringSSL's
/// `kMaxKeyUpdates`, which rustls follows too): each costs a key derivation.
pub const KEY_UPDATES_IN_A_ROW: u8 = 32;

/// Computes the next traffic secret of either direction on a key update: rustls'
/// `KernelConnection`, whichever side of the handshake we were.
pub trait Rekey: Send + Sync {
    fn next_rx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error>;
    fn next_tx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error>;
}

impl<D> Rekey for rustls::kernel::KernelConnection<D>
where
    rustls::kernel::KernelConnection<D>: Send + Sync,
{
    fn next_rx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error> {
        self.update_rx_secret().map(|(_, secrets)| secrets)
    }

    fn next_tx(&mut self) -> Result<ConnectionTrafficSecrets, rustls::Error> {
        self.update_tx_secret().map(|(_, secrets)| secrets)
    }
}

/// What the handshake leaves for the record layer.
pub struct Handover {
    pub suite: &'static Tls13CipherSuite,
    pub rekey: Box<dyn Rekey>,
    /// Sequence number and secrets, each way.
    pub tx: (u64, ConnectionTrafficSecrets),
    pub rx: (u64, ConnectionTrafficSecrets),
    /// The receive buffer (of [`RECEIVE_BUFFER`] bytes) and how much of it holds records not yet
    /// opened, from its start.
    pub incoming: Vec<u8>,
    pub filled: usize,
    /// Plaintext rustls decrypted with the handshake's last flight, read first.
    pub early: Vec<u8>,
}

/// A libp2p TLS connection: plaintext in and out, records on `io`.
pub struct TlsStream<C> {
    io: C,
    suite: &'static Tls13CipherSuite,
    rekey: Box<dyn Rekey>,
    /// Records one key may seal (the suite's confidentiality limit).
    limit: u64,
    open: (Box<dyn MessageDecrypter>, u64),
    seal: (Box<dyn MessageEncrypter>, u64),
    /// `incoming[start..filled]` is received and not yet opened; `incoming[plain]` is the
    /// plaintext of the last record opened, not yet read.
    incoming: Vec<u8>,
    start: usize,
    filled: usize,
    plain: Range<usize>,
    early: Vec<u8>,
    early_read: usize,
    /// close_notify came: no more plaintext.
    closed_by_peer: bool,
    key_updates_in_a_row: u8,
    /// A KeyUpdate asked for one of ours, not yet sent.
    owe_key_update: bool,
    /// Sealed records; `queued` bytes in all, the first `front_sent` of the front one sent.
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    front_sent: usize,
    close_sealed: bool,
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn key_and_iv(secrets: ConnectionTrafficSecrets) -> io::Result<(AeadKey, Iv)> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(invalid("TLS: a cipher suite this record layer does not know")),
    }
}

impl<C> TlsStream<C> {
    pub fn new(io: C, h: Handover) -> io::Result<TlsStream<C>> {
        let (tx_key, tx_iv) = key_and_iv(h.tx.1)?;
        let (rx_key, rx_iv) = key_and_iv(h.rx.1)?;
        let aead = h.suite.aead_alg;
        Ok(TlsStream {
            io,
            suite: h.suite,
            rekey: h.rekey,
            limit: h.suite.common.confidentiality_limit,
            open: (aead.decrypter(rx_key, rx_iv), h.rx.0),
            seal: (aead.encrypter(tx_key, tx_iv), h.tx.0),
            incoming: h.incoming,
            start: 0,
            filled: h.filled,
            plain: 0..0,
            early: h.early,
            early_read: 0,
            closed_by_peer: false,
            key_updates_in_a_row: 0,
            owe_key_update: false,
            queue: VecDeque::new(),
            queued: 0,
            front_sent: 0,
            close_sealed: false,
        })
    }

    /// The cipher suite the handshake settled on.
    pub fn cipher_suite(&self) -> rustls::CipherSuite {
        self.suite.common.suite
    }

    /// Records one key may seal: lowered by tests to see our own key updates.
    #[cfg(test)]
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Records sealed under the current key (tests see a key update restart the count).
    #[cfg(test)]
    pub fn sealed_under_this_key(&self) -> u64 {
        self.seal.1
    }

    /// Opens the next record if all of it is here: `Ok(false)` if more bytes are needed.
    fn open_next(&mut self) -> io::Result<bool> {
        let head = &self.incoming[self.start..self.filled];
        if head.len() < HEADER {
            return Ok(false);
        }
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        if HEADER + len > MAX_RECORD {
            return Err(invalid("TLS: a record longer than 2^14 + 256 bytes"));
        }
        if head[0] != u8::from(ContentType::ApplicationData) {
            return Err(invalid("TLS: a record that is not encrypted after the handshake"));
        }
        if head.len() < HEADER + len {
            return Ok(false);
        }
        let version = ProtocolVersion::from(u16::from_be_bytes([head[1], head[2]]));
        let body = self.start + HEADER..self.start + HEADER + len;
        self.start = body.end;
        let record = InboundOpaqueMessage::new(ContentType::ApplicationData, version, &mut self.incoming[body.clone()]);
        let (decrypter, seq) = &mut self.open;
        let opened = decrypter.decrypt(record, *seq).map_err(invalid)?;
        *seq += 1;
        // Decryption and unpadding shorten the body from its end: the plaintext starts with it.
        let (typ, plain) = (opened.typ, body.start..body.start + opened.payload.len());
        match typ {
            ContentType::ApplicationData => {
                self.key_updates_in_a_row = 0;
                self.plain = plain;
                Ok(true)
            }
            ContentType::Alert => self.on_alert(plain).map(|()| true),
            ContentType::Handshake => self.on_handshake(plain).map(|()| true),
            other => Err(invalid(format!("TLS: an unexpected {other:?} record"))),
        }
    }

    fn on_alert(&mut self, alert: Range<usize>) -> io::Result<()> {
        match self.incoming[alert] {
            [_, description] => match AlertDescription::from(description) {
                AlertDescription::CloseNotify => {
                    self.closed_by_peer = true;
                    Ok(())
                }
                AlertDescription::UserCanceled => Ok(()),
                other => Err(io::Error::new(io::ErrorKind::ConnectionAborted, format!("TLS: peer sent {other:?}"))),
            },
            _ => Err(invalid("TLS: a malformed alert")),
        }
    }

    /// The handshake messages a TLS 1.3 peer may send after the handshake; each whole in
    /// this record.
    fn on_handshake(&mut self, messages: Range<usize>) -> io::Result<()> {
        let mut at = messages.start;
        while at < messages.end {
            let rest = &self.incoming[at..messages.end];
            if rest.len() < 4 {
                return Err(invalid("TLS: a handshake message split across records"));
            }
            let len = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 4 + len {
                return Err(invalid("TLS: a handshake message split across records"));
            }
            let (typ, body) = (HandshakeType::from(rest[0]), at + 4..at + 4 + len);
            at = body.end;
            match typ {
                // Resumption is off, so a ticket has no use.
                HandshakeType::NewSessionTicket => {}
                // §5.1: a key change ends its record.
                HandshakeType::KeyUpdate if at == messages.end => self.on_key_update(body)?,
                other => return Err(invalid(format!("TLS: an unexpected {other:?} after the handshake"))),
            }
        }
        Ok(())
    }

    fn on_key_update(&mut self, body: Range<usize>) -> io::Result<()> {
        let requested = match self.incoming[body] {
            [0] => false,
            [1] => true,
            _ => return Err(invalid("TLS: a malformed KeyUpdate")),
        };
        self.key_updates_in_a_row += 1;
        if self.key_updates_in_a_row > KEY_UPDATES_IN_A_ROW {
            return Err(invalid("TLS: too many KeyUpdates without data between them"));
        }
        let (key, iv) = key_and_iv(self.rekey.next_rx().map_err(invalid)?)?;
        self.open = (self.suite.aead_alg.decrypter(key, iv), 0);
        self.owe_key_update |= requested;
        Ok(())
    }

    fn seal_record(&mut self, typ: ContentType, payload: &[u8]) -> io::Result<()> {
        let message = OutboundPlainMessage { typ, version: ProtocolVersion::TLSv1_2, payload: payload.into() };
        let (encrypter, seq) = &mut self.seal;
        let record = encrypter.encrypt(message, *seq).map_err(invalid)?.encode();
        *seq += 1;
        self.queued += record.len();
        self.queue.push_back(record);
        Ok(())
    }

    /// Seals `data` (at most a record's worth), after the KeyUpdate we owe or that the key's
    /// use calls for: the update goes under the old key, everything after it under the new.
    fn seal_data(&mut self, data: &[u8]) -> io::Result<()> {
        if self.owe_key_update || self.seal.1 + 1 >= self.limit {
            self.seal_record(ContentType::Handshake, &[u8::from(HandshakeType::KeyUpdate), 0, 0, 1, 0])?;
            let (key, iv) = key_and_iv(self.rekey.next_tx().map_err(invalid)?)?;
            self.seal = (self.suite.aead_alg.encrypter(key, iv), 0);
            self.owe_key_update = false;
        }
        self.seal_record(ContentType::ApplicationData, data)
    }

    /// Drops `n` sent bytes from the front of the queue.
    fn sent(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let left = self.queue[0].len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.front_sent = 0;
            self.queue.pop_front();
        }
    }
}

impl<C: AsyncWrite + Unpin> TlsStream<C> {
    /// Writes the queued records; ready once all are sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
            let records = self.queue.iter().take(SLICES_PER_WRITE);
            for (i, (slice, record)) in slices.iter_mut().zip(records).enumerate() {
                *slice = IoSlice::new(if i == 0 { &record[self.front_sent..] } else { record });
            }
            let count = self.queue.len().min(SLICES_PER_WRITE);
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for TlsStream<C> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            let (source, taken) = if this.early_read < this.early.len() {
                (&this.early[this.early_read..], &mut this.early_read)
            } else {
                (&this.incoming[this.plain.clone()], &mut this.plain.start)
            };
            if !source.is_empty() {
                let n = source.len().min(buf.len());
                buf[..n].copy_from_slice(&source[..n]);
                *taken += n;
                return Poll::Ready(Ok(n));
            }
            if this.closed_by_peer {
                return Poll::Ready(Ok(0));
            }
            if this.open_next()? {
                continue;
            }
            // More bytes are needed; make room for a whole record after `start` first.
            if this.incoming.len() - this.start < MAX_RECORD {
                this.incoming.copy_within(this.start..this.filled, 0);
                (this.start, this.filled) = (0, this.filled - this.start);
            }
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.incoming[this.filled..]))?;
            if n == 0 {
                // Without close_notify the end may have been cut off.
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            this.filled += n;
        }
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for TlsStream<C> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.close_sealed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.queued >= SEND_QUEUE {
            // Whatever the socket takes makes room; wait only if it took nothing.
            if let Poll::Ready(sent) = this.poll_send(cx) {
                sent?;
            }
            if this.queued >= SEND_QUEUE {
                return Poll::Pending;
            }
        }
        let mut taken = 0;
        while taken < data.len() && this.queued < SEND_QUEUE {
            let n = (data.len() - taken).min(MAX_PLAINTEXT);
            this.seal_data(&data[taken..taken + n])?;
            taken += n;
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_sealed {
            self.seal_record(ContentType::Alert, &[1, u8::from(AlertDescription::CloseNotify)])?;
            self.close_sealed = true;
        }
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests;
