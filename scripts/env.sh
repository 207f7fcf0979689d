# Sourced by the scripts: one fixed target directory outside the clone, so tests, benchmarks
# and binaries share one release build (RocksDB's C++ takes minutes to build).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/singularity-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
