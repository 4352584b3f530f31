#!/usr/bin/env bash
# Time from `service create --replicas N` to N tasks running on a one-node cluster, Shoal against
# Docker Swarm mode on the same machine in the same run, plus memory of each with N tasks.
#
#   sudo benches/service_start.sh              # N = 10 and 100; builds target/release/shoal
#   NS="10 100" SKIP_DOCKER=1 sudo -E benches/service_start.sh
#
# What is timed, per N: wall clock from just before `service create --detach --replicas N` until
# a poll (every 50 ms, the same loop for both) sees N tasks running: `shoal service ls` REPLICAS
# N/N, `docker service ls` REPLICAS N/N. Both run `sleep 1d` from a busybox image imported
# locally (no registry): Shoal imports the root filesystem with `shoal image import --tag`,
# Docker with `docker import`, and dockerd runs with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 so
# that it does not wait on registry look-ups.
#
# Memory (with the largest N running): Shoal's daemon RSS when idle (before the first service)
# and PSS (/proc/PID/smaps_rollup) of the daemon plus every per-container shim; Docker's PSS of
# dockerd, containerd and every containerd-shim. Container processes themselves are not counted
# for either.
#
# Each engine runs in its own network namespace (with a veth pair, one end carrying 10.99.0.1), so
# Docker's bridges and iptables rules land there and vanish with it; everything the script made
# (daemons, containers, namespaces, temp dirs) is removed on exit, even when interrupted. Needs
# root, busybox-static, and for Docker Debian's docker.io (installed here if missing).
set -euo pipefail

NS_LIST=${NS:-"10 100"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL_BIN:-$ROOT/target/release/shoal}

[ "$(id -u)" = 0 ] || { echo "run as root: it starts containers" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }
if [ -z "${SKIP_DOCKER:-}" ] && [ ! -x /usr/sbin/dockerd ]; then
    echo "installing Debian's docker.io for the comparison..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    # The package starts its own dockerd; this script runs its own in a namespace instead.
    systemctl disable --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true
fi
if [ ! -x "$SHOAL" ]; then
    echo "building $SHOAL (cargo build --release)..." >&2
    (cd "$ROOT" && cargo build --release --locked -p shoal >&2)
fi

WORK=$(mktemp -d /tmp/shoal-svc-bench-XXXXXX)
NETNS_SHOAL="shoal-bench-s$$"
NETNS_DOCKER="shoal-bench-d$$"
SOCK="$WORK/shoal.sock"
DSOCK="$WORK/docker.sock"
CGROUP="shoal-svc-bench-$$"
SHOAL_PID=""
DOCKER_PID=""

# The daemons are started with nsenter, not `ip netns exec`: the latter also remounts /sys in
# a new mount namespace, which hides the cgroup hierarchies from them.
shoal() { "$SHOAL" -H "$SOCK" "$@"; }
docker_() { DOCKER_HOST="unix://$DSOCK" /usr/bin/docker "$@"; }

