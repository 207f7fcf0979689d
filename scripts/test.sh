#!/usr/bin/env bash
# Runs every test of the workspace, the way CI does: formatting, clippy with warnings as errors,
# then all tests (unit, property, integration, end-to-end) in the release profile.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)" >&2
cargo clippy --release --workspace --all-targets --locked -- -D warnings
echo "== tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --locked --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  cargo test --release --workspace --locked --no-fail-fast "$@"
fi

# Jepsen short run: real replicas in network namespaces under partitions, kills and leader transfers (root only).
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v iptables >/dev/null; then
  echo "== jepsen short run (3 replicas, 30 s, partitions, kills and leader transfers, register and set)" >&2
  cargo build --release --locked --workspace --bin singularity --bin singularity-jepsen
  "$CARGO_TARGET_DIR/release/singularity-jepsen" test --replicas 3 --time-limit-s 30 \
    --nemesis partition,kill,transfer --workload register,set \
    --results-dir "$CARGO_TARGET_DIR/jepsen-results/ci-$(date +%s)"
else
  echo "== jepsen short run skipped: needs root, ip and iptables" >&2
fi
