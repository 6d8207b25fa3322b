#!/usr/bin/env bash
# Installs Debian's PostgreSQL server (initdb, pg_ctl, pg_basebackup, psql,
# pgbench) if it is not on this machine. Idempotent.
set -euo pipefail
have_initdb() {
  [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have_initdb; then exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
echo "Installing PostgreSQL from Debian..."
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
have_initdb || { echo "PostgreSQL installed but initdb not found" >&2; exit 1; }
