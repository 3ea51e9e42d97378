//! Ports on 127.0.0.1.
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the kernel's ephemeral range [`free_port`] hands out from.
const SPAN: u32 = 8192;

/// A port that is free now and that nothing else will be given, for clients that cannot report
/// the port they bound (aria2c, opentracker), for a tracker URL written into a torrent before
/// the tracker runs, or for a port nobody listens on.
///
/// A port the kernel picked for `bind(0)` and that was then let go is not safe: the kernel
/// hands the same ports to the next `bind(0)` and to every outgoing connection's local end,
/// so another test (tests run in parallel) could take it before the client binds it. A client
/// then failed with "Address already in use". So the ports come from just below the kernel's
/// ephemeral range, which the kernel never hands out by itself, each once per test process,
/// starting at an offset drawn from the process id; each is checked free before it is given.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().saturating_sub(SPAN).max(1024);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = u16::try_from(port).expect("ports below the ephemeral range fit in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{}", low + SPAN);
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}
