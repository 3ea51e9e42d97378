//! Ports on 127.0.0.1.
use std::net::TcpListener;

/// A port that was free a moment ago, for clients that cannot report the port they bound
/// (aria2c, opentracker) or for a tracker URL written into a torrent before the tracker runs.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}
