//! A stranger's connections against the bounds, on 127.0.0.0/8 (Linux answers on all of it, so
//! 127.0.0.2 is a second address); each wait is for an answer or a close, under a deadline.
use super::*;
use axum::routing::get;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);
const REQUEST: &[u8] = b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n";

async fn server(bounds: Bounds) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ok", get(|| async { "ok" }));
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, app, bounds, stop.clone().cancelled_owned()));
    (addr, stop, task)
}

async fn connect_from(last_octet: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((Ipv4Addr::new(127, 0, 0, last_octet), 0).into()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends one request; true if it was answered, false if the server closed the connection.
async fn answered(conn: &mut TcpStream) -> bool {
    if conn.write_all(REQUEST).await.is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"ok") {
                return true;
            }
        }
    })
    .await
    .expect("neither an answer nor a close")
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let bounds = Bounds { header_timeout: Duration::from_millis(300), ..Bounds::default() };
    let (addr, _stop, _task) = server(bounds).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut trickling = TcpStream::connect(addr).await.unwrap();
    trickling.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    for conn in [&mut silent, &mut trickling] {
        let mut rest = Vec::new();
        let end = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut rest)).await;
        assert!(end.is_ok(), "the server still holds a connection whose request head never came");
        assert!(rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&rest));
    }
    let mut prompt = TcpStream::connect(addr).await.unwrap();
    assert!(answered(&mut prompt).await, "a prompt client is served");
}

#[tokio::test]
async fn connections_past_the_bounds_are_closed_and_a_closed_one_frees_its_place() {
    let bounds = Bounds { header_timeout: Duration::from_secs(60), connections: 3, per_ip: 2 };
    let (addr, _stop, _task) = server(bounds).await;
    let mut first = connect_from(1, addr).await;
    let mut second = connect_from(1, addr).await;
    assert!(answered(&mut first).await && answered(&mut second).await);
    assert!(!answered(&mut connect_from(1, addr).await).await, "a third from one address is closed");
    let mut other = connect_from(2, addr).await;
    assert!(answered(&mut other).await, "another address still gets a place");
    assert!(!answered(&mut connect_from(3, addr).await).await, "past 3 in all, any address is closed");
    // The kept connections are still served.
    assert!(answered(&mut first).await && answered(&mut other).await);

    drop(first);
    // The server frees the place when it sees the close; until then a new one is refused.
    let freed = tokio::time::timeout(DEADLINE, async {
        while !answered(&mut connect_from(1, addr).await).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(freed.is_ok(), "a closed connection's place was never freed");
    assert!(answered(&mut second).await);
}

#[tokio::test]
async fn stopping_ends_the_server_with_an_idle_connection_open() {
    let (addr, stop, task) = server(Bounds::default()).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(answered(&mut idle).await);
    stop.cancel();
    tokio::time::timeout(DEADLINE, task).await.expect("the server did not stop").unwrap();
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).await.unwrap_or(0), 0, "the idle connection was closed");
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is gone");
}
