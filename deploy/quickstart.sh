#!/usr/bin/env bash
# Shoal's main job on one machine, offline: build, install, start a node, make it a one-node
# cluster, import a busybox image built from Debian's busybox-static, and run a replicated
# service from it. Run as root from the repository: deploy/quickstart.sh
#
# Running it again rebuilds, restarts the daemon with the new binary, keeps the cluster and
# recreates the `hello` service. `shoal service rm hello` removes it; `shoal cluster leave
# --force` takes the node out of its cluster.
#
# The daemon runs under systemd when systemd is the init system, otherwise in the background
# with its log in /var/log/shoal/daemon.log. Stop it with `systemctl stop shoal` or
# `pkill -TERM -x shoal`.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh

echo "==> building shoal (release)"
cargo build --release --locked --quiet
install -m 0755 target/release/shoal /usr/local/bin/shoal

if shoal version >/dev/null 2>&1; then
    echo "==> a shoal daemon is already running; restarting it with the new binary"
    if [ -d /run/systemd/system ] && systemctl is-active --quiet shoal; then
        systemctl stop shoal
    else
        pkill -TERM -x shoal || true
        for _ in $(seq 50); do shoal version >/dev/null 2>&1 || break; sleep 0.1; done
    fi
fi

echo "==> starting the daemon"
if [ -d /run/systemd/system ]; then
    install -m 0644 deploy/shoal.service /etc/systemd/system/shoal.service
    systemctl daemon-reload
    systemctl enable --now shoal
else
    mkdir -p /var/log/shoal
    nohup shoal daemon >>/var/log/shoal/daemon.log 2>&1 </dev/null &
fi
for _ in $(seq 100); do shoal version >/dev/null 2>&1 && break; sleep 0.1; done

echo "==> shoal info"
shoal info

# A one-layer image from Debian's static busybox: no registry needed.
if ! shoal image inspect busybox:latest >/dev/null 2>&1; then
    echo "==> importing busybox:latest (from Debian's busybox-static)"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    shoal image import "$rootfs" --tag busybox:latest
fi

# A one-node cluster (kept across runs).
if ! shoal node ls >/dev/null 2>&1; then
    echo "==> shoal cluster init"
    shoal cluster init
fi

echo "==> shoal service create --name hello --replicas 3 busybox:latest ..."
shoal service rm hello >/dev/null 2>&1 || true
for _ in $(seq 100); do shoal service ps hello >/dev/null 2>&1 || break; sleep 0.1; done
shoal service create --name hello --replicas 3 busybox:latest \
    sh -c 'while true; do echo "hello from $(hostname)"; sleep 5; done'

echo "==> shoal service ls"
shoal service ls
echo "==> shoal service ps hello"
shoal service ps hello
echo "==> shoal service logs --tail 3 hello"
shoal service logs --tail 3 hello
