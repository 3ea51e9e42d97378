//! Validation of the session's network settings and the tuning keys: addresses parse,
//! bootstrap nodes name their PeerId, queues and tick stay within sane bounds.
use super::{nonzero, ConfigError, Options};
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use std::net::SocketAddr;
use std::time::Duration;

/// Shortest tick: finer only burns CPU on bookkeeping.
const MIN_TICK: Duration = Duration::from_millis(10);
/// Longest tick: rates and timeouts are judged per tick.
const MAX_TICK: Duration = Duration::from_secs(10);
/// Smallest peer queues: below this a burst of `have`s is lost.
const MIN_QUEUE: usize = 64;

impl Options {
    pub(super) fn validate_network(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
        for (key, value) in [("listen", &self.listen), ("diag", &self.diag)] {
            if !value.is_empty() {
                value.parse::<SocketAddr>().map_err(|e| invalid(key, format!("`{value}`: {e}")))?;
            }
        }
        for a in self.kad_listen_addrs() {
            multiaddr("kad_listen", a)?;
        }
        for a in &self.external_addrs {
            multiaddr("external_addrs", a)?;
        }
        for a in &self.bootstrap {
            if !matches!(multiaddr("bootstrap", a)?.iter().last(), Some(Protocol::P2p(_))) {
                return Err(invalid("bootstrap", format!("`{a}` does not end in /p2p/<PeerId>")));
            }
        }
        if self.min_peers > self.max_connections {
            return Err(invalid("min_peers", "must be at most max_connections".into()));
        }
        if !(MIN_TICK..=MAX_TICK).contains(&self.tick) {
            return Err(invalid("tick", format!("must be from {MIN_TICK:?} to {MAX_TICK:?}")));
        }
        nonzero("max_pieces_in_flight", self.max_pieces_in_flight)?;
        nonzero("kad_max_connections", self.kad_max_connections)?;
        nonzero("autonat_interval", self.autonat_interval)?;
        nonzero("relay_max_circuit_duration", self.relay_max_circuit_duration)?;
        // The relay protocol carries it in seconds as a u32; libp2p-relay panics past that.
        if self.relay_max_circuit_duration.as_secs() > u64::from(u32::MAX) {
            let why = format!("must be at most {}s (the relay protocol's limit)", u32::MAX);
            return Err(invalid("relay_max_circuit_duration", why));
        }
        nonzero("relay_max_circuit_bytes", self.relay_max_circuit_bytes)?;
        nonzero("kad_max_connections_per_peer", self.kad_max_connections_per_peer)?;
        nonzero("kad_max_pending_incoming", self.kad_max_pending_incoming)?;
        nonzero("kad_max_pending_per_ip", self.kad_max_pending_per_ip)?;
        nonzero("kad_max_established_per_ip", self.kad_max_established_per_ip)?;
        for (key, n) in [("peer_event_queue", self.peer_event_queue), ("peer_command_queue", self.peer_command_queue)] {
            if n < MIN_QUEUE {
                return Err(invalid(key, format!("must be at least {MIN_QUEUE}")));
            }
        }
        Ok(())
    }
}

impl Options {
    /// `kad_listen`'s multiaddrs (comma-separated), or the default `/ip4/0.0.0.0/tcp/0`.
    pub fn kad_listen_addrs(&self) -> Vec<&str> {
        match self.kad_listen.trim() {
            "" => vec!["/ip4/0.0.0.0/tcp/0"],
            list => list.split(',').map(str::trim).collect(),
        }
    }
}

fn multiaddr(key: &'static str, value: &str) -> Result<Multiaddr, ConfigError> {
    value.parse().map_err(|e| ConfigError::Invalid { key, why: format!("`{value}`: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_keys_are_checked_and_name_the_key() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("diag = \"127.0.0.1\"", "diag"),
            ("kad_listen = \"tcp/1\"", "kad_listen"),
            ("bootstrap = [\"/ip4/127.0.0.1/tcp/1\"]", "bootstrap"),
            ("external_addrs = [\"x\"]", "external_addrs"),
            ("min_peers = 60", "min_peers"),
            ("tick = \"1ms\"", "tick"),
            ("max_pieces_in_flight = 0", "max_pieces_in_flight"),
            ("peer_command_queue = 8", "peer_command_queue"),
            ("kad_listen = \"/ip4/0.0.0.0/tcp/0,quic\"", "kad_listen"),
            ("relay_max_circuit_bytes = 0", "relay_max_circuit_bytes"),
            ("relay_max_circuit_duration = \"0s\"", "relay_max_circuit_duration"),
            ("relay_max_circuit_duration = \"200years\"", "relay_max_circuit_duration"),
        ];
        for (text, key) in cases {
            let err = Options::from_toml_str(text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
        let good = "listen = \"127.0.0.1:6881\"\nbootstrap = [\"/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGjMCnNqMxbMXJbyPrVoXxYsXxQqWN7bJoBiWbBZfEzLQ\"]\nmax_peers = 80\nmin_peers = 70\n";
        let o = Options::from_toml_str(good).unwrap();
        o.validate().unwrap();
        assert_eq!((o.max_connections, o.min_peers), (80, 70), "max_peers names max_connections");
        assert_eq!(o.kad_listen_addrs(), ["/ip4/0.0.0.0/tcp/0"], "the default");
        let both = Options::from_toml_str("kad_listen = \"/ip4/0.0.0.0/udp/0/quic-v1, /ip4/0.0.0.0/tcp/0\"").unwrap();
        both.validate().unwrap();
        assert_eq!(both.kad_listen_addrs(), ["/ip4/0.0.0.0/udp/0/quic-v1", "/ip4/0.0.0.0/tcp/0"]);
    }
}
