#!/usr/bin/env bash
# Installs what `raftio bench` compares raftio with, and its plotting library:
#   PySyncObj and matplotlib from PyPI (the `bench` extra), etcd from Debian.
# Idempotent: whatever is already installed is left alone. Needs root (or sudo)
# for apt-get; without apt-get (not Debian) etcd is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}

if "$PYTHON" -c 'import pysyncobj, matplotlib' 2>/dev/null; then
    echo "pysyncobj and matplotlib: already installed"
else
    "$PYTHON" -m pip install --quiet 'pysyncobj>=0.3.12' 'matplotlib>=3.7'
fi

if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
    echo "etcd: already installed ($(etcd --version | head -n 1))"
elif ! command -v apt-get >/dev/null; then
    echo "etcd: apt-get not found; install etcd 3.4+ (etcd and etcdctl on PATH) by hand" >&2
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    # No init system runs in a container: keep the package's service from starting.
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
    # Debian starts (or tries to start) a system etcd on the default ports; the
    # benchmark runs its own members on free ports, so stop it if it runs.
    if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
        $SUDO systemctl stop etcd || true
    fi
    echo "etcd: installed ($(etcd --version | head -n 1))"
fi
