//! Which HTTP tracker redirects are followed (fault 7 of issue 8: server-side request forgery).
//!
//! Rules, checked on every hop before anything is sent to it:
//! - at most [`MAX_REDIRECTS`] hops, each to `http` or `https` only;
//! - once the chain has touched a public host (the announce URL's own host included), no later
//!   hop may go to a non-global address: loopback, private (RFC 1918, ULA), link-local,
//!   shared (CGNAT), unspecified, multicast, documentation or reserved ([`reach`]). libtorrent
//!   applies the same rule to web seeds (`no_local_ips` when the seed `is_global`,
//!   web_peer_connection.cpp). A chain that starts local may go anywhere: a tracker on the
//!   local network or on loopback is legitimate, and the torrent could have named any local
//!   address directly, so such a redirect reaches nothing the announce URL could not.
//!
//! Names are resolved here, every address is classified (one local address is enough to
//! refuse), and the request then goes to exactly those addresses (reqwest's `resolve_to_addrs`),
//! so a name cannot pass the check with a public address and be connected to a private one
//! (DNS rebinding). reqwest's own redirect policy only sees URLs, never addresses, so it is
//! switched off and the hops are followed in [`super::http`].
//!
//! The classifier is a parameter ([`Classifier`]), so a test on 127.0.0.1 can declare one
//! loopback address "public" and show the refusal end to end without test branches here.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most redirects followed for one announce.
pub const MAX_REDIRECTS: usize = 3;

/// Where an address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The open internet.
    Global,
    /// Only this host or its local network (or nowhere): loopback, private, link-local, ...
    Local,
}

/// Decides the [`Reach`] of an address: [`reach`] in production.
pub type Classifier = fn(IpAddr) -> Reach;

/// Whether `ip` is a globally routable unicast address (what std's unstable `is_global` means).
pub fn reach(ip: IpAddr) -> Reach {
    let local = match ip {
        IpAddr::V4(v4) => v4_local(v4),
        IpAddr::V6(v6) => v6_local(v6),
    };
    if local {
        Reach::Local
    } else {
        Reach::Global
    }
}

fn v4_local(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // 0.0.0.0/8 "this network", the unspecified address included
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24 IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || ip.is_documentation()
        || ip.is_multicast()
        || a >= 240 // reserved, and the broadcast address
}

fn v6_local(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Forms that carry an IPv4 address reach wherever that address does.
    let embedded = |hi: u16, lo: u16| v4_local(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_local(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local (ULA)
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 old site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32 documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // 100::/64 discard
        || (s[..6] == [0; 6] && embedded(s[6], s[7])) // ::a.b.c.d, IPv4-compatible
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] && embedded(s[6], s[7])) // NAT64
        || (s[0] == 0x2002 && embedded(s[1], s[2])) // 6to4
}

/// Why a redirect hop was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooMany,
    Scheme(String),
    NoHost,
    /// The chain was public and `host` resolves to `addr`, which is local.
    PublicToLocal {
        host: String,
        addr: IpAddr,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooMany => write!(f, "more than {MAX_REDIRECTS} redirects"),
            Refusal::Scheme(s) => write!(f, "redirect to a {s:?} url (only http and https are followed)"),
            Refusal::NoHost => write!(f, "redirect to a url without a host"),
            Refusal::PublicToLocal { host, addr } => {
                write!(f, "redirect from a public host to {host} ({addr}), a non-global address")
            }
        }
    }
}

/// The decision for one hop, as plain data: `public_so_far` says whether the chain touched a
/// public host; `addrs` are the next hop's addresses. Returns whether the chain is public after
/// the hop.
pub fn check_hop(public_so_far: bool, host: &str, addrs: &[SocketAddr], classify: Classifier) -> Result<bool, Refusal> {
    if public_so_far {
        if let Some(a) = addrs.iter().find(|a| classify(a.ip()) == Reach::Local) {
            return Err(Refusal::PublicToLocal { host: host.to_owned(), addr: a.ip() });
        }
    }
    Ok(public_so_far || addrs.iter().any(|a| classify(a.ip()) == Reach::Global))
}

/// Whether `url` may be a redirect target at all (scheme, host) before any name is resolved.
pub fn check_target(url: &url::Url) -> Result<(), Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme(url.scheme().to_owned()));
    }
    if url.host().is_none() {
        return Err(Refusal::NoHost);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reach {
        reach(s.parse().unwrap())
    }

    #[test]
    fn classifies_public_and_private_literals() {
        for public in ["1.1.1.1", "8.8.8.8", "93.184.216.34", "100.63.255.255", "172.32.0.1", "2606:4700::1111"] {
            assert_eq!(r(public), Reach::Global, "{public}");
        }
        let local = [
            "127.0.0.1",
            "127.3.4.5",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "fd00::1",
            "fc12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "2001:db8::1",
        ];
        for l in local {
            assert_eq!(r(l), Reach::Local, "{l}");
        }
        assert_eq!(r("::ffff:8.8.8.8"), Reach::Global);
        assert_eq!(r("64:ff9b::808:808"), Reach::Global);
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|ip| SocketAddr::new(ip.parse().unwrap(), 80)).collect()
    }

    #[test]
    fn public_chain_never_reaches_local_addresses() {
        let err = check_hop(true, "evil.example", &addrs(&["127.0.0.1"]), reach).unwrap_err();
        assert_eq!(err, Refusal::PublicToLocal { host: "evil.example".into(), addr: "127.0.0.1".parse().unwrap() });
        assert!(err.to_string().contains("public host to evil.example (127.0.0.1)"), "{err}");
        let mixed = addrs(&["93.184.216.34", "192.168.0.10"]);
        assert!(check_hop(true, "rebind.example", &mixed, reach).is_err(), "one local address is enough");
        assert_eq!(check_hop(true, "t.example", &addrs(&["93.184.216.34"]), reach), Ok(true));
    }

    #[test]
    fn local_chain_may_go_anywhere_and_becomes_public_on_a_public_hop() {
        assert_eq!(check_hop(false, "127.0.0.1", &addrs(&["127.0.0.1"]), reach), Ok(false));
        assert_eq!(check_hop(false, "10.0.0.2", &addrs(&["10.0.0.2"]), reach), Ok(false));
        assert_eq!(check_hop(false, "t.example", &addrs(&["93.184.216.34"]), reach), Ok(true));
    }

    #[test]
    fn only_http_and_https_targets() {
        for bad in ["file:///etc/passwd", "gopher://x/", "udp://t.example:80/announce", "ftp://x/"] {
            let err = check_target(&url::Url::parse(bad).unwrap()).unwrap_err();
            assert!(matches!(err, Refusal::Scheme(_)), "{bad}: {err}");
        }
        assert_eq!(check_target(&url::Url::parse("https://t.example/a").unwrap()), Ok(()));
    }
}
