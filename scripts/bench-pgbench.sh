#!/usr/bin/env bash
# Compares pgbench -S directly against PostgreSQL, through PgBouncer (Debian
# package, transaction mode) and through pgrouter, in one run on one machine.
# Prints TPS and each proxy's CPU microseconds per transaction, measured from
# /proc/PID/stat (utime + stime) around each pgbench run.
#
#   scripts/bench-pgbench.sh            # 10 s per run
#   DURATION=30 POOL_SIZE=20 scripts/bench-pgbench.sh
#
# Needs: PostgreSQL server binaries and pgbouncer (installed from Debian if
# absent). Writes a Markdown table to bench-results/pgbench.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
POOL_SIZE=${POOL_SIZE:-20}
CLIENTS=${CLIENTS:-"1 10 100"}
MODES=${MODES:-"simple extended"} # and/or prepared
SCALE=${SCALE:-10}
# PgBouncer is single-threaded; by default pgrouter gets one session thread
# too, so the comparison is per thread. ROUTER_WORKERS=0 means one per core.
ROUTER_WORKERS=${ROUTER_WORKERS:-1}
# ROUTE_SELF=1: routing on, with the primary itself listed as the only
# replica, so reads are classified and routed but land on the same server:
# compare with a run without it to see what routing costs the router.
ROUTE_SELF=${ROUTE_SELF:-0}

scripts/ensure-postgres.sh
if ! command -v pgbouncer >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
# PGROUTER_BIN: measure a given binary (A/B against another commit's build).
if [ -n "${PGROUTER_BIN:-}" ]; then
  BIN=$PGROUTER_BIN
else
  cargo build --release --quiet
  BIN=$PWD/target/release/pgrouter
fi
PGBIN=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | tail -1)
WORK=$(mktemp -d /tmp/pgrouter-bench.XXXXXX)
chmod 755 "$WORK"
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
  [ -n "${ROUTER_PID:-}" ] && kill "$ROUTER_PID" 2>/dev/null || true
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  [ -n "${DEMO_PID:-}" ] && kill -INT "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The primary: pgrouter's own demo cluster, with no replicas.
start_primary "$SCALE"

ROUTER_PORT=$(free_port); HTTP_PORT=$(free_port); BOUNCER_PORT=$(free_port)
write_router_toml "$ROUTER_PORT" "$HTTP_PORT" "$ROUTER_WORKERS" "$POOL_SIZE"
if [ "$ROUTE_SELF" = 1 ]; then
  printf '[[replicas]]\nname = "self"\nhost = "127.0.0.1"\nport = %s\n' "$PG_PORT" >> "$WORK/router.toml"
fi
"$BIN" --config "$WORK/router.toml" > "$WORK/router.log" 2>&1 &
ROUTER_PID=$!

# PgBouncer before 1.21 (Debian 12 ships 1.18) fails `pgbench -M
# prepared` in transaction mode, so it runs -M extended in that row: the
# closest thing it can do (BOUNCER_PREPARED).
write_pgbouncer_ini "$BOUNCER_PORT" scram-sha-256 "$POOL_SIZE" 1000
$RUNAS pgbouncer "$WORK/pgbouncer.ini" > /dev/null 2>&1 &
sleep 1
BOUNCER_PID=$(pgrep -n -f "pgbouncer $WORK/pgbouncer.ini")
sleep 1

run() { # name port pid mode clients
  local name=$1 port=$2 pid=$3 mode=$4 clients=$5 before after out tps txns cpu
  [ "$pid" != "-" ] && before=$(cpu_ticks "$pid")
  out=$("$PGBIN/pgbench" -S -M "$mode" -c "$clients" -j 2 -T "$DURATION" -h 127.0.0.1 -p "$port" -U app app 2>&1)
  [ "$pid" != "-" ] && after=$(cpu_ticks "$pid")
  tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
  txns=$(echo "$out" | awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1]}')
  if echo "$out" | grep -q "failed transactions: [1-9]"; then echo "$out" >&2; fi
  if [ "$pid" != "-" ] && [ -n "$txns" ] && [ "$txns" -gt 0 ]; then
    cpu=$(awk -v d=$((after - before)) -v t="$txns" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", d / hz * 1e6 / t}')
  else
    cpu="-"
  fi
  echo "$tps $cpu"
}

mkdir -p bench-results
OUT=bench-results/pgbench.md
{
  echo "pgbench -S, scale $SCALE, ${DURATION}s per run, -j 2, pool_size $POOL_SIZE, pgrouter worker_threads $ROUTER_WORKERS, routing to self $ROUTE_SELF, $(nproc) cores, $(date -u +%Y-%m-%d)"
  echo
  echo "| mode | clients | direct TPS | PgBouncer TPS | pgrouter TPS | PgBouncer CPU µs/txn | pgrouter CPU µs/txn | TPS ratio | CPU ratio |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
for mode in $MODES; do
  bmode=$mode
  [ "$mode" = prepared ] && bmode=$BOUNCER_PREPARED
  for c in $CLIENTS; do
    read -r b_tps b_cpu < <(run pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID" "$bmode" "$c")
    read -r r_tps r_cpu < <(run pgrouter "$ROUTER_PORT" "$ROUTER_PID" "$mode" "$c")
    read -r d_tps _ < <(run direct "$PG_PORT" - "$mode" "$c")
    tps_ratio=$(awk -v a="$r_tps" -v b="$b_tps" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
    cpu_ratio=$(awk -v a="$r_cpu" -v b="$b_cpu" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
    label=$mode
    [ "$bmode" != "$mode" ] && label="$mode (PgBouncer $BOUNCER_VERSION: $bmode)"
    echo "| $label | $c | $d_tps | $b_tps | $r_tps | $b_cpu | $r_cpu | $tps_ratio | $cpu_ratio |" | tee -a "$OUT"
  done
done
echo
echo "TPS ratio = pgrouter / PgBouncer (higher is better); CPU ratio = pgrouter / PgBouncer (lower is better)."
echo "Table written to $OUT"
