"""The peers of a simulated swarm: one shoal or python3-libtorrent process each, in its own
namespace, and what the runner last saw of it (phase, pieces, bytes up and down).

shoal is read over its diagnostics (`GET /debug/p2p/torrents`, `--diag` on the peer's
address); a libtorrent peer (tests/common/lt_peer.py --status) prints a `status {json}` line
twice a second, read by a thread. Both give the same fields. Each also says when it completed
(shoal's `completed_at_ms`, libtorrent's `done` line), which the runner takes over its own poll.

Each client is told to upload at most `LIMIT_SHARE` of its link's cap, as users are told to set
it: a client that fills its own uplink queues its requests and haves behind the piece data in
the kernel's send buffer, and a peer on a slow link then starves its own downloads. A peer is stopped by its PID
(SIGTERM, then SIGKILL), and can be started again on the same data (churn).
"""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

BT_PORT = 6881
DIAG_PORT = 7070
HERE = os.path.dirname(os.path.abspath(__file__))
LT_PEER = os.path.join(HERE, "..", "..", "tests", "common", "lt_peer.py")
PY = "/usr/bin/python3"
LIMIT_SHARE = 0.9


class Peer:
    def __init__(self, index, ns, ip, client, cls, up_cap, down_cap, delay_ms, workdir):
        self.index = index
        self.ns = ns
        self.ip = ip
        self.client = client
        self.cls = cls  # "seed", "fast", "medium", "slow" or "free"
        self.up_cap = up_cap
        self.down_cap = down_cap
        self.delay_ms = delay_ms
        self.dir = os.path.join(workdir, "peer%d" % index)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.first_start = None
        self.first_start_wall = None  # the same, on the wall clock (peers report completion on it)
        self.completed_at = None
        self.finished_wall = None  # when the peer itself says it completed, wall clock
        self.status = None
        self.carried = [0, 0]  # bytes down and up of earlier runs (before a restart)
        self.restarts = 0
        self.unanswered = 0  # diagnostics polls that got no answer (the last view was kept)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, now, torrent, shoal_bin, seed_path=None, settings=(), super_seed=False):
        """Starts the process: a leecher that keeps seeding once complete, or (with
        `seed_path`) a seeder of that file, super-seeding (BEP 16) with `super_seed`. `settings`
        are extra `key = value` lines for a shoal peer's config file."""
        log = open(os.path.join(self.dir, "log.%d" % self.restarts), "wb")
        env = dict(os.environ, HOME=self.dir)
        env.pop("RUST_LOG", None)
        if os.environ.get("SWARM_SIM_LOG"):  # e.g. `shoal=debug`, into each peer's log
            env["RUST_LOG"] = os.environ["SWARM_SIM_LOG"]
        ns = ["ip", "netns", "exec", self.ns]
        limit = int(self.up_cap * LIMIT_SHARE)
        if self.client == "shoal":
            config = os.path.join(self.dir, "shoal.toml")
            with open(config, "w") as f:
                f.write("upload_rate_limit = %d\n" % limit)
                f.writelines(line + "\n" for line in settings)
            common = ["--listen", "%s:%d" % (self.ip, BT_PORT), "--no-kad", "--no-dht", "--quiet",
                      "--diag", "%s:%d" % (self.ip, DIAG_PORT), "--config", config]
            if seed_path:
                cmd = [shoal_bin, "seed", seed_path, "--torrent", torrent] + common
                cmd += ["--super-seed"] if super_seed else []
            else:
                cmd = [shoal_bin, "download", torrent, "-o", self.dir, "--seed"] + common
            self.proc = subprocess.Popen(ns + cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        else:
            save = os.path.dirname(seed_path) if seed_path else self.dir
            cmd = [PY, LT_PEER, "leech", torrent, save, "--ip", self.ip, "--port", str(BT_PORT), "--stay",
                   "--status", "0.5", "--timeout", "86400", "--upload-limit", str(limit)]
            cmd += ["--super-seed"] if seed_path and super_seed else []
            self.proc = subprocess.Popen(ns + cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env)
            threading.Thread(target=self._read_lt, args=(self.proc,), daemon=True).start()
        log.close()
        if self.first_start is None:
            self.first_start, self.first_start_wall = now, time.time()

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s; keeps the byte counts for the totals."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.status:
            self.carried[0] += self.status["downloaded"]
            self.carried[1] += self.status["uploaded"]
        self.proc = None
        self.status = None
        self.restarts += 1

    def poll(self):
        """Refreshes `status` (shoal over HTTP; libtorrent's comes by itself)."""
        if not self.running or self.client != "shoal":
            return
        url = "http://%s:%d/debug/p2p/torrents" % (self.ip, DIAG_PORT)
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                torrents = json.load(r)["torrents"]
        except (OSError, ValueError, KeyError):
            self.unanswered += 1
            return  # not listening yet, or busy: keep the last view
        if torrents:
            t = torrents[0]
            self.status = {"phase": t["phase"], "have": t["progress"]["have"], "connected": t["pool"]["connected"],
                           "downloaded": t["totals"]["downloaded"], "uploaded": t["totals"]["uploaded"]}
            if t.get("completed_at_ms") and self.finished_wall is None:
                self.finished_wall = t["completed_at_ms"] / 1000

    def have(self):
        """The pieces the peer has (bytes of the wire bitfield), or None before its first view."""
        s = self.status
        return bytes.fromhex(s["have"]) if s and s.get("have") else None

    def seeding(self):
        return bool(self.status) and self.status["phase"] == "seeding"

    def totals(self):
        s = self.status or {"downloaded": 0, "uploaded": 0}
        return self.carried[0] + s["downloaded"], self.carried[1] + s["uploaded"]

    def _read_lt(self, proc):
        for line in proc.stdout:
            words = line.decode(errors="replace").split(" ", 1)
            if words[0] == "status" and len(words) == 2 and self.proc is proc:
                try:
                    self.status = json.loads(words[1])
                except ValueError:
                    pass
            elif words[0] == "done" and self.proc is proc and self.finished_wall is None:
                self.finished_wall = time.time()  # printed within 0.1 s of completing
