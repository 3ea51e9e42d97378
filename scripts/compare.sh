#!/usr/bin/env bash
# Times a full loopback download of the same torrent by shoal, aria2c and python3-libtorrent,
# each from the same python3-libtorrent seeder on 127.0.0.1, and prints a table.
#
#   scripts/compare.sh                        # 1 GiB of random data, 1 MiB pieces, one run each
#   SHOAL_BIN=/path/to/shoal SIZE_MIB=256 RUNS=2 scripts/compare.sh
#
# Environment:
#   SHOAL_BIN  the shoal binary (default: target/release/shoal in this repository)
#   SIZE_MIB   size of the generated payload in MiB (default 1024)
#   PIECE      piece size given to `shoal create` (default 1MiB)
#   RUNS       how many times each client downloads (default 1); every run is listed
#   CLIENTS    which leechers, in order (default "shoal aria2c libtorrent")
#
# Wall clock, user and system CPU seconds come from `/usr/bin/time -f '%e %U %S'` around each
# leecher process, start to exit (process start-up included). Every download goes into a fresh
# directory and is compared with the original before it counts. The seeder checks its data
# fully before the first leecher starts (no lazy hashing on first upload), and the payload is
# read once beforehand so every run finds it in the page cache. Everything runs under one
# temporary directory in /tmp, removed at the end; every process started is killed by PID.
# Figures vary 10 to 25 % between runs on a shared machine: compare within one run.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$repo/target/release/shoal}
SIZE_MIB=${SIZE_MIB:-1024}
PIECE=${PIECE:-1MiB}
RUNS=${RUNS:-1}
CLIENTS=${CLIENTS:-shoal aria2c libtorrent}
LT_PYTHON=/usr/bin/python3
LT_PEER=$repo/tests/common/lt_peer.py
TIMEOUT=${TIMEOUT:-600}

die() { echo "compare.sh: $*" >&2; exit 1; }

[ -x "$SHOAL_BIN" ] || die "no shoal binary at $SHOAL_BIN (build with cargo build --release, or set SHOAL_BIN)"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install -y time)"
command -v aria2c >/dev/null || die "aria2c is missing (apt-get install -y aria2)"
"$LT_PYTHON" -c 'import libtorrent' 2>/dev/null || die "python3-libtorrent is missing for $LT_PYTHON (apt-get install -y python3-libtorrent)"

work=$(mktemp -d /tmp/shoal-compare.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE has a line matching PATTERN (the child printed it), or fails after SECS.
wait_for_line() {
    local file=$1 pattern=$2 secs=$3 pid=$4
    local deadline=$((SECONDS + secs))
    until grep -q "$pattern" "$file" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die "$(basename "$file") exited before printing '$pattern': $(tail -5 "$file")"
        [ "$SECONDS" -lt "$deadline" ] || die "no '$pattern' in $file within ${secs}s"
        sleep 0.05
    done
}

free_port() {
    "$LT_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "payload: $SIZE_MIB MiB of random data, pieces of $PIECE, in $work" >&2
mkdir -p "$work/seed"
payload=$work/seed/payload.bin
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$payload"
"$SHOAL_BIN" create "$payload" -o "$work/payload.torrent" --piece-size "$PIECE" >/dev/null

# The seeder reads `connect HOST:PORT` lines from a fifo kept open for writing by this shell.
mkfifo "$work/seeder.in"
"$LT_PYTHON" "$LT_PEER" seed "$work/payload.torrent" "$work/seed" --verify \
    <"$work/seeder.in" >"$work/seeder.out" 2>"$work/seeder.err" &
seeder=$!
pids+=("$seeder")
exec 3>"$work/seeder.in"
wait_for_line "$work/seeder.out" '^seeding' 300 "$seeder"
port=$(awk '/^listening/ {print $2; exit}' "$work/seeder.out")
cat "$payload" >/dev/null
echo "seeder: python3-libtorrent $("$LT_PYTHON" -c 'import libtorrent; print(libtorrent.__version__)') on 127.0.0.1:$port" >&2

# Runs one leecher into a fresh directory; prints "wall user sys" on success.
leech() {
    local client=$1 dir=$2 timing=$3 log=$4
    case $client in
    shoal)
        timeout "$TIMEOUT" /usr/bin/time -f '%e %U %S' -o "$timing" \
            "$SHOAL_BIN" download "$work/payload.torrent" -o "$dir" \
            --peer "127.0.0.1:$port" --listen 127.0.0.1:0 --no-kad --no-dht --quiet >"$log" 2>&1
        ;;
    aria2c)
        # aria2c takes no peer address: it listens, and the seeder is told to dial it.
        local aport
        aport=$(free_port)
        timeout "$TIMEOUT" /usr/bin/time -f '%e %U %S' -o "$timing" \
            aria2c -d "$dir" --listen-port="$aport" --enable-dht=false --enable-dht6=false \
            --bt-enable-lpd=false --enable-peer-exchange=false --disable-ipv6=true \
            --file-allocation=none --seed-time=0 --summary-interval=0 --no-conf=true \
            --console-log-level=notice "$work/payload.torrent" >"$log" 2>&1 &
        local pid=$!
        pids+=("$pid")
        wait_for_line "$log" 'listening on TCP port' 30 "$pid"
        echo "connect 127.0.0.1:$aport" >&3
        wait "$pid"
        ;;
    libtorrent)
        timeout "$TIMEOUT" /usr/bin/time -f '%e %U %S' -o "$timing" \
            "$LT_PYTHON" "$LT_PEER" leech "$work/payload.torrent" "$dir" \
            --peer "127.0.0.1:$port" --timeout "$TIMEOUT" >"$log" 2>&1
        ;;
    *) die "unknown client $client" ;;
    esac
}

results=()
for run in $(seq 1 "$RUNS"); do
    for client in $CLIENTS; do
        dir=$work/out-$client-$run
        mkdir -p "$dir"
        echo "run $run: $client ..." >&2
        # Start every client from a quiet disk: no writeback of earlier runs' data going on.
        sync
        if ! leech "$client" "$dir" "$work/time-$client-$run" "$work/log-$client-$run"; then
            echo "--- $client failed; its output:" >&2
            tail -20 "$work/log-$client-$run" >&2
            die "$client did not complete"
        fi
        cmp -s "$payload" "$dir/payload.bin" || die "$client: downloaded file differs from the original"
        read -r wall user sys <"$work/time-$client-$run"
        results+=("$client $run $wall $user $sys")
        rm -rf "$dir"
    done
done

printf '\n%-12s %4s %9s %9s %9s %10s\n' client run wall_s user_s sys_s MiB/s
for r in "${results[@]}"; do
    read -r client run wall user sys <<<"$r"
    rate=$(awk -v m="$SIZE_MIB" -v s="$wall" 'BEGIN { printf "%.1f", (s > 0 ? m / s : 0) }')
    printf '%-12s %4s %9s %9s %9s %10s\n' "$client" "$run" "$wall" "$user" "$sys" "$rate"
done
