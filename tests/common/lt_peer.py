#!/usr/bin/python3
"""A python3-libtorrent peer for shoal's interop tests and scripts/compare.sh.

Run it with Debian's /usr/bin/python3 (python3-libtorrent is installed for that interpreter).

    lt_peer.py seed  TORRENT SAVE_DIR [--peer HOST:PORT]... [--dht-bootstrap HOST:PORT]...
    lt_peer.py leech TORRENT SAVE_DIR [--peer HOST:PORT]... [--timeout SECONDS] [--dht-bootstrap HOST:PORT]...
                     [--stay] [--status SECONDS]
    lt_peer.py dht [--ip IP] [--dht-bootstrap HOST:PORT]...

TORRENT may be a magnet URI instead of a file (leech): libtorrent then fetches the metadata
from its peers (BEP 9) before downloading.

It listens on 127.0.0.1 only (or --ip, such as an address of a test's network namespace; a
free port unless --port is given), TCP only, with DHT, LSD,
UPnP and NAT-PMP off, and prints on stdout, flushed:

    listening <port>     once the torrent is added and the session accepts peers
    seeding              (seed) once the torrent is in seed mode and serving
    done <seconds>       (leech) once every piece is downloaded and verified; then it exits 0

A leecher that has not finished within --timeout seconds prints `timeout <progress>` and exits 1.
With --stay a leecher keeps seeding after `done` until it is killed (scripts/swarm-sim), and
--status N prints every N seconds a line `status {json}` with its phase (`checking`,
`downloading`, `seeding`), the pieces it has as the wire's bitfield in hex, and the payload bytes
it downloaded and uploaded.
A seeder serves until it is killed. `--download-limit BYTES` caps the torrent's download rate
(a leecher that stays a leecher, keeping its connections to seeders); `--upload-limit BYTES`
caps its upload rate. A seeder trusts the data on disk (libtorrent's seed mode,
each piece hashed when first served) unless --verify asks for a full check before seeding.
With --dht-bootstrap the mainline DHT is on, bootstrapped from those nodes only (never the
public ones), with loopback nodes allowed in its routing table and searches, and the torrent is
announced (and, leeching, looked up) in it every few seconds.
`dht` runs a DHT node and nothing else (a local DHT network for tests): it prints `listening
<port>` (its UDP port is the same) and serves until killed.
Lines `connect HOST:PORT` on stdin make it dial that peer (for leechers that cannot be told
where a peer is, such as aria2c without a tracker).
"""
import argparse
import json
import sys
import threading
import time

import libtorrent as lt


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def dht_settings(bootstrap):
    """DHT off, or on with only `bootstrap` nodes and loopback addresses allowed."""
    if not bootstrap:
        return {"enable_dht": False}
    return {
        "enable_dht": True,
        "dht_bootstrap_nodes": ",".join(bootstrap),
        # One node per IP / per /24 and "dark internet" filters would drop every 127.0.0.1 node.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
    }


def session(ip, port, seeding, dht_bootstrap=()):
    pack = lt.high_performance_seed() if seeding else lt.default_settings()
    pack.update({
        "listen_interfaces": "%s:%d" % (ip, port),
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "announce_to_all_trackers": True,
        "alert_mask": lt.alert_category.error | lt.alert_category.status | lt.alert_category.peer | lt.alert_category.connect,
    })
    pack.update(dht_settings(dht_bootstrap))
    if dht_bootstrap:
        pack["alert_mask"] |= lt.alert_category.dht
    return lt.session(pack)


def add(ses, torrent, save, seed_mode, super_seed=False):
    if torrent.startswith("magnet:"):
        # Only the info-hash (and any x.pe/tr): the metadata comes from peers (BEP 9).
        params = lt.parse_magnet_uri(torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
    params.save_path = save
    # Not queued: an auto-managed torrent starts paused until the session's next queue tick,
    # and until then the session turns every incoming connection away.
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    if seed_mode:
        # Trust the data on disk: libtorrent checks each piece's hash when it first serves it.
        params.flags |= lt.torrent_flags.seed_mode
    if super_seed:
        # BEP 16; libtorrent applies it only while the torrent is complete. Strict, as BEP 16
        # describes it (and as shoal does): a peer gets a new piece once another peer
        # announces the one it was given.
        ses.apply_settings({"strict_super_seeding": True})
        params.flags |= lt.torrent_flags.super_seeding
    return ses.add_torrent(params)


def connect(handle, peers):
    for peer in peers:
        host, port = peer.rsplit(":", 1)
        handle.connect_peer((host, int(port)))


def follow_stdin(handle):
    """Dials the peers named by `connect HOST:PORT` lines on stdin, until stdin closes."""
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] == "connect":
            connect(handle, [words[1]])


