#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against a real
# PostgreSQL primary + streaming replicas started in a temp dir (installed
# from Debian first if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo test --locked "$@"
