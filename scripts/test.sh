#!/usr/bin/env bash
# Runs ebb's whole test suite: unit tests, node drains against the real binary, and the Redis and
# container scenarios. Usage: scripts/test.sh [nextest filters...]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --quiet
# The images the tests start, built locally (no registry): ebb/redis:local, ebb/node:local.
deploy/images/build.sh
# The deploy files (Dockerfile, compose, Kubernetes, systemd), validated offline.
deploy/check.sh
exec cargo nextest run --workspace --profile ci "$@"
