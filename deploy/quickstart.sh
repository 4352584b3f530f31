#!/usr/bin/env bash
# Shoal's main job on one machine, offline: build, install, start a node, and show it working.
# Run as root from the repository: deploy/quickstart.sh
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
