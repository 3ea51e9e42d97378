//! HTTP(S) tracker announce (BEP 3, compact peers BEP 23, `peers6` BEP 7).
//!
//! Owns the announce URL construction and the parsing of the bencoded response. Both are pure
//! functions, tested here; [`announce`] only adds the bounded network exchange (one GET with an
//! overall timeout and a response size limit, redirects followed by the rules of [`redirect`]).
//! A bad body is an error naming the tracker, never a panic; at most
//! [`MAX_PEERS_PER_ANNOUNCE`] addresses are decoded from one reply.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::redirect::{self, Classifier, Reach, Refusal};
use super::{tracker_text, Announce, AnnounceParams, TrackerError, MAX_PEERS_PER_ANNOUNCE};
use crate::bencode::{self, Limits, Value};

/// Largest response body we accept. Even 200 compact peers are ~1 KiB; this is generous.
pub const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
/// Bounds on a reply's bencode: a network message's depth and item count (65,536 values; a
/// reply of 200 peers as dicts has about 1,400), over the whole body.
const REPLY_LIMITS: Limits = Limits { max_input: MAX_RESPONSE_BYTES, ..Limits::MESSAGE };

/// Bytes left as they are in a query value: RFC 3986 unreserved. Everything else, including
/// every byte of the binary info-hash and peer id that is not unreserved, becomes `%XX`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Announces to the HTTP(S) tracker at `url`; `timeout` bounds the whole request, redirects
/// included.
pub async fn announce(url: &str, params: &AnnounceParams, timeout: Duration) -> Result<Announce, TrackerError> {
    announce_with(url, params, timeout, redirect::reach).await
}

/// [`announce`] with the address classifier the redirect rules use (see [`redirect`]).
pub async fn announce_with(
    url: &str,
    params: &AnnounceParams,
    timeout: Duration,
    classify: Classifier,
) -> Result<Announce, TrackerError> {
    let full = announce_url(url, params);
    let body = tokio::time::timeout(timeout, fetch(url, &full, classify))
        .await
        .map_err(|_| TrackerError::Timeout { url: url.to_owned(), after: timeout })??;
    parse_response(url, &body)
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
        // Redirects are followed by `fetch`, which checks each hop's addresses.
        .redirect(reqwest::redirect::Policy::none())
        // Announces are minutes apart and trackers often close after one response
        // (opentracker does); a pooled connection would be stale by the next announce.
        .pool_max_idle_per_host(0)
}

/// One client for all trackers: connection pool and TLS roots are built once.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| client_builder().build().unwrap_or_else(|_| reqwest::Client::new()))
}

/// GETs `full`, following at most [`redirect::MAX_REDIRECTS`] redirects that pass
/// [`redirect::check_hop`], and reads the body.
async fn fetch(url: &str, full: &str, classify: Classifier) -> Result<Vec<u8>, TrackerError> {
    let http_err = |cause| TrackerError::Http { url: url.to_owned(), cause };
    let refused = |r: Refusal| TrackerError::Redirect { url: url.to_owned(), reason: r.to_string() };
    let mut target =
        url::Url::parse(full).map_err(|e| TrackerError::BadUrl { url: url.to_owned(), reason: e.to_string() })?;
    // Known only once a redirect needs it: whether the chain so far touched a public host.
    let mut public: Option<bool> = None;
    let mut client = client().clone();
    for hop in 0..=redirect::MAX_REDIRECTS {
        let resp = client.get(target.clone()).send().await.map_err(http_err)?;
        let Some(next) = redirect_target(url, &target, &resp)? else {
            return read_body(url, resp).await;
        };
        if hop == redirect::MAX_REDIRECTS {
            return Err(refused(Refusal::TooMany));
        }
        redirect::check_target(&next).map_err(refused)?;
        let so_far = match public {
            Some(p) => p,
            None => {
                let origin = resolve(url, &target).await?;
                origin.iter().any(|a| classify(a.ip()) == Reach::Global)
            }
        };
        let addrs = resolve(url, &next).await?;
        let host = next.host_str().unwrap_or_default().to_owned();
        public = Some(redirect::check_hop(so_far, &host, &addrs, classify).map_err(refused)?);
        client = pinned_client(&next, &addrs).map_err(http_err)?;
        tracing::debug!(tracker = %url, to = %next, "following redirect");
        target = next;
    }
    Err(refused(Refusal::TooMany))
}

