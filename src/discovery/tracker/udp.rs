//! UDP tracker announce (BEP 15).
//!
//! Owns the packet layouts (pure functions, tested here) and one bounded exchange: connect, then
//! announce, retransmitting after 15·2^n seconds as BEP 15 asks, with the whole exchange cut off
//! by the caller's tracker timeout. A connection id is trusted for one minute; an announce that
//! would go out with an older one reconnects first. Datagrams with a foreign transaction id are
//! ignored (they may be late answers to an earlier retransmission).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::http::{compact_v4, compact_v6};
use super::{tracker_text, Announce, AnnounceParams, Event, TrackerError, MAX_PEERS_PER_ANNOUNCE};

/// The `protocol_id` of a connect request.
const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;
/// How long a tracker honours a connection id.
const CONNECTION_ID_TTL: Duration = Duration::from_secs(60);
/// The retransmission exponent stops growing here (15·2^8 s).
const MAX_RETRANSMIT_EXP: u32 = 8;
/// Room for any datagram; a tracker reply is 20 bytes plus 6 or 18 per peer.
const RECV_BUF: usize = 64 * 1024;

/// A tracker reply that carries our transaction id.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Connect {
        connection_id: u64,
    },
    Announce(Announce),
    /// Action 3: the tracker refused, with a message.
    Error(String),
}

/// A connect request: protocol id, action 0, transaction id.
pub fn connect_request(transaction_id: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b
}

/// An IPv4-style announce request (98 bytes); the tracker takes our IP from the datagram.
pub fn announce_request(connection_id: u64, transaction_id: u32, p: &AnnounceParams) -> [u8; 98] {
    let event: u32 = match p.event {
        None => 0,
        Some(Event::Completed) => 1,
        Some(Event::Started) => 2,
        Some(Event::Stopped) => 3,
    };
    let numwant = i32::try_from(p.numwant).unwrap_or(i32::MAX);
    let mut b = [0u8; 98];
    b[0..8].copy_from_slice(&connection_id.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b[16..36].copy_from_slice(&p.info_hash.0);
    b[36..56].copy_from_slice(&p.peer_id.0);
    b[56..64].copy_from_slice(&p.downloaded.to_be_bytes());
    b[64..72].copy_from_slice(&p.left.to_be_bytes());
    b[72..80].copy_from_slice(&p.uploaded.to_be_bytes());
    b[80..84].copy_from_slice(&event.to_be_bytes());
    // 84..88: IP address 0 = "use the sender's address".
    b[88..92].copy_from_slice(&p.key.to_be_bytes());
    b[92..96].copy_from_slice(&numwant.to_be_bytes());
    b[96..98].copy_from_slice(&p.port.to_be_bytes());
    b
}

/// Parses a datagram. `Ok(None)`: not ours (too short for a header, or another transaction
/// id). Peers are 18-byte IPv6 entries when the tracker was reached over IPv6, else 6-byte IPv4.
pub fn parse_reply(buf: &[u8], transaction_id: u32, over_ipv6: bool) -> Result<Option<Reply>, String> {
    if buf.len() < 8 || be32(&buf[4..8]) != transaction_id {
        return Ok(None);
    }
    let reply = match be32(&buf[0..4]) {
        ACTION_CONNECT if buf.len() >= 16 => {
            let mut id = [0u8; 8];
            id.copy_from_slice(&buf[8..16]);
            Reply::Connect { connection_id: u64::from_be_bytes(id) }
        }
        ACTION_ANNOUNCE if buf.len() >= 20 => {
            let peers = &buf[20..];
            let cap = MAX_PEERS_PER_ANNOUNCE;
            let peers = if over_ipv6 { compact_v6(peers, cap) } else { compact_v4(peers, cap) }
                .ok_or_else(|| format!("peer list of {} bytes is not whole entries", peers.len()))?;
            Reply::Announce(Announce {
                interval: Duration::from_secs(be32(&buf[8..12]).into()),
                min_interval: None,
                peers,
                warning: None,
                leechers: Some(be32(&buf[12..16])),
                seeders: Some(be32(&buf[16..20])),
            })
        }
        ACTION_ERROR => Reply::Error(tracker_text(&buf[8..])),
        // opentracker answers a refused announce (e.g. a hash off its whitelist) with only the
        // 8-byte header.
        action @ (ACTION_CONNECT | ACTION_ANNOUNCE) => {
            return Err(format!("truncated reply to action {action} ({} bytes)", buf.len()))
        }
        action => return Err(format!("unexpected action {action} in a {}-byte reply", buf.len())),
    };
    Ok(Some(reply))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Announces to the UDP tracker at `url` (`udp://host:port[/path]`). `timeout` bounds the whole
/// exchange, including name resolution and every retransmission.
pub async fn announce(url: &str, params: &AnnounceParams, timeout: Duration) -> Result<Announce, TrackerError> {
    let parsed =
        url::Url::parse(url).map_err(|e| TrackerError::BadUrl { url: url.to_owned(), reason: e.to_string() })?;
    tokio::time::timeout(timeout, exchange(url, &parsed, params))
        .await
        .map_err(|_| TrackerError::Timeout { url: url.to_owned(), after: timeout })?
}

async fn exchange(url: &str, parsed: &url::Url, params: &AnnounceParams) -> Result<Announce, TrackerError> {
    let io = |source| TrackerError::Io { url: url.to_owned(), source };
    let addr = resolve(url, parsed).await?;
    let local: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(local).await.map_err(io)?;
    sock.connect(addr).await.map_err(io)?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut connection: Option<(u64, Instant)> = None;
    // BEP 15: wait 15·2^n seconds for a reply, n growing with each retransmission.
    let mut n: u32 = 0;
    loop {
        let wait = Duration::from_secs(15 << n.min(MAX_RETRANSMIT_EXP));
        let tid: u32 = rand::random();
        let fresh = connection.filter(|(_, at)| at.elapsed() < CONNECTION_ID_TTL);
        match fresh {
            None => sock.send(&connect_request(tid)).await.map_err(io)?,
            Some((id, _)) => sock.send(&announce_request(id, tid, params)).await.map_err(io)?,
        };
        let reply = match recv_reply(&sock, &mut buf, tid, addr.is_ipv6(), wait).await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                n += 1;
                continue;
            }
            Err(RecvError::Io(e)) => return Err(io(e)),
            Err(RecvError::Malformed(reason)) => return Err(TrackerError::Malformed { url: url.to_owned(), reason }),
        };
        match (reply, fresh) {
            (Reply::Error(reason), _) => return Err(TrackerError::Failure { url: url.to_owned(), reason }),
            (Reply::Connect { connection_id }, None) => connection = Some((connection_id, Instant::now())),
            (Reply::Announce(a), Some(_)) => return Ok(a),
            (other, _) => {
                return Err(TrackerError::Malformed {
                    url: url.to_owned(),
                    reason: format!("reply {other:?} does not match the request"),
                })
            }
        }
    }
}

