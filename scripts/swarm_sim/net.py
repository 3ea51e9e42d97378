"""The simulated network: a hub namespace holding a bridge and the tracker, and one namespace
per peer joined to the bridge by a veth pair whose two ends are shaped with tc.

Addresses come from 198.18.0.0/15 (RFC 2544, set aside for benchmark networks) and exist only
on interfaces inside the namespaces made here; `Network.remove` deletes every one of them.

Each shaped end has an HTB root with two classes: packets under 128 bytes (TCP acknowledgements,
requests, haves) and the runner's polls pass at link speed, everything else at the peer's cap.
Without that a peer whose upload is capped near zero could not even acknowledge what it
downloads, and free riders would be slow for the wrong reason. netem on the peer's egress adds
its one-way delay, where the kernel has netem (`Network.netem`); without it (this project's VM
has no CONFIG_NET_SCH_NETEM) links have no added delay, only the shaper's queueing, and the
run says so.

Cost: at full rates 40 peers on two cores take every cycle, most of it in the kernel moving
packets (veth, bridge, shaper), and a swarm that waits for the CPU shows the scheduler, not
tit-for-tat: every class then downloads at about the same rate. So segmentation offloads
stay on (HTB counts a 64 KiB super-packet as its bytes) and the bridge does not pass frames
through iptables (`bridge-nf-call-*` off in the hub, a per-namespace setting; the host's
stays as it was): with offloads off and iptables on, the kernel took three quarters of both
cores for the whole transfer. `--scale` lowers every cap.

The kernel keeps one ARP table for all namespaces, bounded by `net.ipv4.neigh.default.gc_thresh3`
(1024 by default): 40 peers that each talk to 39 others need more, and past the bound a new
neighbour cannot be resolved at all ("neighbor table overflow"), so the peers started last could
reach neither the tracker nor anyone else for tens of seconds. `Network.reserve_neighbours`
raises the three thresholds for the run (never lowers them) and `Network.remove` puts back the
values it found.
"""
import ctypes
import os
import subprocess

from .peers import DIAG_PORT

CLONE_NEWNET = 0x40000000
NEIGH_SYSCTL = "/proc/sys/net/ipv4/neigh/default/gc_thresh%d"
HUB_ADDR = "198.18.0.1"
PREFIX = 15


def sh(*cmd):
    """Runs a command; raises with its stderr if it fails."""
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))


def peer_addr(index):
    """198.18.1.1 for peer 0 (the seeder), 198.18.1.2 for peer 1, ... (up to 250 peers)."""
    return "198.18.%d.%d" % (1 + index // 250, 1 + index % 250)


class Network:
    def __init__(self, tag):
        self.tag = tag
        self.hub = tag + "h"
        self.namespaces = []
        self.netem = False
        # threshold number -> (open file, value found, value set); the file is opened before this
        # process enters the hub, where /proc/sys/net shows that namespace's settings, and the
        # thresholds exist only in the first one
        self.neigh_saved = {}

    def create_hub(self):
        self._add_ns(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "addr", "add", "%s/%d" % (HUB_ADDR, PREFIX), "dev", "br0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for table in ("iptables", "ip6tables", "arptables"):
            path = "/proc/sys/net/bridge/bridge-nf-call-" + table
            sh("ip", "netns", "exec", self.hub, "sh", "-c", "[ ! -e %s ] || echo 0 > %s" % (path, path))
        probe = ["tc", "-n", self.hub, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        self.netem = subprocess.run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def enter_hub(self):
        """Moves this process (its calling thread, and every thread or child made after) into
        the hub, where the peers' diagnostics and the tracker are reachable."""
        fd = os.open("/run/netns/" + self.hub, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into " + self.hub)
        finally:
            os.close(fd)

    def add_host(self, index, up_bytes, down_bytes, delay_ms):
        """A namespace for peer `index` on the bridge: upload capped at `up_bytes` per second
        with `delay_ms` of one-way delay (none without netem), download capped at `down_bytes`.
        Returns its name."""
        ns = "%sp%d" % (self.tag, index)
        port = "v%d" % index
        self._add_ns(ns)
        sh("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", "%s/%d" % (peer_addr(index), PREFIX), "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        shape(ns, "eth0", up_bytes, delay_ms if self.netem else 0)
        shape(self.hub, port, down_bytes, 0)
        return ns

    def reserve_neighbours(self, hosts):
        """Makes room in the kernel's (global) ARP table for `hosts` hosts that all talk to each
        other: thresholds 1, 2, 3 at least hosts², 2·hosts², 4·hosts²."""
        for n, want in ((1, hosts * hosts), (2, 2 * hosts * hosts), (3, 4 * hosts * hosts)):
            f = open(NEIGH_SYSCTL % n, "r+")
            found = int(f.read())
            if want > found:
                f.seek(0)
                f.write(str(want))
                f.flush()
                self.neigh_saved[n] = (f, found, want)
            else:
                f.close()

    def remove(self):
        """Deletes every namespace made here (their interfaces go with them) and puts back the
        ARP thresholds, unless someone changed them since. Idempotent."""
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.namespaces = []
        for n, (f, found, set_to) in sorted(self.neigh_saved.items(), reverse=True):
            f.seek(0)
            if int(f.read()) == set_to:
                f.seek(0)
                f.write(str(found))
                f.flush()
            f.close()
        self.neigh_saved = {}

    def _add_ns(self, ns):
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def shape(ns, dev, rate_bytes, delay_ms):
    """HTB on `dev`'s egress: small IP packets, ARP and the runner's polls at link speed, the rest at
    `rate_bytes`/s."""
    tc = ["tc", "-n", ns]
    sh(*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20")
    sh(*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", "1gbit")
    sh(*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb", "rate", "%dbit" % (rate_bytes * 8))
    if delay_ms > 0:
        for leaf in ("10", "20"):
            sh(*tc, "qdisc", "add", "dev", dev, "parent", "1:" + leaf, "handle", leaf + ":", "netem", "delay",
               "%dms" % delay_ms, "limit", "10000")
    # IPv4 total length below 128 bytes: the 16-bit field at offset 2 with its top 9 bits clear.
    sh(*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "u16",
       "0x0000", "0xff80", "at", "2", "flowid", "1:10")
    # The runner's polls of the diagnostics (answers of a few KiB, twice a second) at link speed:
    # in the shaped class they took an eighth of a free rider's uplink, which a libtorrent peer
    # (read over a pipe) does not pay, and queued behind its blocks for seconds.
    for field in ("sport", "dport"):
        sh(*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
           "protocol", "6", "0xff", "match", "ip", field, str(DIAG_PORT), "0xffff", "flowid", "1:10")
    # ARP at link speed too: in the shaped class it waits behind a full upload queue (seconds at
    # 1 MiB/s, a minute at a free rider's 16 KiB/s), and a peer that joins a busy swarm could not
    # resolve the tracker's or its peers' addresses for tens of seconds.
    sh(*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "arp", "prio", "2", "u32", "match", "u32", "0", "0",
       "flowid", "1:10")
