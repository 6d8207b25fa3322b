#!/usr/bin/env bash
# Starts a throwaway primary and two streaming replicas from this machine's
# PostgreSQL (installed from Debian first if absent), runs pgrouter in front
# of them and prints the psql command to connect. Ctrl-C removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo run --release --locked --quiet -- demo "$@"
