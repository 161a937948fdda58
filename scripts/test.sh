#!/usr/bin/env bash
# Runs ebb's whole test suite: unit tests, node drains against the real binary, and the Redis and
# container scenarios. Usage: scripts/test.sh [nextest filters...]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --quiet
# The images the tests start, built locally (no registry): ebb/redis:local, ebb/node:local.
deploy/images/build.sh
exec cargo nextest run --workspace --profile ci "$@"
