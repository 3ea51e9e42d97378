use super::*;

#[test]
fn defaults_are_valid() {
    Options::default().validate().unwrap();
}

#[test]
fn toml_overrides_and_durations() {
    let o = Options::from_toml_str("probe_timeout = \"2s\"\nmax_connections = 7\nkey_peers = [\"12D3KooW\"]").unwrap();
    assert_eq!(o.probe_timeout, Duration::from_secs(2));
    assert_eq!(o.max_connections, 7);
    assert_eq!(o.key_peers.len(), 1);
    assert_eq!(o.max_pending, 200);
}

#[test]
fn bad_values_name_the_key() {
    let e = Options::from_toml_str("probe_timeout = \"soon\"").unwrap_err();
    assert!(e.contains("probe_timeout"), "{e}");
    let e = Options::from_toml_str("no_such_key = 1").unwrap_err();
    assert!(e.contains("no_such_key"), "{e}");
    let o = Options::from_toml_str("probe_fail_threshold = 0").unwrap();
    assert!(o.validate().unwrap_err().to_string().contains("probe_fail_threshold"));
}

#[test]
fn mainline_keys_are_checked() {
    let o = Options::default();
    assert!(o.mainline_dht && o.mainline_bootstrap.len() == 4 && o.mainline_listen_addr().unwrap().is_none());
    let o = Options::from_toml_str("mainline_listen = \"127.0.0.1:7000\"\nmainline_dht = false").unwrap();
    assert_eq!(o.mainline_listen_addr().unwrap(), Some("127.0.0.1:7000".parse().unwrap()));
    for (toml, key) in [
        ("mainline_listen = \"[::1]:7000\"", "mainline_listen"),
        ("mainline_listen = \"nowhere\"", "mainline_listen"),
        ("mainline_bootstrap = [\"router.bittorrent.com\"]", "mainline_bootstrap"),
    ] {
        let e = Options::from_toml_str(toml).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
}

#[test]
fn hostile_bounds_are_checked() {
    let o = Options::from_toml_str("max_known_peers = 10").unwrap();
    assert!(o.validate().unwrap_err().to_string().contains("max_known_peers"), "below max_pending 200");
    let o = Options::from_toml_str("max_inbound_handshakes_per_ip = 0").unwrap();
    assert!(o.validate().unwrap_err().to_string().contains("max_inbound_handshakes_per_ip"));
    let o = Options::from_toml_str("useless_peer_timeout = \"90s\"\nmax_connections_per_ip = 2").unwrap();
    assert_eq!(o.useless_peer_timeout, Duration::from_secs(90));
    o.validate().unwrap();
}
