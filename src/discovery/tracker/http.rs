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
mod tests;
