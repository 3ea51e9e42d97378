//! Unit tests of the HTTP tracker client: announce URLs and reply parsing.
use super::*;
use crate::discovery::tracker::{Event, MAX_TRACKER_TEXT};
use crate::metainfo::InfoHash;
use crate::wire::PeerId;

const URL: &str = "http://tracker.example/announce";

fn params() -> AnnounceParams {
    let mut info_hash = [0u8; 20];
    info_hash[..6].copy_from_slice(&[0x00, 0xff, b'a', b'-', b' ', b'~']);
    AnnounceParams {
        info_hash: InfoHash(info_hash),
        peer_id: PeerId(*b"-SH0100-abc/def%ghi+"),
        port: 6881,
        uploaded: 1,
        downloaded: 2,
        left: 3,
        event: Some(Event::Started),
        numwant: 50,
        key: 0xdead_beef,
    }
}

#[test]
fn url_percent_encodes_raw_bytes() {
    let u = announce_url(URL, &params());
    assert!(u.starts_with("http://tracker.example/announce?info_hash=%00%FFa-%20~%00"), "{u}");
    assert!(u.contains("&peer_id=-SH0100-abc%2Fdef%25ghi%2B&"), "{u}");
    assert!(u.contains("&port=6881&uploaded=1&downloaded=2&left=3&compact=1&numwant=50&key=deadbeef"));
    assert!(u.ends_with("&event=started"));
    let info = u.split("info_hash=").nth(1).unwrap().split('&').next().unwrap();
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(info).collect();
    assert_eq!(decoded, params().info_hash.0);
}

#[test]
fn url_appends_to_existing_query_and_omits_regular_event() {
    let mut p = params();
    p.event = None;
    let u = announce_url("https://t.example/a?passkey=xyz#frag", &p);
    assert!(u.starts_with("https://t.example/a?passkey=xyz&info_hash="), "{u}");
    assert!(!u.contains("event="));
    assert!(!u.contains('#'));
}

#[test]
fn parses_compact_peers_and_counts() {
    let body = b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali60e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50e";
    let a = parse_response(URL, body).unwrap();
    assert_eq!(a.interval, Duration::from_secs(1800));
    assert_eq!(a.min_interval, Some(Duration::from_secs(60)));
    assert_eq!(a.peers, ["127.0.0.1:6881".parse().unwrap(), "10.0.0.2:80".parse().unwrap()]);
    assert_eq!((a.seeders, a.leechers), (Some(5), Some(7)));
    assert_eq!(a.warning, None);
}

#[test]
fn parses_dict_peers_skipping_bad_entries() {
    let body = b"d8:intervali900e5:peersld2:ip9:127.0.0.14:porti6881eed2:ip11:example.com4:porti1eed2:ip3:::14:porti7eed2:ip8:10.0.0.14:porti70000eeee";
    let a = parse_response(URL, body).unwrap();
    assert_eq!(a.peers, ["127.0.0.1:6881".parse().unwrap(), "[::1]:7".parse().unwrap()]);
    assert_eq!(a.seeders, None);
}

#[test]
fn parses_peers6() {
    let mut body = b"d8:intervali900e5:peers0:6:peers618:".to_vec();
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&[0x1a, 0xe1, b'e']);
    let a = parse_response(URL, &body).unwrap();
    assert_eq!(a.peers, ["[::1]:6881".parse().unwrap()]);
}

#[test]
fn failure_reason_is_an_error_naming_the_tracker() {
    let err = parse_response(URL, b"d14:failure reason17:torrent not founde").unwrap_err();
    assert!(matches!(&err, TrackerError::Failure { reason, .. } if reason == "torrent not found"));
    assert!(err.to_string().contains(URL));
}

#[test]
fn a_reply_of_too_many_values_is_refused_and_tracker_text_is_cut() {
    // 70,000 values in 210 KB: within the body's 2 MiB, past a message's 65,536 values.
    let mut body = b"d8:intervali60e4:junkl".to_vec();
    body.extend(b"i0e".repeat(70_000));
    body.extend(b"e5:peers0:e");
    let err = parse_response(URL, &body).unwrap_err();
    assert!(matches!(&err, TrackerError::Malformed { reason, .. } if reason.contains("items")), "{err}");
    body.drain(22..22 + 3 * 10_000);
    assert!(parse_response(URL, &body).is_ok(), "60,000 values are within bounds");

    let mut body = b"d14:failure reason100000:".to_vec();
    body.extend(b"x".repeat(100_000));
    body.push(b'e');
    let Err(TrackerError::Failure { reason, .. }) = parse_response(URL, &body) else { panic!() };
    assert_eq!(reason, "x".repeat(MAX_TRACKER_TEXT));
}

