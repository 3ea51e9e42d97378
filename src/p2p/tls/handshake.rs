//! The handshake, on rustls' unbuffered API, handing over to our record layer
//! ([`super::stream`]) when it is done.
//!
//! The handshake's records pass through the same fixed receive buffer the record layer then
//! keeps ([`RECEIVE_BUFFER`]): rustls joins a handshake message split across records in place
//! there, so a message that does not fit ends the handshake (libp2p's are a few hundred bytes).
//! Plaintext that came with the last flight (a peer may send data right after its Finished)
//! is decrypted by rustls and read first from the stream.
use super::stream::{Handover, Rekey, TlsStream, RECEIVE_BUFFER};
use super::{peer_id, TlsError};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::identity::PeerId;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, UnbufferedStatus};
use rustls::{CommonState, ExtractedSecrets, SupportedCipherSuite};
use std::io;

/// Client and server side of rustls' unbuffered connection, alike to the driver below.
pub trait Unbuffered: Send {
    type Data;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn state(&self) -> &CommonState;
    fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn Rekey>), rustls::Error>;
}

/// rustls gives both sides the same methods, on two types.
macro_rules! unbuffered {
    ($connection:ty, $data:ty) => {
        impl Unbuffered for $connection {
            type Data = $data;

            fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, $data> {
                self.process_tls_records(incoming)
            }

            fn state(&self) -> &CommonState {
                self
            }

            fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn Rekey>), rustls::Error> {
                let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
                Ok((secrets, Box::new(kernel)))
            }
        }
    };
}

unbuffered!(UnbufferedClientConnection, ClientConnectionData);
unbuffered!(UnbufferedServerConnection, ServerConnectionData);

/// What the driver does after handling a state.
enum Next {
    Process,
    Transmit,
    Read,
    /// rustls may send data: done, unless (a server before the client's Finished) it still
    /// awaits the peer.
    Traffic,
}

fn failed(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> TlsError {
    TlsError::Handshake(io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Runs the handshake on `io` and returns the peer's PeerId and the connection.
pub async fn run<U: Unbuffered, C: AsyncRead + AsyncWrite + Unpin>(
    mut conn: U,
    mut io: C,
) -> Result<(PeerId, TlsStream<C>), TlsError> {
    let mut incoming = vec![0; RECEIVE_BUFFER];
    let (mut filled, mut outgoing, mut early) = (0, Vec::new(), Vec::new());
    loop {
        let status = conn.process(&mut incoming[..filled]);
        let mut discard = status.discard;
        let next = match status.state.map_err(failed)? {
            ConnectionState::EncodeTlsData(mut data) => encode(&mut data, &mut outgoing).map(|()| Next::Process)?,
            ConnectionState::TransmitTlsData(data) => {
                // Sent right below, before rustls is asked anything else.
                data.done();
                Next::Transmit
            }
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(failed)?;
                    discard += record.discard;
                    early.extend_from_slice(record.payload);
                }
                Next::Process
            }
            ConnectionState::BlockedHandshake => Next::Read,
            ConnectionState::WriteTraffic(_) => Next::Traffic,
            other => return Err(failed(format!("TLS handshake: unexpected {other:?}"))),
        };
        incoming.copy_within(discard..filled, 0);
        filled -= discard;
        match next {
            Next::Process => {}
            Next::Transmit => {
                io.write_all(&outgoing).await.map_err(TlsError::Handshake)?;
                io.flush().await.map_err(TlsError::Handshake)?;
                outgoing.clear();
            }
            Next::Traffic if !conn.state().is_handshaking() => break,
            Next::Read | Next::Traffic => {
                if filled == incoming.len() {
                    return Err(failed("TLS handshake: a message larger than the receive buffer"));
                }
                match io.read(&mut incoming[filled..]).await.map_err(TlsError::Handshake)? {
                    0 => return Err(TlsError::Handshake(io::ErrorKind::UnexpectedEof.into())),
                    n => filled += n,
                }
            }
        }
    }
    let peer = peer_id(conn.state())?;
    let suite = conn.state().negotiated_cipher_suite();
    let Some(SupportedCipherSuite::Tls13(suite)) = suite else {
        return Err(failed("TLS handshake: not TLS 1.3"));
    };
    let (secrets, rekey) = conn.into_kernel().map_err(failed)?;
    let handover = Handover { suite, rekey, tx: secrets.tx, rx: secrets.rx, incoming, filled, early };
    Ok((peer, TlsStream::new(io, handover).map_err(TlsError::Handshake)?))
}

/// Appends the handshake record rustls has ready to `out`.
fn encode<D>(data: &mut EncodeTlsData<'_, D>, out: &mut Vec<u8>) -> Result<(), TlsError> {
    let at = out.len();
    let size = match data.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(need)) => need.required_size,
        Err(e) => return Err(failed(e)),
    };
    out.resize(at + size, 0);
    let n = data.encode(&mut out[at..]).map_err(failed)?;
    out.truncate(at + n);
    Ok(())
}
