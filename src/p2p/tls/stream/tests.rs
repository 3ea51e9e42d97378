//! The record layer against a stock rustls peer (libp2p-tls' own configs, through
//! futures-rustls) on either side of the handshake: data, key updates, close, and records a
//! hostile peer writes by hand.
use super::*;
use crate::p2p::tls::{Config, PROTOCOL};
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::identity::Keypair;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

type Pipe = Compat<tokio::io::DuplexStream>;
type StockClient = futures_rustls::client::TlsStream<Pipe>;

fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (a.compat(), b.compat())
}

/// A stock libp2p-tls client connected to our server.
async fn stock_client_to_ours() -> (StockClient, TlsStream<Pipe>) {
    let ((a, b), alice, bob) = (pipe(), Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let config = libp2p::tls::make_client_config(&alice, Some(bob.public().to_peer_id())).unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
    let dial = futures_rustls::TlsConnector::from(Arc::new(config)).connect(name, a);
    let (stock, ours) = tokio::join!(dial, Config::new(&bob).unwrap().upgrade_inbound(b, PROTOCOL));
    (stock.unwrap(), ours.unwrap().1)
}

/// Our client connected to a stock libp2p-tls server.
async fn ours_to_stock_server() -> (TlsStream<Pipe>, futures_rustls::server::TlsStream<Pipe>) {
    let ((a, b), alice, bob) = (pipe(), Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let config = libp2p::tls::make_server_config(&bob).unwrap();
    let accept = futures_rustls::TlsAcceptor::from(Arc::new(config)).accept(b);
    let (ours, stock) = tokio::join!(Config::new(&alice).unwrap().upgrade_outbound(a, PROTOCOL), accept);
    (ours.unwrap().1, stock.unwrap())
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

/// Writes `bytes` in writes of uneven sizes (a byte, a Yamux header, a record, more than one),
/// flushing now and then, and flushes at the end.
async fn send<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) {
    let (mut at, sizes) = (0, [1, 12, 16 * 1024, 70_000, 300_000]);
    for (i, size) in sizes.iter().cycle().enumerate() {
        if at == bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        to.write_all(&bytes[at..end]).await.unwrap();
        if i % 3 == 0 {
            to.flush().await.unwrap();
        }
        at = end;
    }
    to.flush().await.unwrap();
}

/// Reads `len` bytes in reads of uneven sizes.
async fn receive<R: AsyncRead + Unpin>(from: &mut R, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    let (mut at, sizes) = (0, [12, 5, 100_000, 16 * 1024 + 1]);
    for size in sizes.iter().cycle() {
        if at == len {
            break;
        }
        let end = (at + size).min(len);
        from.read_exact(&mut got[at..end]).await.unwrap();
        at = end;
    }
    got
}

/// Sends `bytes` from `from` to `to` and checks they arrive whole.
async fn one_way<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(from: &mut W, to: &mut R, bytes: &[u8]) {
    let (_, got) = tokio::join!(send(from, bytes), receive(to, bytes.len()));
    assert!(got == bytes, "bytes changed on the way");
}

/// Sends `a_to_b` one way and `b_to_a` the other at once, and checks both arrive whole.
async fn exchange<A, B>(
    a: &mut (ReadHalf<A>, WriteHalf<A>),
    b: &mut (ReadHalf<B>, WriteHalf<B>),
    a_to_b: &[u8],
    b_to_a: &[u8],
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (_, _, at_b, at_a) = tokio::join!(
        send(&mut a.1, a_to_b),
        send(&mut b.1, b_to_a),
        receive(&mut b.0, a_to_b.len()),
        receive(&mut a.0, b_to_a.len())
    );
    assert!(at_b == a_to_b, "bytes from a to b changed on the way");
    assert!(at_a == b_to_a, "bytes from b to a changed on the way");
}

#[tokio::test]
async fn megabytes_cross_both_ways_byte_identical_and_close_notify_ends_the_stream() {
    let (there, back) = (data(3 << 20, 1), data(2 << 20, 2));
    let (stock, ours) = stock_client_to_ours().await;
    let (mut stock, mut ours) = (stock.split(), ours.split());
    exchange(&mut stock, &mut ours, &there, &back).await;
    stock.1.close().await.unwrap();
    assert_eq!(ours.0.read(&mut [0; 10]).await.unwrap(), 0, "our server reads the end after close_notify");

    let (ours, stock) = ours_to_stock_server().await;
    let (mut ours, mut stock) = (ours.split(), stock.split());
    exchange(&mut ours, &mut stock, &there, &back).await;
    ours.1.close().await.unwrap();
    assert_eq!(stock.0.read(&mut [0; 10]).await.unwrap(), 0, "the stock server reads our close_notify");
}

#[tokio::test]
async fn a_key_update_the_peer_asks_for_is_followed_and_answered() {
    let (mut stock, mut ours) = stock_client_to_ours().await;
    let (there, back) = (data(1 << 20, 3), data(1 << 20, 4));
    one_way(&mut stock, &mut ours, &there).await;
    one_way(&mut ours, &mut stock, &back).await;
    let before = ours.sealed_under_this_key();
    assert!(before >= 64, "a MiB is 64 records or more, {before} sealed");

    // The stock side sends KeyUpdate(update_requested) and seals with its next key; we must
    // open with ours, and answer with a KeyUpdate before our next data.
    stock.get_mut().1.refresh_traffic_keys().unwrap();
    let (there, back) = (data(100_000, 5), data(100_000, 6));
    one_way(&mut stock, &mut ours, &there).await;
    one_way(&mut ours, &mut stock, &back).await;
    let after = ours.sealed_under_this_key();
    // 100,000 bytes in `send`'s uneven writes are 9 records: the count restarted.
    assert_eq!(after, 9, "records sealed under our key after answering, {before} before");
}

#[tokio::test]
async fn we_update_our_key_at_its_limit_and_the_peer_follows() {
    let (mut ours, mut stock) = ours_to_stock_server().await;
    ours.set_limit(4);
    let there = data(1 << 20, 7);
    one_way(&mut ours, &mut stock, &there).await;
    assert!(ours.sealed_under_this_key() < 4, "64 records under keys good for 4 each");
    one_way(&mut stock, &mut ours, &data(1 << 20, 8)).await;
}

/// A stock client taken apart after the handshake: its socket to write records by hand, and
/// its rustls connection to seal them; and our server.
async fn raw_client_to_ours() -> ((Pipe, rustls::ClientConnection), TlsStream<Pipe>) {
    let (stock, ours) = stock_client_to_ours().await;
    (stock.into_inner(), ours)
}

/// What our stream's next read gives (a hung read fails the test after 10 s).
async fn next_read(ours: &mut TlsStream<Pipe>) -> io::Result<usize> {
    tokio::time::timeout(Duration::from_secs(10), ours.read(&mut [0; 1024])).await.expect("the read hung")
}

fn sealed(conn: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

#[tokio::test]
async fn a_record_altered_on_the_way_ends_the_stream_with_an_error() {
    let ((mut socket, mut conn), mut ours) = raw_client_to_ours().await;
    std::io::Write::write_all(&mut conn.writer(), b"hello").unwrap();
    let mut wire = sealed(&mut conn);
    wire[HEADER + 2] ^= 1;
    socket.write_all(&wire).await.unwrap();
    let err = next_read(&mut ours).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test]
async fn an_oversized_record_is_refused_from_its_header_without_waiting_for_its_body() {
    let ((mut socket, _), mut ours) = raw_client_to_ours().await;
    socket.write_all(&[23, 3, 3, 0xff, 0xff]).await.unwrap();
    let err = next_read(&mut ours).await.unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
}

#[tokio::test]
async fn a_record_in_the_clear_after_the_handshake_is_refused() {
    let ((mut socket, _), mut ours) = raw_client_to_ours().await;
    socket.write_all(&[22, 3, 3, 0, 4, 24, 0, 0, 0]).await.unwrap();
    let err = next_read(&mut ours).await.unwrap_err();
    assert!(err.to_string().contains("not encrypted"), "{err}");
}

#[tokio::test]
async fn key_updates_in_a_row_are_bounded() {
    let ((mut socket, mut conn), mut ours) = raw_client_to_ours().await;
    for _ in 0..KEY_UPDATES_IN_A_ROW {
        conn.refresh_traffic_keys().unwrap();
    }
    std::io::Write::write_all(&mut conn.writer(), b"data").unwrap();
    socket.write_all(&sealed(&mut conn)).await.unwrap();
    let mut got = [0; 4];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"data", "as many updates as the bound, then data, are fine");

    for _ in 0..=KEY_UPDATES_IN_A_ROW {
        conn.refresh_traffic_keys().unwrap();
    }
    socket.write_all(&sealed(&mut conn)).await.unwrap();
    let err = next_read(&mut ours).await.unwrap_err();
    assert!(err.to_string().contains("too many KeyUpdates"), "{err}");
}

#[tokio::test]
async fn the_socket_closing_without_close_notify_is_an_error_not_an_end() {
    let ((mut socket, _), mut ours) = raw_client_to_ours().await;
    socket.close().await.unwrap();
    drop(socket);
    let err = next_read(&mut ours).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}