enum RecvError {
    Io(std::io::Error),
    Malformed(String),
}

/// Waits up to `wait` for a reply carrying `tid`; `Ok(None)` when the wait ran out.
async fn recv_reply(
    sock: &UdpSocket,
    buf: &mut [u8],
    tid: u32,
    over_ipv6: bool,
    wait: Duration,
) -> Result<Option<Reply>, RecvError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(buf)).await {
            Err(_) => return Ok(None),
            Ok(r) => r.map_err(RecvError::Io)?,
        };
        if let Some(reply) = parse_reply(&buf[..n], tid, over_ipv6).map_err(RecvError::Malformed)? {
            return Ok(Some(reply));
        }
    }
}

/// The tracker's socket address from `udp://host:port/...`.
async fn resolve(url: &str, parsed: &url::Url) -> Result<SocketAddr, TrackerError> {
    let bad = |reason: &str| TrackerError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
    let port = parsed.port().ok_or_else(|| bad("udp tracker url has no port"))?;
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => return Ok(SocketAddr::new(IpAddr::V4(ip), port)),
        Some(url::Host::Ipv6(ip)) => return Ok(SocketAddr::new(IpAddr::V6(ip), port)),
        Some(url::Host::Domain(d)) => d.to_owned(),
        None => return Err(bad("udp tracker url has no host")),
    };
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| TrackerError::Io { url: url.to_owned(), source })?;
    addrs.next().ok_or_else(|| bad("host name resolved to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::tracker::MAX_TRACKER_TEXT;
    use crate::metainfo::InfoHash;
    use crate::wire::PeerId;

    #[test]
    fn connect_request_layout() {
        let b = connect_request(0x0102_0304);
        assert_eq!(b, [0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn announce_request_layout() {
        let p = AnnounceParams {
            info_hash: InfoHash([0xaa; 20]),
            peer_id: PeerId([0xbb; 20]),
            port: 6881,
            uploaded: 3,
            downloaded: 1,
            left: 2,
            event: Some(Event::Stopped),
            numwant: 50,
            key: 9,
        };
        let b = announce_request(7, 8, &p);
        assert_eq!(&b[0..8], &7u64.to_be_bytes());
        assert_eq!(&b[8..16], &[0, 0, 0, 1, 0, 0, 0, 8]);
        assert_eq!(&b[16..36], &[0xaa; 20]);
        assert_eq!(&b[36..56], &[0xbb; 20]);
        assert_eq!(&b[56..80], &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&b[80..98], &[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 50, 0x1a, 0xe1]);
    }

    #[test]
    fn parses_connect_announce_and_error_replies() {
        let mut connect = vec![0, 0, 0, 0, 0, 0, 0, 5];
        connect.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(parse_reply(&connect, 5, false), Ok(Some(Reply::Connect { connection_id: 42 })));
        assert_eq!(parse_reply(&connect, 6, false), Ok(None), "foreign transaction id");

        let mut ann = vec![0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0x07, 0x08, 0, 0, 0, 2, 0, 0, 0, 3];
        ann.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        let Ok(Some(Reply::Announce(a))) = parse_reply(&ann, 5, false) else { panic!() };
        assert_eq!(a.interval, Duration::from_secs(1800));
        assert_eq!((a.leechers, a.seeders), (Some(2), Some(3)));
        assert_eq!(a.peers, ["127.0.0.1:6881".parse().unwrap()]);
        assert!(parse_reply(&ann, 5, true).is_err(), "6 bytes is not an IPv6 entry");
        ann.push(0);
        assert!(parse_reply(&ann, 5, false).is_err());

        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 5];
        err.extend_from_slice(b"unregistered torrent");
        assert_eq!(parse_reply(&err, 5, false), Ok(Some(Reply::Error("unregistered torrent".into()))));
    }

    #[test]
    fn peers_in_one_reply_are_capped_and_error_text_is_escaped() {
        // A full 64 KiB datagram holds about 10,900 IPv4 peers.
        let mut ann = vec![0, 0, 0, 1, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0, 0, 0, 3];
        ann.extend((0..10_000u32).flat_map(|i| [10, 0, (i >> 8) as u8, i as u8, 0, 80]));
        let Ok(Some(Reply::Announce(a))) = parse_reply(&ann, 5, false) else { panic!() };
        assert_eq!(a.peers.len(), MAX_PEERS_PER_ANNOUNCE);
        assert_eq!(a.interval, Duration::from_secs(u32::MAX.into()), "clamped by the announcer, not here");

        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 5];
        err.extend_from_slice(b"no\x1b[2J\xe2\x80\xaeway");
        assert_eq!(parse_reply(&err, 5, false), Ok(Some(Reply::Error("no\\u{1b}[2J\\u{202e}way".into()))));

        // A whole datagram of error text is cut to what logs and status show.
        err.truncate(8);
        err.extend(b"y".repeat(60_000));
        assert_eq!(parse_reply(&err, 5, false), Ok(Some(Reply::Error("y".repeat(MAX_TRACKER_TEXT)))));
    }

    #[test]
    fn short_or_odd_datagrams_never_panic() {
        for len in 0..24 {
            for action in 0..5u8 {
                let mut b = vec![0u8; len];
                if len > 3 {
                    b[3] = action;
                }
                let _ = parse_reply(&b, 0, false);
            }
        }
        assert!(parse_reply(&[0, 0, 0, 9, 0, 0, 0, 0], 0, false).is_err());
    }

    fn params() -> AnnounceParams {
        AnnounceParams {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            port: 1,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: None,
            numwant: 10,
            key: 0,
        }
    }

    #[tokio::test]
    async fn silent_tracker_times_out() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}/announce", silent.local_addr().unwrap());
        let err = announce(&url, &params(), Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, TrackerError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn error_action_is_a_failure_and_stray_datagrams_are_ignored() {
        let tracker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}/announce", tracker.local_addr().unwrap());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let (n, from) = tracker.recv_from(&mut buf).await.unwrap();
            assert_eq!(n, 16);
            let tid = &buf[12..16];
            let mut stray = vec![0, 0, 0, 3, 9, 9, 9, 9];
            stray.extend_from_slice(b"not yours");
            tracker.send_to(&stray, from).await.unwrap();
            let mut err = vec![0, 0, 0, 3];
            err.extend_from_slice(tid);
            err.extend_from_slice(b"banned");
            tracker.send_to(&err, from).await.unwrap();
        });
        let err = announce(&url, &params(), Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(&err, TrackerError::Failure { reason, .. } if reason == "banned"), "{err}");
        assert!(err.to_string().contains(&url));
    }

    #[tokio::test]
    async fn udp_url_without_port_is_rejected() {
        let err = announce("udp://127.0.0.1/announce", &params(), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, TrackerError::BadUrl { .. }), "{err}");
    }
}
