#!/usr/bin/env bash
# User-space instructions per transaction, pgrouter vs PgBouncer, counted by
# valgrind (callgrind) while pgbench -S runs through each. Unlike CPU time on
# this shared, noisy machine (±10-20% between identical runs), the count
# repeats to within about 1%, so it shows what a code change did to the
# router's own work. It does not see the kernel (about three quarters of a
# proxy's CPU here, and the same for both: docs/benchmarks.md).
#
#   scripts/bench-instructions.sh                 # simple and extended, 10 clients
#   MODES=prepared TXNS=2000 scripts/bench-instructions.sh
#   PGROUTER_BIN=/tmp/old/pgrouter scripts/bench-instructions.sh   # another build
#
# Both proxies log clients in with md5 here (SCRAM's 4096 PBKDF2 rounds per
# login would swamp the count: pgbench logs in again for the measured run).
# Counting starts after a warm-up run (pools full, caches warm). Needs
# PostgreSQL, pgbouncer and valgrind (installed from Debian if absent);
# writes bench-results/instructions.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-10}
TXNS=${TXNS:-1000} # per client
MODES=${MODES:-"simple extended"}
POOL_SIZE=${POOL_SIZE:-20}

scripts/ensure-postgres.sh
missing=""
command -v pgbouncer >/dev/null || missing="$missing pgbouncer"
command -v valgrind >/dev/null || missing="$missing valgrind"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  # shellcheck disable=SC2086
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
if [ -n "${PGROUTER_BIN:-}" ]; then
  BIN=$PGROUTER_BIN
else
  cargo build --release --quiet
  BIN=$PWD/target/release/pgrouter
fi
PGBIN=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | tail -1)
WORK=$(mktemp -d /tmp/pgrouter-instr.XXXXXX)
chmod 777 "$WORK"
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

cleanup() {
  [ -n "${VG_PID:-}" ] && kill "$VG_PID" 2>/dev/null || true
  [ -n "${DEMO_PID:-}" ] && kill -INT "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_primary 10

ROUTER_PORT=$(free_port); HTTP_PORT=$(free_port); BOUNCER_PORT=$(free_port)
USER_AUTH=md5 write_router_toml "$ROUTER_PORT" "$HTTP_PORT" 1 "$POOL_SIZE"
write_pgbouncer_ini "$BOUNCER_PORT" md5 "$POOL_SIZE" 1000

# measure name port mode: starts the proxy under callgrind, warms up, counts
# one pgbench run, prints "instructions transactions".
measure() {
  local name=$1 port=$2 mode=$3 out txns ir
  rm -f "$WORK"/cg.*
  if [ "$name" = pgrouter ]; then
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" "$BIN" --config "$WORK/router.toml" > "$WORK/vg.log" 2>&1 &
    VG_PID=$!
    CTL=""
  else
    $RUNAS valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" pgbouncer "$WORK/pgbouncer.ini" > "$WORK/vg.log" 2>&1 &
    sleep 2
    VG_PID=$(pgrep -n -f "valgrind.*$WORK/pgbouncer.ini")
    CTL=$RUNAS
  fi
  for _ in $(seq 1 120); do
    "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U app -c "select 1" app >/dev/null 2>&1 && break
    sleep 0.5
  done
  "$PGBIN/pgbench" -S -M "$mode" -c "$CLIENTS" -j 2 -t 200 -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1
  $CTL callgrind_control -z "$VG_PID" >/dev/null 2>&1
  out=$("$PGBIN/pgbench" -S -M "$mode" -c "$CLIENTS" -j 2 -t "$TXNS" -h 127.0.0.1 -p "$port" -U app app 2>&1)
  $CTL callgrind_control -d "$VG_PID" >/dev/null 2>&1
  sleep 1
  kill "$VG_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$VG_PID" 2>/dev/null || break; sleep 0.2; done
  VG_PID=""
  txns=$(echo "$out" | awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1]}')
  ir=$(cat "$WORK"/cg.*.1 2>/dev/null | awk '/^summary:/ {s += $2} END {print s + 0}')
  echo "$ir ${txns:-0}"
}

mkdir -p bench-results
OUT=bench-results/instructions.md
{
  echo "User-space instructions per transaction (callgrind), pgbench -S, $CLIENTS clients x $TXNS transactions, pool_size $POOL_SIZE, $(date -u +%Y-%m-%d)"
  echo
  echo "| mode | PgBouncer $BOUNCER_VERSION instr/txn | pgrouter instr/txn | ratio |"
  echo "|---|---|---|---|"
} > "$OUT"
for mode in $MODES; do
  bmode=$mode
  [ "$mode" = prepared ] && bmode=$BOUNCER_PREPARED
  read -r b_ir b_tx < <(measure pgbouncer "$BOUNCER_PORT" "$bmode")
  read -r r_ir r_tx < <(measure pgrouter "$ROUTER_PORT" "$mode")
  b=$(awk -v i="$b_ir" -v t="$b_tx" 'BEGIN {if (t > 0) printf "%.0f", i / t; else print "-"}')
  r=$(awk -v i="$r_ir" -v t="$r_tx" 'BEGIN {if (t > 0) printf "%.0f", i / t; else print "-"}')
  ratio=$(awk -v a="$r" -v b="$b" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
  label=$mode
  [ "$bmode" != "$mode" ] && label="$mode (PgBouncer: $bmode)"
  echo "| $label | $b | $r | $ratio |" | tee -a "$OUT"
done
echo "Table written to $OUT"
