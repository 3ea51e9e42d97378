//! GETs against HTTP servers on 127.0.0.1: a tiny blocking HTTP/1.1 client for the
//! diagnostics server of a `shoal` process (and a tracker's announce and scrape), and async
//! ones through reqwest for a diagnostics server running in the test's own runtime.
//!
//! The blocking client asks with `Connection: close` and reads to the end; every socket
//! operation is bounded by [`IO`].
use super::process::Proc;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bound on connecting, writing and each read.
const IO: Duration = Duration::from_secs(5);

/// A whole answer.
pub struct Reply {
    pub status: u16,
    /// The head, status line and headers, as sent.
    pub head: String,
    pub body: Vec<u8>,
}

/// `GET path` on `addr`; `None` if the server is not there or the answer is not HTTP.
pub fn get(addr: SocketAddr, path: &str) -> Option<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, IO).ok()?;
    s.set_read_timeout(Some(IO)).ok()?;
    s.set_write_timeout(Some(IO)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Reply { status, head, body: raw[at + 4..].to_vec() })
}

/// `GET path` parsed as JSON; `None` if the server is gone or the answer is not 200 JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let reply = get(addr, path).filter(|r| r.status == 200)?;
    serde_json::from_slice(&reply.body).ok()
}

/// `GET path` as JSON, which must be there: panics naming the path otherwise.
pub fn expect_json(addr: SocketAddr, path: &str) -> Value {
    get_json(addr, path).unwrap_or_else(|| panic!("GET {path} on {addr}: no 200 JSON answer"))
}

/// Polls `GET path` on `diag` (a diagnostics server of `p`) every 200 ms until `pick`
/// finds what it wants in the answer; fails `p` when `timeout` passes first. For states that
/// last once reached (a counter that only grows, a download stopped where its sources end).
pub fn wait_json<T>(
    p: &Proc,
    diag: SocketAddr,
    path: &str,
    timeout: Duration,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(v) = get_json(diag, path) {
            if let Some(t) = pick(&v) {
                return t;
            }
            last = Some(v);
        }
        if Instant::now() > deadline {
            p.fail(&format!("GET {path}: not as expected within {timeout:?}; last answer {last:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET path` from a server in this process's runtime, through reqwest.
pub async fn fetch(addr: SocketAddr, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{addr}{path}")).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `GET path` through reqwest, which must answer 200 with `application/json`; the parsed body.
pub async fn fetch_json(addr: SocketAddr, path: &str) -> Value {
    let r = fetch(addr, path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "GET {path}: content type {ct}");
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}
