#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against a real
# PostgreSQL primary + streaming replicas started in a temp dir (installed
# from Debian first if absent), plus promtool, headless Chromium and the
# application drivers of tests/drivers.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
scripts/ensure-test-tools.sh
scripts/ensure-drivers.sh
# The tools were just installed: tests that use them must not skip.
export PGROUTER_REQUIRE_PROMTOOL=1 PGROUTER_REQUIRE_CHROMIUM=1 PGROUTER_REQUIRE_DRIVERS=1 PGROUTER_REQUIRE_HAPROXY=1
cargo test --locked "$@"