cleanup() {
    set +e
    if [ -n "$SHOAL_PID" ]; then
        for s in $(shoal service ls -q 2>/dev/null); do shoal service rm "$s" >/dev/null 2>&1; done
        for _ in $(seq 100); do [ -z "$(shoal container ps -q 2>/dev/null)" ] && break; sleep 0.1; done
        for id in $(shoal container ps -aq 2>/dev/null); do shoal container rm -f "$id" >/dev/null 2>&1; done
        kill "$SHOAL_PID" 2>/dev/null; wait "$SHOAL_PID" 2>/dev/null
    fi
    if [ -n "$DOCKER_PID" ]; then
        docker_ swarm leave --force >/dev/null 2>&1
        kill "$DOCKER_PID" 2>/dev/null; wait "$DOCKER_PID" 2>/dev/null
    fi
    # Whatever is left in the namespaces (shims, containers) goes with them.
    for ns in "$NETNS_SHOAL" "$NETNS_DOCKER"; do
        pids=$(ip netns pids "$ns" 2>/dev/null)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    grep " $WORK" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    for d in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/"$CGROUP"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

netns() {
    ip netns add "$1"
    ip -n "$1" link set lo up
    # A veth pair inside the namespace (the dummy driver is not on every kernel): an address
    # other than loopback to advertise, as swarm init insists.
    ip -n "$1" link add bench0 type veth peer name bench1
    ip -n "$1" addr add 10.99.0.1/24 dev bench0
    ip -n "$1" link set bench0 up
    ip -n "$1" link set bench1 up
}

# kB of PSS (or RSS) summed over PIDs.
pss_kb() { local t=0; for p in "$@"; do v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); t=$((t + ${v:-0})); done; echo "$t"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f s", b - a }'; }

# Waits until `$@` (a command printing REPLICAS as "running/desired") shows N/N; 10 min at most.
wait_replicas() {
    local n=$1; shift
    for _ in $(seq 12000); do
        [ "$("$@" 2>/dev/null)" = "$n/$n" ] && return 0
        sleep 0.05
    done
    echo "timed out waiting for $n/$n" >&2; return 1
}

# A busybox root filesystem.
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp"
cp /bin/busybox "$WORK/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$WORK/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$WORK/rootfs/etc/passwd"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .

declare -A SHOAL_T DOCKER_T

# --- Shoal ---
netns "$NETNS_SHOAL"
# Started with nsenter directly (not through a function) so that $! is the daemon itself.
nsenter --net="/run/netns/$NETNS_SHOAL" "$SHOAL" daemon --state-dir "$WORK/shoal" --socket "$SOCK" --cgroup-parent "$CGROUP" \
    >"$WORK/shoal.log" 2>&1 &
SHOAL_PID=$!
for _ in $(seq 100); do shoal version >/dev/null 2>&1 && break; sleep 0.1; done
shoal image import "$WORK/rootfs" --tag bench/busybox:latest >/dev/null
shoal cluster init --advertise-addr 10.99.0.1 >/dev/null
sleep 2
SHOAL_IDLE=$(rss_kb "$SHOAL_PID")
replicas_shoal() { shoal service ls | awk 'NR == 2 { print $4 }'; }
for n in $NS_LIST; do
    t0=$(now)
    shoal service create --detach --name "b$n" --replicas "$n" bench/busybox:latest sleep 1d >/dev/null
    wait_replicas "$n" replicas_shoal
    SHOAL_T[$n]=$(elapsed "$t0" "$(now)")
    last=$n
    if [ "$n" != "${NS_LIST##* }" ]; then
        shoal service rm "b$n" >/dev/null
        for _ in $(seq 600); do [ -z "$(shoal container ps -q)" ] && break; sleep 0.1; done
    fi
done
SHIMS=$(pgrep -f "shim $WORK/shoal/" || true)
SHOAL_PSS=$(pss_kb "$SHOAL_PID" $SHIMS)
SHOAL_SHIMS=$(echo $SHIMS | wc -w)

# --- Docker Swarm mode ---
if [ -z "${SKIP_DOCKER:-}" ]; then
    netns "$NETNS_DOCKER"
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nsenter --net="/run/netns/$NETNS_DOCKER" /usr/sbin/dockerd -H "unix://$DSOCK" \
        --data-root "$WORK/docker" --exec-root "$WORK/docker-exec" --pidfile "$WORK/docker.pid" \
        --containerd-namespace "bench$$" >"$WORK/docker.log" 2>&1 &
    DOCKER_PID=$!
    for _ in $(seq 300); do docker_ version >/dev/null 2>&1 && break; sleep 0.1; done
    docker_ import "$WORK/rootfs.tar" bench/busybox:latest >/dev/null
    docker_ swarm init --advertise-addr 10.99.0.1 >/dev/null
    for n in $NS_LIST; do
        t0=$(now)
        docker_ service create --detach --name "b$n" --replicas "$n" bench/busybox:latest sleep 1d >/dev/null
        wait_replicas "$n" docker_ service ls --filter "name=b$n" --format '{{.Replicas}}'
        DOCKER_T[$n]=$(elapsed "$t0" "$(now)")
        if [ "$n" != "${NS_LIST##* }" ]; then
            docker_ service rm "b$n" >/dev/null
            for _ in $(seq 600); do [ -z "$(docker_ ps -q)" ] && break; sleep 0.1; done
        fi
    done
    CONTAINERD=$(pgrep -f "containerd --config $WORK" || pgrep -x containerd | head -1 || true)
    DSHIMS=$(pgrep -f "containerd-shim.*bench$$" || true)
    DOCKER_PSS=$(pss_kb "$DOCKER_PID" $CONTAINERD $DSHIMS)
    DOCKER_SHIMS=$(echo $DSHIMS | wc -w)
fi

echo
printf '%-34s %14s %14s\n' "" "shoal" "docker swarm"
for n in $NS_LIST; do
    printf '%-34s %14s %14s\n' "create --replicas $n -> $n running" "${SHOAL_T[$n]}" "${DOCKER_T[$n]:-skipped}"
done
printf '%-34s %14s %14s\n' "daemon RSS, idle" "$(mb "$SHOAL_IDLE")" "-"
printf '%-34s %14s %14s\n' "PSS with $last tasks (daemons+shims)" "$(mb "$SHOAL_PSS")" "$([ -n "${DOCKER_PSS:-}" ] && mb "$DOCKER_PSS" || echo skipped)"
printf '%-34s %14s %14s\n' "shims counted" "$SHOAL_SHIMS" "${DOCKER_SHIMS:-skipped}"
