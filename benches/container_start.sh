#!/usr/bin/env bash
# Start-to-exit latency of a container running `true`, shoal's built-in runtime against
# `runc run`, on the same root filesystem, in one run. Prints p50 and p90 of each.
#
#   sudo benches/container_start.sh            # builds target/release/shoal if needed
#   RUNS=200 SHOAL_BIN=path/to/shoal sudo -E benches/container_start.sh
#
# What is timed, per run, wall clock around one command:
#   shoal: `shoal container run --rm IMAGE true` (CLI -> daemon: create, start through a fresh
#          shim, stream output, wait, remove) against a daemon started here;
#   runc:  `runc run --bundle B ID` on the image's unpacked layer, read-only (create, start,
#          wait, delete).
# Needs root, Debian's busybox-static and runc (apt-get install busybox-static runc). It starts
# its own daemon on a temp state dir and removes everything it made (daemon, containers, cgroups,
# temp files) on exit, even when interrupted.
set -euo pipefail

RUNS=${RUNS:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL_BIN:-$ROOT/target/release/shoal}

[ "$(id -u)" = 0 ] || { echo "run as root: it starts containers" >&2; exit 1; }
command -v runc >/dev/null || { echo "runc is missing: apt-get install runc" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }
if [ ! -x "$SHOAL" ]; then
    echo "building $SHOAL (cargo build --release)..." >&2
    (cd "$ROOT" && cargo build --release --locked -p shoal >&2)
fi

WORK=$(mktemp -d /tmp/shoal-bench-XXXXXX)
CGROUP="shoal-bench-$$"
SOCK="$WORK/shoal.sock"
DAEMON_PID=""
cleanup() {
    set +e
    if [ -n "$DAEMON_PID" ]; then
        for id in $("$SHOAL" -H "$SOCK" container ps -aq 2>/dev/null); do
            "$SHOAL" -H "$SOCK" container rm -f "$id" >/dev/null 2>&1
        done
        kill "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    runc --root "$WORK/runc" delete -f bench >/dev/null 2>&1
    for d in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/"$CGROUP" /sys/fs/cgroup/*/"$CGROUP-runc" /sys/fs/cgroup/"$CGROUP-runc"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# A busybox root filesystem, imported as a one-layer image.
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp"
cp /bin/busybox "$WORK/rootfs/bin/"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$WORK/rootfs/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$WORK/rootfs/etc/passwd"

"$SHOAL" daemon --state-dir "$WORK/state" --socket "$SOCK" --cgroup-parent "$CGROUP" \
    --listen-addr 127.0.0.1:0 >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 100); do
    "$SHOAL" -H "$SOCK" version >/dev/null 2>&1 && break
    sleep 0.1
done
"$SHOAL" -H "$SOCK" image import "$WORK/rootfs" --tag bench/busybox:latest >/dev/null

# runc gets the very directory the image's layer was unpacked into, read-only.
LAYER=$("$SHOAL" -H "$SOCK" image inspect bench/busybox | sed -n 's/.*"sha256:\([0-9a-f]\{64\}\)".*/\1/p' | tail -1)
LAYER_DIR="$WORK/state/engine/images/layers/$LAYER"
[ -d "$LAYER_DIR" ] || { echo "cannot find the image's layer directory" >&2; exit 1; }
mkdir -p "$WORK/bundle" "$WORK/runc"
(cd "$WORK/bundle" && runc spec)
python3 - "$WORK/bundle/config.json" "$LAYER_DIR" "/$CGROUP-runc/bench" <<'PY'
import json, sys
path, rootfs, cgroup = sys.argv[1:]
spec = json.load(open(path))
spec["root"] = {"path": rootfs, "readonly": True}
spec["process"]["terminal"] = False
spec["process"]["args"] = ["true"]
spec["linux"]["cgroupsPath"] = cgroup
json.dump(spec, open(path, "w"))
PY

# Times one command RUNS times (after two warm-up runs); prints the milliseconds, one a line.
measure() {
    local i t0 t1
    for i in 1 2; do "$@" >/dev/null; done
    for i in $(seq 1 "$RUNS"); do
        t0=$EPOCHREALTIME
        "$@" >/dev/null
        t1=$EPOCHREALTIME
        echo "$t0 $t1" | awk '{ printf "%.3f\n", ($2 - $1) * 1000 }'
    done
}

# p50 and p90 (nearest rank) of a column of numbers.
percentiles() {
    sort -n | awk '{ v[NR] = $1 } END {
        p50 = v[int((NR * 50 + 99) / 100)]; p90 = v[int((NR * 90 + 99) / 100)];
        printf "p50 %.1f ms  p90 %.1f ms  (n=%d)\n", p50, p90, NR }'
}

SHOAL_TIMES=$(measure "$SHOAL" -H "$SOCK" container run --rm bench/busybox true)
RUNC_TIMES=$(measure runc --root "$WORK/runc" run --bundle "$WORK/bundle" bench)

echo "container start-to-exit of \`true\`, $RUNS runs each, same busybox rootfs:"
echo "  shoal container run --rm:  $(echo "$SHOAL_TIMES" | percentiles)"
echo "  runc run:                  $(echo "$RUNC_TIMES" | percentiles)"
