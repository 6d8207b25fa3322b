#!/bin/bash
# Runs once when the primary's data directory is created: the replication
# role, the application's role and database, and replication access.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username postgres <<'SQL'
CREATE ROLE replicator REPLICATION LOGIN PASSWORD 'replicator';
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE DATABASE app OWNER app;
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
