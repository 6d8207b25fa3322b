# Shared by the bench-*.sh scripts (sourced, not run): the throwaway
# primary, and pgrouter and PgBouncer configured alike in front of it.
# The caller sets BIN (pgrouter), PGBIN (PostgreSQL's bin dir) and WORK (a
# temp dir it removes), and kills DEMO_PID (with INT) on exit.

RUNAS=""; [ "$(id -u)" = 0 ] && RUNAS="runuser -u postgres --"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_primary SCALE: pgrouter's own demo cluster with no replicas, and
# pgbench's tables at SCALE. Sets DEMO_PID and PG_PORT; exports PGPASSWORD.
start_primary() {
  "$BIN" demo --replicas 0 > "$WORK/demo.out" 2>&1 &
  DEMO_PID=$!
  for _ in $(seq 1 120); do grep -q "^primary" "$WORK/demo.out" 2>/dev/null && break; sleep 0.5; done
  PG_PORT=$(awk '/^primary/ {split($2, a, ":"); print a[2]}' "$WORK/demo.out")
  [ -n "$PG_PORT" ] || { cat "$WORK/demo.out"; exit 1; }
  export PGPASSWORD=app
  "$PGBIN/pgbench" -i -q -s "$1" -h 127.0.0.1 -p "$PG_PORT" -U app app >/dev/null 2>&1
}

# write_router_toml PORT HTTP_PORT WORKERS POOL_SIZE: $WORK/router.toml for
# user app/app on the primary. Optional: USER_AUTH (e.g. md5), SERVER_EXTRA
# and POOL_EXTRA (more lines for [server] and [pool]).
write_router_toml() {
  cat > "$WORK/router.toml" <<TOML
[server]
listen = "127.0.0.1:$1"
http_listen = "127.0.0.1:$2"
log_level = "warn"
worker_threads = $3
${SERVER_EXTRA:-}
[[users]]
name = "app"
password = "app"
${USER_AUTH:+auth = \"$USER_AUTH\"}
[primary]
host = "127.0.0.1"
port = $PG_PORT
[pool]
pool_size = $4
${POOL_EXTRA:-}
TOML
}

# write_pgbouncer_ini PORT AUTH_TYPE POOL_SIZE MAX_CLIENT_CONN: PgBouncer in
# transaction mode for app/app. Sets BOUNCER_VERSION, and BOUNCER_PREPARED:
# the pgbench mode PgBouncer runs where pgrouter runs -M prepared
# (protocol-level prepared statements in transaction mode came with 1.21).
write_pgbouncer_ini() {
  cat > "$WORK/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = $2
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $3
max_client_conn = $4
logfile = $WORK/pgbouncer.log
pidfile =
INI
  BOUNCER_VERSION=$(pgbouncer --version 2>/dev/null | awk 'NR == 1 {print $NF}')
  if printf '1.21\n%s\n' "$BOUNCER_VERSION" | sort -V -C; then
    echo "max_prepared_statements = 200" >> "$WORK/pgbouncer.ini"
    BOUNCER_PREPARED=prepared
  else
    BOUNCER_PREPARED=extended
  fi
  echo '"app" "app"' > "$WORK/userlist.txt"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$WORK"; fi
}
