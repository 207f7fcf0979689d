#!/usr/bin/env bash
# Installs what building and testing Singularity needs on a fresh Debian machine, and nothing
# when it is already there: libclang (RocksDB's bindgen), a C++ compiler (RocksDB), pkg-config,
# and iproute2 + iptables (the Jepsen run's network namespaces and partitions).
# Safe to run again. Needs root for apt-get (you are root on the project's machines).
set -euo pipefail

need=()
for pkg in libclang-dev clang g++ make pkg-config iproute2 iptables libfaketime; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "setup: installing ${need[*]} (apt-get)" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install Rust with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi
