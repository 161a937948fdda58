#!/usr/bin/env bash
# Runs one of ebb's benchmarks (tests/benches/<name>.rs) against release builds.
# Usage: scripts/bench.sh <name> [-- bench flags]     e.g. scripts/bench.sh idle_memory -- --connections 19000
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/bench.sh <name> [-- flags]}
shift
[ "${1:-}" = "--" ] && shift
cargo build --release --workspace --bins --quiet
exec cargo bench --quiet -p ebb-tests --bench "$name" -- "$@"