def log_alerts(ses):
    """Logs pending alerts; True if one says the TCP listen socket is up."""
    listening = False
    for alert in ses.pop_alerts():
        sys.stderr.write("alert: %s\n" % alert.message())
        if isinstance(alert, lt.listen_succeeded_alert) and alert.socket_type == lt.socket_type_t.tcp:
            listening = True
    return listening


def wait_listening(ses, timeout=20.0):
    """Waits for the TCP listen socket: connections that come earlier can be dropped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        if log_alerts(ses):
            return True
    return False


def dht_node(ip, port, bootstrap):
    """A DHT node without torrents, answering until killed."""
    pack = lt.default_settings()
    pack.update({
        "listen_interfaces": "%s:%d" % (ip, port),
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "alert_mask": lt.alert_category.error | lt.alert_category.status | lt.alert_category.dht,
    })
    pack.update(dht_settings(bootstrap or ["127.0.0.1:1"]))
    if not bootstrap:
        # The first node of a network has nobody to ask.
        pack["dht_bootstrap_nodes"] = ""
    ses = lt.session(pack)
    if not wait_listening(ses):
        say("not listening")
        return 1
    say("listening %d" % ses.listen_port())
    while True:
        ses.wait_for_alert(1000)
        log_alerts(ses)


def status_line(status):
    """`status {json}`: phase, have (wire bitfield in hex, piece 0 in the high bit) and totals."""
    pieces = list(status.pieces)
    have = bytearray((len(pieces) + 7) // 8)
    for i, has in enumerate(pieces):
        if has:
            have[i // 8] |= 0x80 >> (i % 8)
    checking = status.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
    phase = "seeding" if status.is_seeding else "checking" if checking else "downloading"
    return "status " + json.dumps({
        "phase": phase,
        "have": have.hex(),
        "downloaded": status.total_payload_download,
        "uploaded": status.total_payload_upload,
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seed", "leech", "dht"])
    ap.add_argument("torrent", nargs="?")
    ap.add_argument("save", nargs="?")
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--verify", action="store_true", help="seed: check every piece before seeding")
    ap.add_argument("--download-limit", type=int, default=0, help="bytes per second, 0: none")
    ap.add_argument("--upload-limit", type=int, default=0, help="bytes per second, 0: none")
    ap.add_argument("--dht-bootstrap", action="append", default=[], help="HOST:PORT of a DHT node")
    ap.add_argument("--stay", action="store_true", help="leech: keep seeding after done")
    ap.add_argument("--status", type=float, default=0.0, help="seconds between status lines, 0: none")
    ap.add_argument("--super-seed", action="store_true", help="BEP 16 strict super-seeding while complete")
    args = ap.parse_args()
    seeding = args.mode == "seed"

    if args.mode == "dht":
        return dht_node(args.ip, args.port, args.dht_bootstrap)
    ses = session(args.ip, args.port, seeding, args.dht_bootstrap)
    if not wait_listening(ses):
        say("not listening")
        return 1
    handle = add(ses, args.torrent, args.save, seeding and not args.verify, args.super_seed)
    if args.download_limit > 0:
        handle.set_download_limit(args.download_limit)
    if args.upload_limit > 0:
        handle.set_upload_limit(args.upload_limit)
    say("listening %d" % ses.listen_port())
    connect(handle, args.peer)
    threading.Thread(target=follow_stdin, args=(handle,), daemon=True).start()

    started = time.monotonic()
    announced_seeding = False
    finished = False
    next_dht_announce = started
    next_status = started
    while True:
        if args.dht_bootstrap and time.monotonic() >= next_dht_announce:
            # libtorrent's own first announce waits for its timer (minutes); a test cannot.
            handle.force_dht_announce()
            next_dht_announce = time.monotonic() + 5.0
        status = handle.status()
        if args.status > 0 and time.monotonic() >= next_status:
            say(status_line(status))
            next_status = time.monotonic() + args.status
        if seeding and not announced_seeding and status.is_seeding:
            say("seeding")
            announced_seeding = True
        if not seeding and not finished and status.is_seeding:
            say("done %.3f" % (time.monotonic() - started))
            if not args.stay:
                return 0
            finished = True
        if not seeding and not finished and time.monotonic() - started > args.timeout:
            say("timeout %.4f" % status.progress)
            return 1
        log_alerts(ses)
        # A swarm of many such peers (--status) shares the cores: poll less often there.
        time.sleep(0.1 if args.status > 0 else 0.02)


if __name__ == "__main__":
    sys.exit(main())
