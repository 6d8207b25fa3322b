#!/bin/bash
# A streaming replica: cloned from the primary on first start (with its own
# replication slot), then started as a hot standby.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup -h primary -U replicator -D "$PGDATA" -R -X stream -C -S "$SLOT"; do
    rm -rf "${PGDATA:?}"/*
    sleep 1
  done
  chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on
