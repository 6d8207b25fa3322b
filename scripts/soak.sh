#!/usr/bin/env bash
# Soak: a mixed workload through pgrouter for DURATION seconds (default
# 600) against a throwaway primary and two streaming replicas, sampling the
# router's RSS, open file descriptors, client and server connections every
# second, while replicas are paused and resumed every 30 s.
#   tenant a (user app):  pgbench -S -M prepared -c 8 (reads, prepared statements)
#                         pgbench -N -M extended -c 4 (writes)
#   tenant b (user app2): pgbench tpcb-like -M simple -c 4 (mixed, transactions)
# Reports (bench-results/soak.md): RSS after warm-up (60 s) vs at the end and
# at its peak, fds and server connections (min/max after warm-up, and
# after the load stops), transactions and failures per workload.
#   scripts/soak.sh              # 10 minutes
#   DURATION=120 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
WARMUP=${WARMUP:-60}
scripts/ensure-postgres.sh
if [ -n "${PGROUTER_BIN:-}" ]; then BIN=$PGROUTER_BIN; else cargo build --release --quiet; BIN=$PWD/target/release/pgrouter; fi
PGBIN=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | tail -1)
WORK=$(mktemp -d /tmp/pgrouter-soak.XXXXXX)
chmod 755 "$WORK"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  for p in ${B1:-} ${B2:-} ${B3:-} ${PAUSER:-}; do kill "$p" 2>/dev/null || true; done
  [ -n "${ROUTER_PID:-}" ] && kill "$ROUTER_PID" 2>/dev/null || true
  [ -n "${DEMO_PID:-}" ] && kill -INT "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" demo --replicas 2 > "$WORK/demo.out" 2>&1 &
DEMO_PID=$!
for _ in $(seq 1 240); do grep -q "^r2" "$WORK/demo.out" 2>/dev/null && break; sleep 0.5; done
port_of() { awk -v n="$1" '$1 == n {split($2, a, ":"); print a[2]}' "$WORK/demo.out"; }
PG_PORT=$(port_of primary); R1=$(port_of r1); R2=$(port_of r2)
[ -n "$PG_PORT" ] && [ -n "$R2" ] || { cat "$WORK/demo.out"; exit 1; }
su_sql() { "$PGBIN/psql" -X -q -A -t -h 127.0.0.1 -U postgres -p "$1" -d postgres -c "$2"; }
su_sql "$PG_PORT" "CREATE ROLE app2 LOGIN PASSWORD 'app2'" >/dev/null
su_sql "$PG_PORT" "CREATE DATABASE app2 OWNER app2" >/dev/null
PGPASSWORD=app "$PGBIN/pgbench" -i -q -s 5 -h 127.0.0.1 -p "$PG_PORT" -U app app >/dev/null 2>&1
PGPASSWORD=app2 "$PGBIN/pgbench" -i -q -s 2 -h 127.0.0.1 -p "$PG_PORT" -U app2 app2 >/dev/null 2>&1

ROUTER_PORT=$(free_port); HTTP_PORT=$(free_port)
cat > "$WORK/router.toml" <<TOML
[server]
listen = "127.0.0.1:$ROUTER_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
log_level = "warn"
[[users]]
name = "app"
password = "app"
[[users]]
name = "app2"
password = "app2"
[primary]
host = "127.0.0.1"
port = $PG_PORT
[[replicas]]
name = "r1"
host = "127.0.0.1"
port = $R1
[[replicas]]
name = "r2"
host = "127.0.0.1"
port = $R2
[pool]
pool_size = 10
[lag]
max_lag = "2s"
monitor_user = "postgres"
[tenants.a]
users = ["app"]
[tenants.b]
users = ["app2"]
pool_size = 5
TOML
"$BIN" --config "$WORK/router.toml" > "$WORK/router.log" 2>&1 &
ROUTER_PID=$!
sleep 2

