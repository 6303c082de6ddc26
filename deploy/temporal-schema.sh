#!/bin/sh
# One-shot (compose service temporal-schema, image temporalio/admin-tools): create or upgrade the
# Temporal server's databases, as Temporal documents for a SQL store (instead of the development-only
# auto-setup image). Idempotent: run it again after changing the server version in
# docker-compose.yml and it applies the schema versions the new server needs.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
SCHEMA=/etc/temporal/schema/postgresql/v12
sql() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" -u "$POSTGRES_USER" "$@"; }
for db in temporal:temporal temporal_visibility:visibility; do
  name=${db%%:*} dir=${db##*:}
  sql --db "$name" create 2>/dev/null || echo "database $name exists"
  sql --db "$name" setup-schema -v 0.0
  sql --db "$name" update-schema -d "$SCHEMA/$dir/versioned"
done
echo "temporal schema: up to date"
