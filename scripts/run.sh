#!/usr/bin/env bash
# Builds the `singularity` binary (release) if needed and runs it with the given arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh
cargo build --release --locked --bin singularity >&2
exec "$CARGO_TARGET_DIR/release/singularity" "$@"