#[test]
fn warning_message_is_kept() {
    let a = parse_response(URL, b"d8:intervali60e5:peers0:15:warning message9:slow downe").unwrap();
    assert_eq!(a.warning.as_deref(), Some("slow down"));
    assert!(a.peers.is_empty());
}

#[test]
fn garbage_bodies_are_errors_not_panics() {
    let bodies: &[&[u8]] = &[
        b"",
        b"<html>502 bad gateway</html>",
        b"li1ee",
        b"d5:peers0:e",
        b"d8:interval3:abc5:peers0:e",
        b"d8:intervali60e5:peers5:abcdee",
        b"d8:intervali60e6:peers67:abcdefge",
        b"d8:intervali60e5:peersi3ee",
        b"d8:intervali60ee",
    ];
    for body in &bodies[..bodies.len() - 1] {
        let err = parse_response(URL, body).unwrap_err();
        assert!(matches!(err, TrackerError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains(URL));
    }
    assert!(parse_response(URL, bodies[bodies.len() - 1]).unwrap().peers.is_empty());
}

#[test]
fn negative_and_huge_intervals_parse_without_loss_of_the_peers() {
    let a = parse_response(URL, b"d8:intervali-5e12:min intervali-9e5:peers6:\x7f\x00\x00\x01\x1a\xe1e").unwrap();
    assert_eq!((a.interval, a.min_interval), (Duration::ZERO, Some(Duration::ZERO)));
    assert_eq!(a.peers.len(), 1);
    let a = parse_response(URL, b"d8:intervali9223372036854775807e12:min intervali9223372036854775807ee").unwrap();
    assert_eq!(a.interval, Duration::from_secs(i64::MAX as u64));
}

#[test]
fn peers_are_capped_per_reply_across_all_forms() {
    let n = MAX_PEERS_PER_ANNOUNCE + 500;
    let v4: Vec<u8> = (0..n).flat_map(|i| [10, 0, (i >> 8) as u8, i as u8, 0x1a, 0xe1]).collect();
    let v6: Vec<u8> = (0..n).flat_map(|i| [[0xfd; 14].as_slice(), &[(i >> 8) as u8, i as u8, 0, 1]].concat()).collect();
    let body = |peers: &[u8], peers6: &[u8]| {
        let mut b = format!("d8:intervali60e5:peers{}:", peers.len()).into_bytes();
        b.extend_from_slice(peers);
        b.extend_from_slice(format!("6:peers6{}:", peers6.len()).as_bytes());
        b.extend_from_slice(peers6);
        b.push(b'e');
        b
    };
    assert_eq!(parse_response(URL, &body(&v4, &[])).unwrap().peers.len(), MAX_PEERS_PER_ANNOUNCE);
    assert_eq!(parse_response(URL, &body(&[], &v6)).unwrap().peers.len(), MAX_PEERS_PER_ANNOUNCE);
    let both = parse_response(URL, &body(&v4[..600], &v6)).unwrap().peers;
    assert_eq!(both.len(), MAX_PEERS_PER_ANNOUNCE, "v4 and v6 share one cap");
    assert_eq!(both.iter().filter(|a| a.is_ipv4()).count(), 100);

    let mut dicts = b"d8:intervali60e5:peersl".to_vec();
    for i in 0..n {
        let ip = format!("10.0.{}.{}", i >> 8, i & 255);
        dicts.extend_from_slice(format!("d2:ip{}:{ip}4:porti80ee", ip.len()).as_bytes());
    }
    dicts.extend_from_slice(b"ee");
    assert_eq!(parse_response(URL, &dicts).unwrap().peers.len(), MAX_PEERS_PER_ANNOUNCE);
    assert!(parse_response(URL, &body(&v4[..7], &[])).is_err(), "length still checked in full");
}

/// A one-shot HTTP server on loopback that answers every connection with `reply`
/// (or holds it open silently when `reply` is `None`).
async fn serve(reply: Option<Vec<u8>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                match reply {
                    Some(r) => drop(sock.write_all(&r).await),
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    format!("http://{addr}/announce")
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let mut reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    reply.resize(reply.len() + MAX_RESPONSE_BYTES + 10, b'x');
    let url = serve(Some(reply)).await;
    let err = announce(&url, &params(), Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, TrackerError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn silent_tracker_times_out_and_bad_status_is_an_error() {
    let url = serve(None).await;
    let err = announce(&url, &params(), Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, TrackerError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&url));

    let url = serve(Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec())).await;
    let err = announce(&url, &params(), Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, TrackerError::Status { status: 404, .. }), "{err}");
}
