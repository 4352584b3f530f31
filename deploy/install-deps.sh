#!/usr/bin/env bash
# Installs the Debian packages Shoal's build, tests and quickstart need. Idempotent and quiet:
# it calls apt only when something is missing, so a second run costs nothing.
#   iproute2        test harness: network namespaces, veth pairs, bridges
#   nftables        overlay: service load balancing (no IPVS on these kernels)
#   busybox-static  quickstart and tests: a static userland packed into local test images
set -euo pipefail

packages=(iproute2 nftables busybox-static)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (apt-get needs it), e.g. sudo $0" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; install Rust first (https://rustup.rs)" >&2
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
