#!/usr/bin/env bash
# Runs ebb's whole test suite: unit tests, node drains against the real binary, and (once the
# images exist) the Redis and container scenarios. Usage: scripts/test.sh [nextest filters...]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --quiet
exec cargo nextest run --workspace --profile ci "$@"