/// The absolute URL a redirect response points at; `None` for any other response.
fn redirect_target(url: &str, from: &url::Url, resp: &reqwest::Response) -> Result<Option<url::Url>, TrackerError> {
    use reqwest::StatusCode as S;
    if !matches!(
        resp.status(),
        S::MOVED_PERMANENTLY | S::FOUND | S::SEE_OTHER | S::TEMPORARY_REDIRECT | S::PERMANENT_REDIRECT
    ) {
        return Ok(None);
    }
    let malformed = |reason: String| TrackerError::Malformed { url: url.to_owned(), reason };
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .ok_or_else(|| malformed(format!("redirect ({}) without a location", resp.status().as_u16())))?;
    let location = location.to_str().map_err(|_| malformed("redirect location is not text".into()))?;
    from.join(location).map(Some).map_err(|e| malformed(format!("redirect location: {e}")))
}

/// The addresses `target` connects to: the literal, or what its name resolves to.
async fn resolve(url: &str, target: &url::Url) -> Result<Vec<SocketAddr>, TrackerError> {
    let port = target.port_or_known_default().unwrap_or(80);
    let host = match target.host() {
        Some(url::Host::Ipv4(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        Some(url::Host::Ipv6(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        Some(url::Host::Domain(d)) => d.to_owned(),
        None => return Err(TrackerError::Redirect { url: url.to_owned(), reason: Refusal::NoHost.to_string() }),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| TrackerError::Io { url: url.to_owned(), source })?
        .collect();
    if addrs.is_empty() {
        return Err(TrackerError::BadUrl { url: url.to_owned(), reason: format!("{host} resolved to no address") });
    }
    Ok(addrs)
}

/// A client that connects to `target`'s host only at `addrs`, the addresses that were checked
/// (the shared client when the host is an address literal).
fn pinned_client(target: &url::Url, addrs: &[SocketAddr]) -> reqwest::Result<reqwest::Client> {
    match target.host() {
        Some(url::Host::Domain(d)) => client_builder().resolve_to_addrs(d, addrs).build(),
        _ => Ok(client().clone()),
    }
}

/// Reads the body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_body(url: &str, mut resp: reqwest::Response) -> Result<Vec<u8>, TrackerError> {
    let http_err = |cause| TrackerError::Http { url: url.to_owned(), cause };
    let status = resp.status();
    if !status.is_success() {
        return Err(TrackerError::Status { url: url.to_owned(), status: status.as_u16() });
    }
    let too_large = || TrackerError::TooLarge { url: url.to_owned(), limit: MAX_RESPONSE_BYTES };
    if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The full GET URL: `url` plus the announce query, joined with `&` when `url` already has a
/// query string. A fragment, if any, is dropped (it is never sent to a server anyway).
pub fn announce_url(url: &str, p: &AnnounceParams) -> String {
    let base = url.split('#').next().unwrap_or(url);
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut q = format!(
        "{base}{sep}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        percent_encode(&p.info_hash.0, QUERY_VALUE),
        percent_encode(&p.peer_id.0, QUERY_VALUE),
        p.port,
        p.uploaded,
        p.downloaded,
        p.left,
        p.numwant,
        p.key,
    );
    if let Some(event) = p.event {
        q.push_str("&event=");
        q.push_str(event.as_str());
    }
    q
}

/// Parses a tracker's bencoded response body.
pub fn parse_response(url: &str, body: &[u8]) -> Result<Announce, TrackerError> {
    let malformed = |reason: &str| TrackerError::Malformed { url: url.to_owned(), reason: reason.to_owned() };
    let value =
        bencode::decode_with_limits(body, &REPLY_LIMITS).map_err(|e| malformed(&format!("not bencode ({e})")))?;
    let Value::Dict(dict) = value else {
        return Err(malformed("not a dictionary"));
    };
    let text = |key: &[u8]| match dict.get(key) {
        Some(Value::Bytes(b)) => Some(tracker_text(b)),
        _ => None,
    };
    if let Some(reason) = text(b"failure reason") {
        return Err(TrackerError::Failure { url: url.to_owned(), reason });
    }
    let int = |key: &[u8]| -> Result<Option<i64>, TrackerError> {
        match dict.get(key) {
            None => Ok(None),
            Some(Value::Int(n)) => Ok(Some(*n)),
            Some(_) => Err(malformed(&format!("{:?} is not an integer", String::from_utf8_lossy(key)))),
        }
    };
    // Any integer is taken: a negative wait means "now" and the announcer clamps every wait
    // to its own floor and cap, as libtorrent raises `interval` to its minimum.
    let secs = |n: i64| Duration::from_secs(n.max(0).unsigned_abs());
    let interval = int(b"interval")?.ok_or_else(|| malformed("missing \"interval\""))?;
    let min_interval = int(b"min interval")?.map(secs);
    let count = |key: &[u8]| -> Result<Option<u32>, TrackerError> {
        Ok(int(key)?.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)))
    };
    let mut peers = match dict.get(b"peers".as_slice()) {
        None => Vec::new(),
        Some(Value::Bytes(b)) => {
            compact_v4(b, MAX_PEERS_PER_ANNOUNCE).ok_or_else(|| malformed("\"peers\" length not a multiple of 6"))?
        }
        Some(Value::List(list)) => dict_peers(list, MAX_PEERS_PER_ANNOUNCE),
        Some(_) => return Err(malformed("\"peers\" is neither a string nor a list")),
    };
    let room = MAX_PEERS_PER_ANNOUNCE - peers.len();
    match dict.get(b"peers6".as_slice()) {
        None => {}
        Some(Value::Bytes(b)) => {
            peers.extend(compact_v6(b, room).ok_or_else(|| malformed("\"peers6\" length not a multiple of 18"))?)
        }
        Some(_) => return Err(malformed("\"peers6\" is not a string")),
    }
    Ok(Announce {
        interval: secs(interval),
        min_interval,
        peers,
        warning: text(b"warning message"),
        seeders: count(b"complete")?,
        leechers: count(b"incomplete")?,
    })
}

/// BEP 23 compact IPv4 peers: 4 address bytes, 2 port bytes, big-endian; at most `cap` of them
/// are decoded. `None` if the length is not a multiple of 6.
pub fn compact_v4(b: &[u8], cap: usize) -> Option<Vec<SocketAddr>> {
    if !b.len().is_multiple_of(6) {
        return None;
    }
    Some(
        b.chunks_exact(6)
            .take(cap)
            .map(|c| {
                let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([c[4], c[5]]))
            })
            .collect(),
    )
}

/// BEP 7 compact IPv6 peers: 16 address bytes, 2 port bytes; at most `cap` of them are
/// decoded. `None` if the length is not a multiple of 18.
pub fn compact_v6(b: &[u8], cap: usize) -> Option<Vec<SocketAddr>> {
    if !b.len().is_multiple_of(18) {
        return None;
    }
    Some(
        b.chunks_exact(18)
            .take(cap)
            .map(|c| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&c[..16]);
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), u16::from_be_bytes([c[16], c[17]]))
            })
            .collect(),
    )
}

/// The original BEP 3 peer list: dicts with `ip` (an address literal) and `port`. Entries with a
/// hostname, a bad port or missing fields are skipped: one bad entry does not spoil the rest.
/// At most `cap` addresses are kept (the bencode limits already bound the list itself).
fn dict_peers(list: &[Value], cap: usize) -> Vec<SocketAddr> {
    list.iter()
        .filter_map(|peer| {
            let Value::Dict(d) = peer else { return None };
            let Some(Value::Bytes(ip)) = d.get(b"ip".as_slice()) else {
                return None;
            };
            let Some(Value::Int(port)) = d.get(b"port".as_slice()) else {
                return None;
            };
            let ip: IpAddr = std::str::from_utf8(ip).ok()?.parse().ok()?;
            let port = u16::try_from(*port).ok().filter(|p| *p != 0)?;
            Some(SocketAddr::new(ip, port))
        })
        .take(cap)
        .collect()
}

#[cfg(test)]
mod tests {
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
        let v6: Vec<u8> =
            (0..n).flat_map(|i| [[0xfd; 14].as_slice(), &[(i >> 8) as u8, i as u8, 0, 1]].concat()).collect();
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
}