bench() { # name user extra-args...
  local name=$1 user=$2; shift 2
  PGPASSWORD=$user "$PGBIN/pgbench" -h 127.0.0.1 -p "$ROUTER_PORT" -U "$user" -T "$DURATION" -j 1 "$@" "$user" > "$WORK/$name.out" 2>&1
}
bench reads app -S -M prepared -c 8 &
B1=$!
bench writes app -N -M extended -c 4 &
B2=$!
bench mixed app2 -M simple -c 4 &
B3=$!

# Replica pause/resume every 30 s (r1 and r2 in turn, paused for 15 s).
(
  i=0
  while true; do
    sleep 15
    port=$R1; [ $((i % 2)) = 1 ] && port=$R2
    su_sql "$port" "SELECT pg_wal_replay_pause()" >/dev/null 2>&1 || true
    sleep 15
    su_sql "$port" "SELECT pg_wal_replay_resume()" >/dev/null 2>&1 || true
    i=$((i + 1))
  done
) &
PAUSER=$!

metric() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {print s + 0}'; }
echo "t,rss_kb,fds,clients,server_conns" > "$WORK/samples.csv"
for t in $(seq 1 "$DURATION"); do
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$ROUTER_PID/status")
  fds=$(ls "/proc/$ROUTER_PID/fd" | wc -l)
  echo "$t,$rss,$fds,$(metric pgrouter_client_connections),$(metric pgrouter_server_connections)" >> "$WORK/samples.csv"
  sleep 1
done
wait "$B1" "$B2" "$B3" 2>/dev/null || true
kill "$PAUSER" 2>/dev/null || true
su_sql "$R1" "SELECT pg_wal_replay_resume()" >/dev/null 2>&1 || true
su_sql "$R2" "SELECT pg_wal_replay_resume()" >/dev/null 2>&1 || true
sleep 3
after_fds=$(ls "/proc/$ROUTER_PID/fd" | wc -l)
after_clients=$(metric pgrouter_client_connections)
after_servers=$(metric pgrouter_server_connections)
after_active=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '$1 ~ /^pgrouter_server_connections{.*state="active"/ {s += $2} END {print s + 0}')

mkdir -p bench-results
OUT=bench-results/soak.md
{
  echo "Soak: ${DURATION}s, warm-up ${WARMUP}s, primary + 2 replicas (paused 15 s of every 30 s in turn), $(nproc) cores, $(date -u +%Y-%m-%d)"
  echo
  awk -F, -v w="$WARMUP" 'NR > 1 && $1 >= w {
      if (!base) base = $2; last = $2; if ($2 > peak) peak = $2;
      if (!fmin || $3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3;
      if (!smin || $5 < smin) smin = $5; if ($5 > smax) smax = $5 }
    END {
      printf "- RSS: %d kB after warm-up, %d kB at the end (%+.1f%%), peak %d kB (%+.1f%%)\n", base, last, (last - base) * 100 / base, peak, (peak - base) * 100 / base
      printf "- open fds after warm-up: %d to %d\n", fmin, fmax
      printf "- server connections after warm-up: %d to %d\n", smin, smax }' "$WORK/samples.csv"
  echo "- after the load stopped: $after_fds fds, $after_clients clients, $after_servers server connections ($after_active lent)"
  echo
  echo "| workload | transactions | failed | aborted clients |"
  echo "|---|---|---|---|"
  for w in reads writes mixed; do
    txns=$(awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1]}' "$WORK/$w.out")
    failed=$(awk -F': ' '/number of failed transactions/ {split($2, a, " "); print a[1]}' "$WORK/$w.out")
    aborted=$(grep -c "aborted in command\|client .* aborted" "$WORK/$w.out" || true)
    echo "| $w | ${txns:-?} | ${failed:-0} | $aborted |"
  done
} | tee "$OUT"
grep -h "aborted\|error" "$WORK"/{reads,writes,mixed}.out | sort | uniq -c | head -10 || true
