"""The runner: builds the network and the peers of a profile, watches the swarm twice a
second until every leecher is done (or the time is up), then stops everything it started by
PID, removes the namespaces and its working directory, checks every leecher's file against the
payload's SHA-1, and reports."""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from . import net, plot, profiles, stats
from .peers import Peer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRACKER_PORT = 6969
TICK = 0.5
NAME = "swarm-sim.bin"


def say(*words):
    print("swarm-sim:", *words, file=sys.stderr, flush=True)


def fail(message):
    """A user's mistake: one line, exit 2."""
    print("swarm-sim: " + message, file=sys.stderr)
    sys.exit(2)


def parse(argv):
    ap = argparse.ArgumentParser(prog="swarm-sim", description=(sys.modules["__main__"].__doc__ or "").split("\n\n")[0])
    ap.add_argument("--client", choices=("shoal", "lt", "mixed"), default="shoal")
    ap.add_argument("--peers", type=int, default=40, help="peers in the swarm, the seeder included (3-100)")
    ap.add_argument("--profile", choices=profiles.PROFILES, default="heterogeneous")
    ap.add_argument("--size", type=int, default=64, help="payload MiB (default 64)")
    ap.add_argument("--piece", type=int, default=256, help="piece KiB (default 256)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random plan and payload")
    ap.add_argument("--timeout", type=float, default=480, help="seconds the leechers get (default 480)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="every link's caps times this (default 1; below 1 where 40 peers at full rates take every core)")
    ap.add_argument("--seeder-cap", type=int, metavar="KIB", help="the seeder's upload cap, KiB/s (default: the profile's)")
    ap.add_argument("--plain-seeder", action="store_true",
                    help="the initial seeder announces every piece (default: it super-seeds, BEP 16)")
    ap.add_argument("--seeder-stays", action="store_true", help="do not stop the seeder once a full copy is out")
    ap.add_argument("--shoal-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a line for every shoal peer's config file, e.g. 'unchoke_interval = \"5s\"' (repeatable)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--plot", metavar="SVG", help="write the run's plot there")
    ap.add_argument("--report", nargs="+", metavar="JSON", help="no run: table and --plot of saved --json outputs")
    ap.add_argument("--shoal-bin", default=os.path.join(REPO, "target", "release", "shoal"))
    ap.add_argument("--base", help="where the payload and the peers' data go (default /dev/shm, else /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (data and logs)")
    args = ap.parse_args(argv)
    if not args.report:
        if not 3 <= args.peers <= 100:
            fail("--peers must be between 3 and 100, got %d" % args.peers)
        if not 0.01 <= args.scale <= 4:
            fail("--scale must be between 0.01 and 4")
        if args.size < 1 or args.piece < 16 or args.piece & (args.piece - 1):
            fail("--size must be at least 1 MiB and --piece a power of two of at least 16 KiB")
    return args


def preflight(args):
    if os.geteuid() != 0:
        fail("must run as root (it makes network namespaces)")
    for tool in ("ip", "tc", "opentracker"):
        if shutil.which(tool) is None:
            fail("%s not found (apt-get install iproute2 opentracker)" % tool)
    if not os.access(args.shoal_bin, os.X_OK):
        fail("no shoal binary at %s (cargo build --release, or --shoal-bin)" % args.shoal_bin)
    if args.client != "shoal":
        r = subprocess.run(["/usr/bin/python3", "-c", "import libtorrent"], capture_output=True)
        if r.returncode != 0:
            fail("python3-libtorrent is missing (apt-get install python3-libtorrent)")


def workdir(args):
    need = args.size * 2 ** 20 * (args.peers + 1) * 1.2
    base = args.base
    if base is None:
        base = "/dev/shm" if shutil.disk_usage("/dev/shm").free > need else "/var/tmp"
    return tempfile.mkdtemp(prefix="swarm-sim-", dir=base)


def make_payload(work, args):
    """Random payload (from --seed), its .torrent (made by shoal) and its SHA-1."""
    seed_dir = os.path.join(work, "seed")
    os.makedirs(seed_dir)
    path = os.path.join(seed_dir, NAME)
    data = random.Random(args.seed).randbytes(args.size * 2 ** 20)
    with open(path, "wb") as f:
        f.write(data)
    torrent = os.path.join(work, "swarm.torrent")
    announce = "http://%s:%d/announce" % (net.HUB_ADDR, TRACKER_PORT)
    made = subprocess.run([args.shoal_bin, "create", path, "-o", torrent, "--piece-size", "%dKiB" % args.piece,
                           "-t", announce], check=True, capture_output=True, text=True).stdout
    info_hash = made.split("info-hash:")[1].split()[0]
    pieces = -(-len(data) // (args.piece * 1024))
    return path, torrent, info_hash, pieces, hashlib.sha1(data).hexdigest()


def start_tracker(work, info_hash):
    """opentracker on the hub. Debian builds it whitelist-only; it chroots into -d and drops
    root for `nobody`, so the whitelist lives in a directory of its own that nobody can read."""
    tdir = os.path.join(work, "tracker")
    os.makedirs(tdir)
    os.chmod(tdir, 0o755)
    with open(os.path.join(tdir, "whitelist.txt"), "w") as f:
        f.write(info_hash + "\n")
    os.chmod(os.path.join(tdir, "whitelist.txt"), 0o644)
    os.chmod(work, 0o755)
    with open(os.path.join(work, "tracker.log"), "wb") as log:
        tracker = subprocess.Popen(["opentracker", "-i", net.HUB_ADDR, "-p", str(TRACKER_PORT), "-P", str(TRACKER_PORT),
                                    "-d", tdir, "-w", "whitelist.txt"], stdout=log, stderr=subprocess.STDOUT)
    wait_port(net.HUB_ADDR, TRACKER_PORT, 10)
    return tracker


def wait_port(host, port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listening on %s:%d after %d s" % (host, port, seconds))


def covers(haves, pieces):
    """True if every piece is in at least one of the bitfields."""
    union = bytearray((pieces + 7) // 8)
    for have in haves:
        for i, b in enumerate(have):
            union[i] |= b
    return all(union[i // 8] & (0x80 >> (i % 8)) for i in range(pieces))


class Swarm:
    def __init__(self, args, specs, peers, torrent, seed_path, pieces):
        self.args, self.specs, self.peers = args, specs, peers
        self.torrent, self.seed_path, self.pieces = torrent, seed_path, pieces
        self.seeder, self.leechers = peers[0], peers[1:]
        self.series = []
        self.traffic = []  # (t, [(bytes down, bytes up) per peer, seeder first])
        self.sole = []  # (t, {class: pieces only one peer of that class holds}), after the seeder left
        self.sole_at_leave = None  # [(piece, peer index)] held by one peer alone as the seeder left
        self.seed_left = None
        self.churned = set()
        self.returned = set()
        self.t0 = time.monotonic()
        # One poll per peer at once: asked one after the other, 40 peers took longer than a tick.
        self.pool = ThreadPoolExecutor(max_workers=len(peers))

    def start(self, peer):
        """Starts `peer`, noting the time it really started (starting 40 takes seconds)."""
        seed = self.seed_path if peer is self.seeder else None
        peer.start(time.monotonic() - self.t0, self.torrent, self.args.shoal_bin, seed, self.args.shoal_set,
                   not self.args.plain_seeder)

    def start_seeder(self):
        self.start(self.seeder)
        deadline = time.monotonic() + 120
        while not self.seeder.seeding():
            if time.monotonic() > deadline or not self.seeder.running:
                raise RuntimeError("the seeder did not start seeding (see its log under --keep)")
            time.sleep(0.2)
            self.seeder.poll()

    def run(self):
        """Watches the swarm until every leecher is done or the timeout; returns its length."""
        self.t0 = t0 = time.monotonic()
        last_note = -10
        while True:
            t = time.monotonic() - t0
            self.events(t)
            list(self.pool.map(lambda p: p.poll(), self.peers))
            for p in self.leechers:
                if p.completed_at is None and p.running and p.seeding():
                    # The peer's own time: a poll sees it done up to seconds later on a loaded
                    # machine, and that rounding alone blurred the ranking of peers.
                    own = p.finished_wall - p.first_start_wall if p.finished_wall else None
                    p.completed_at = own if own is not None and 0 < own <= t - p.first_start else t - p.first_start
            self.observe(t)
            done = sum(p.completed_at is not None for p in self.leechers)
            if t - last_note >= 10:
                last_note = t
                low = self.series[-1][1] if self.series else "-"
                say("t=%3.0fs  done %d/%d  lowest availability %s  seeder %s"
                    % (t, done, len(self.leechers), low, "up" if self.seeder.running else "gone"))
            if done == len(self.leechers) or t > self.args.timeout:
                self.pool.shutdown()
                return t
            time.sleep(max(0.0, TICK - (time.monotonic() - t0 - t)))

    def events(self, t):
        """Joins, churn, and the seeder leaving."""
        for spec, p in zip(self.specs[1:], self.leechers):
            if p.first_start is None and t >= spec.join_at:
                self.start(p)
            if spec.leave and p.index not in self.churned and p.running and t >= spec.leave[0]:
                p.poll()  # its byte counts as late as can be: what it verifies next is resumed, not fetched
                p.stop()
                self.churned.add(p.index)
            if spec.leave and p.index in self.churned and p.index not in self.returned and t >= spec.leave[1]:
                self.start(p)
                self.returned.add(p.index)

    def observe(self, t):
        width = (self.pieces + 7) // 8
        live = [p for p in self.peers if p.running and p.have() is not None and len(p.have()) == width]
        leechers = [p for p in live if p is not self.seeder]
        if self.seeder.running and not self.args.seeder_stays and covers([p.have() for p in leechers], self.pieces):
            self.seeder.stop()
            self.seed_left = round(t, 2)
            say("t=%3.0fs  a full copy is out: the seeder leaves" % t)
        # Counted over the peers still running, so the sample taken as the seeder leaves is
        # already without it.
        counted = leechers if not self.seeder.running else live
        if counted:
            held = stats.holders([p.have() for p in counted], self.pieces)
            low, mean = stats.availability(held)
            self.series.append((round(t, 2), low, round(mean, 2)))
            self.traffic.append((round(t, 2), [p.totals() for p in self.peers]))
            if not self.seeder.running:
                self.sole.append((round(t, 2), stats.sole_holders(held, [p.cls for p in counted])))
                if self.sole_at_leave is None:
                    self.sole_at_leave = [(i, counted[h[0]].index) for i, h in enumerate(held) if len(h) == 1]


def sha1_of(path):
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def detail(p, spec, size_mib, digest):
    down, up = p.totals()
    # The rate is taken from the completion time as reported, so the two agree in the JSON (from
    # the unrounded time, a peer done in 2.01 s showed 3.97 MiB/s for 8 MiB).
    done = round(p.completed_at, 2) if p.completed_at is not None else None
    return {
        "index": p.index, "client": p.client, "class": p.cls,
        "upload_cap_kib": p.up_cap // 1024, "download_cap_kib": p.down_cap // 1024, "delay_ms": p.delay_ms,
        "join_at_s": round(spec.join_at, 2), "started_s": round(p.first_start, 2) if p.first_start is not None else None, "left_s": [round(x, 2) for x in spec.leave] if spec.leave else None,
        "completion_s": done,
        "download_mib_s": round(size_mib / done, 3) if done else None,
        "downloaded": down, "uploaded": up, "unanswered_polls": p.unanswered,
        "verified": p.cls == "seed" or sha1_of(os.path.join(p.dir, NAME)) == digest,
    }


def simulate(args):
    preflight(args)
    tag = "ssim%d" % os.getpid()
    work = workdir(args)
    network = net.Network(tag)
    peers, tracker = [], None
    started = time.monotonic()
    try:
        seed_path, torrent, info_hash, pieces, digest = make_payload(work, args)
        specs = profiles.plan(args.profile, args.peers, args.client, args.seed)
        say("%d peers (%s, %s), %d MiB in %d pieces, in %s" % (args.peers, args.client, args.profile, args.size, pieces, work))
        network.create_hub()
        network.reserve_neighbours(args.peers + 1)
        if not network.netem:
            say("this kernel has no netem: links get no added delay")
            for s in specs:
                s.delay_ms = 0
        for s in specs:
            cap = args.seeder_cap * 1024 if s.cls == "seed" and args.seeder_cap else profiles.CAPS[s.cls] * args.scale
            down = profiles.DOWN_CAP * args.scale
            ns = network.add_host(s.index, int(cap), int(down), s.delay_ms)
            peers.append(Peer(s.index, ns, net.peer_addr(s.index), s.client, s.cls, int(cap), int(down), s.delay_ms, work))
        network.enter_hub()
        tracker = start_tracker(work, info_hash)
        swarm = Swarm(args, specs, peers, torrent, seed_path, pieces)
        swarm.start_seeder()
        length = swarm.run()
        details = [detail(p, s, args.size, digest) for p, s in zip(peers, specs)]
    finally:
        for p in peers:
            p.stop()
        if tracker is not None:
            tracker.terminate()
            tracker.wait()
        network.remove()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    run = {
        "client": args.client, "peers": args.peers, "profile": args.profile, "seed": args.seed,
        "shoal_set": args.shoal_set, "super_seed": not args.plain_seeder,
        "payload_mib": args.size, "piece_kib": args.piece, "scale": args.scale, "pieces": pieces, "netem": network.netem,
        "seed_left_s": swarm.seed_left, "watched_s": round(length, 2), "wall_s": round(time.monotonic() - started, 1),
        "all_verified": all(d["verified"] for d in details),
        "peers_detail": details, "availability": swarm.series, "traffic": swarm.traffic,
        "sole_holders": swarm.sole, "sole_at_seed_left": swarm.sole_at_leave,
    }
    run.update(stats.summary(run))
    return run


def table(runs):
    """A markdown table of the headline figures, one row per run."""
    rows = ["| client | profile | peers | swarm done s | median contributor s | tft correlation (contributors) |"
            " free-rider slowdown | lowest availability after seeder left |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        cells = [r["client"], r["profile"], r["peers"], r["swarm_completion_s"], r["median_contributor_completion_s"],
                 "%s (%s)" % (num(r["tft_correlation"]), num(r["tft_correlation_contributors"])),
                 r["free_rider_slowdown"], r["min_availability_after_seed_left"]]
        rows.append("| " + " | ".join(num(c) for c in cells) + " |")
    return "\n".join(rows)


def num(c):
    return "%.2f" % c if isinstance(c, float) else "—" if c is None else str(c)


def by_class(run):
    lines = ["class   peers  median done s  median MiB/s  median up MiB"]
    for cls in ("fast", "medium", "slow", "free"):
        ps = [p for p in run["peers_detail"] if p["class"] == cls]
        if ps:
            lines.append("%-7s %5d  %13s  %12s  %13.1f" % (
                cls, len(ps), stats.median([p["completion_s"] for p in ps if p["completion_s"] is not None]),
                stats.median([p["download_mib_s"] for p in ps if p["download_mib_s"] is not None]),
                stats.median([p["uploaded"] / 2 ** 20 for p in ps])))
    return "\n".join(lines)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report:
        runs = []
        for path in args.report:
            try:
                with open(path) as f:
                    run = json.load(f)
            except (OSError, ValueError) as e:
                fail("%s: not the JSON of a run (%s)" % (path, e))
            run.update(stats.summary(run))  # figures added since the run was saved
            runs.append(run)
        print(table(runs))
        if args.plot:
            with open(args.plot, "w") as f:
                f.write(plot.svg(runs, ["%s (%s)" % (r["client"], r["profile"]) for r in runs]))
        return 0
    # SIGTERM ends the run like Ctrl-C: the finally above stops every process and namespace.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        run = simulate(args)
    except KeyboardInterrupt:
        say("interrupted: every process it started is stopped, its namespaces and data removed")
        return 130
    if args.plot:
        with open(args.plot, "w") as f:
            f.write(plot.svg([run], ["%s (%s)" % (args.client, args.profile)]))
    out = sys.stdout if not args.json else sys.stderr
    print(table([run]), file=out)
    print(by_class(run), file=out)
    if args.json:
        print(json.dumps(run))
    done = all(c is not None for c in run["completion_s"])
    return 0 if done and run["all_verified"] else 1
