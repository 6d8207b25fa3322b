#!/usr/bin/env bash
# Installs the application drivers tests/drivers.rs runs through the router,
# if absent: psycopg 3 and asyncpg (PyPI, into a venv), node-postgres and
# postgres.js (npm), the PostgreSQL JDBC driver (Debian) and a JRE and
# Node.js if the machine lacks them. Everything but the Debian packages goes
# under target/drivers. Idempotent; run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/drivers
mkdir -p "$dir"

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
debs=()
[ -f /usr/share/java/postgresql.jar ] || debs+=(libpostgresql-jdbc-java)
command -v java >/dev/null || debs+=(default-jre-headless)
command -v node >/dev/null || debs+=(nodejs)
command -v npm >/dev/null || debs+=(npm)
python3 -c "import venv, ensurepip" 2>/dev/null || debs+=(python3-venv)
if [ ${#debs[@]} -gt 0 ]; then
  echo "Installing ${debs[*]} from Debian..."
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi

# Versions pinned to a major/minor line: the tests exercise these drivers'
# prepared-statement behaviour, which changes between major versions.
if ! "$dir/venv/bin/python" -c "import psycopg, asyncpg" 2>/dev/null; then
  echo "Installing psycopg 3 and asyncpg into $dir/venv..."
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q --disable-pip-version-check "psycopg[binary]>=3.1,<4" "asyncpg>=0.29,<1"
fi
if [ ! -d "$dir/node/node_modules/pg" ] || [ ! -d "$dir/node/node_modules/postgres" ]; then
  echo "Installing pg and postgres (postgres.js) into $dir/node..."
  mkdir -p "$dir/node"
  (cd "$dir/node" && [ -f package.json ] || echo '{"private": true}' > package.json)
  (cd "$dir/node" && npm install --silent --no-audit --no-fund pg@8 postgres@3 >/dev/null)
fi
