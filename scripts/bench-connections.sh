#!/usr/bin/env bash
# Connection scale: N idle client connections (default 10,000), logged in
# and held, through PgBouncer (Debian, transaction mode) and through
# pgrouter, both with pool_size 20, in one run on one machine. Reports each
# proxy's resident memory (VmRSS) per held client connection, and whether
# active clients keep their latency: pgbench -S with 10 clients, without
# and with the idle crowd.
#
#   scripts/bench-connections.sh          # 10,000 idle clients
#   IDLE=2000 DURATION=5 scripts/bench-connections.sh
#
# Needs PostgreSQL, pgbouncer and asyncpg (scripts/ensure-drivers.sh); writes
# bench-results/connections.md.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-10000}
DURATION=${DURATION:-10}
POOL_SIZE=${POOL_SIZE:-20}
scripts/ensure-postgres.sh
scripts/ensure-drivers.sh >/dev/null
if ! command -v pgbouncer >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
if [ -n "${PGROUTER_BIN:-}" ]; then BIN=$PGROUTER_BIN; else cargo build --release --quiet; BIN=$PWD/target/release/pgrouter; fi
PY=$PWD/target/drivers/venv/bin/python
PGBIN=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | tail -1)
WORK=$(mktemp -d /tmp/pgrouter-conns.XXXXXX)
chmod 755 "$WORK"
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cleanup() {
  [ -n "${HOLDER:-}" ] && kill "$HOLDER" 2>/dev/null || true
  [ -n "${ROUTER_PID:-}" ] && kill "$ROUTER_PID" 2>/dev/null || true
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  [ -n "${DEMO_PID:-}" ] && kill -INT "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

start_primary 1

ROUTER_PORT=$(free_port); HTTP_PORT=$(free_port); BOUNCER_PORT=$(free_port)
SERVER_EXTRA="max_client_conn = $((IDLE + 100))" POOL_EXTRA="queue_limit = $((IDLE + 100))" \
  write_router_toml "$ROUTER_PORT" "$HTTP_PORT" 1 "$POOL_SIZE"
"$BIN" --config "$WORK/router.toml" > "$WORK/router.log" 2>&1 &
ROUTER_PID=$!
write_pgbouncer_ini "$BOUNCER_PORT" scram-sha-256 "$POOL_SIZE" $((IDLE + 100))
$RUNAS bash -c "ulimit -n $(ulimit -Hn); exec pgbouncer $WORK/pgbouncer.ini" > /dev/null 2>&1 &
sleep 1
BOUNCER_PID=$(pgrep -n -f "pgbouncer $WORK/pgbouncer.ini")
sleep 1

# Opens N logged-in connections (200 logins at a time), prints "held N",
# and keeps them until killed.
cat > "$WORK/hold.py" <<'PY'
import asyncio, sys, asyncpg
async def main(port, n):
    sem, conns = asyncio.Semaphore(200), []
    async def one():
        async with sem:
            conns.append(await asyncpg.connect(host="127.0.0.1", port=port, user="app",
                                               password="app", database="app", statement_cache_size=0))
    await asyncio.gather(*[one() for _ in range(n)])
    # Each one answers once: a real login, not a half-open socket.
    for c in conns[:: max(1, n // 100)]:
        await c.fetchval("SELECT 1")
    print("held", len(conns), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
PY

latency() { # port -> "tps avg_latency_ms"
  "$PGBIN/pgbench" -S -c 10 -j 2 -T "$DURATION" -h 127.0.0.1 -p "$1" -U app app 2>&1 |
    awk '/^tps/ {tps=$3} /latency average/ {lat=$4} END {printf "%.0f %.3f", tps, lat}'
}

measure() { # name port pid
  local name=$1 port=$2 pid=$3 before after quiet busy started
  quiet=$(latency "$port")
  before=$(rss_kb "$pid")
  started=$(date +%s.%N)
  "$PY" "$WORK/hold.py" "$port" "$IDLE" > "$WORK/hold.out" 2>&1 &
  HOLDER=$!
  for _ in $(seq 1 600); do grep -q "^held" "$WORK/hold.out" && break; kill -0 "$HOLDER" 2>/dev/null || break; sleep 0.5; done
  grep -q "^held $IDLE" "$WORK/hold.out" || { echo "$name: could not hold $IDLE connections:" >&2; tail -5 "$WORK/hold.out" >&2; tail -5 "$WORK/router.log" >&2; exit 1; }
  local took; took=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
  after=$(rss_kb "$pid")
  busy=$(latency "$port")
  kill "$HOLDER"; wait "$HOLDER" 2>/dev/null || true; HOLDER=
  sleep 2
  awk -v n="$name" -v b="$before" -v a="$after" -v i="$IDLE" -v q="$quiet" -v y="$busy" -v t="$took" 'BEGIN {
    split(q, Q, " "); split(y, Y, " ");
    printf "| %s | %d | %d | %.2f | %s | %s / %s | %s / %s |\n", n, b, a, (a - b) / i, t, Q[1], Q[2], Y[1], Y[2] }'
}

mkdir -p bench-results
OUT=bench-results/connections.md
{
  echo "$IDLE idle logged-in clients held, pool_size $POOL_SIZE, pgbench -S -c 10 for ${DURATION}s without/with them, pgrouter worker_threads 1, $(nproc) cores, $(date -u +%Y-%m-%d)"
  echo
  echo "| proxy | RSS before (kB) | RSS with $IDLE clients (kB) | kB per client | login time (s) | TPS / latency ms, idle crowd absent | TPS / latency ms, with it |"
  echo "|---|---|---|---|---|---|---|"
  measure "PgBouncer $(pgbouncer --version | awk 'NR == 1 {print $NF}')" "$BOUNCER_PORT" "$BOUNCER_PID"
  measure pgrouter "$ROUTER_PORT" "$ROUTER_PID"
} | tee "$OUT"
