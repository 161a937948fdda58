#!/usr/bin/env bash
# Runs ebb's whole test suite: unit tests, node drains against the real binary, and the Redis and
# container scenarios. Usage: scripts/test.sh [nextest filters...]
set -euo pipefail
cd "$(dirname "$0")/.."

# The status page of `ebb serve` is tested in a real headless Chromium (tests/tests/serve_page.rs):
# said up front, since that test fails without one (.ci/run installs Debian's).
if [ -z "${EBB_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    echo "scripts/test.sh: no chromium on PATH: serve_page will fail" \
        "(apt-get install -y --no-install-recommends chromium, as .ci/run does; or set EBB_CHROMIUM)" >&2
fi
cargo build --workspace --bins --quiet
# The images the tests start, built locally (no registry): ebb/redis:local, ebb/node:local.
deploy/images/build.sh
# The deploy files (Dockerfile, compose, Kubernetes, systemd), validated offline.
deploy/check.sh
exec cargo nextest run --workspace --profile ci "$@"
