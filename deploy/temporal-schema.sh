#!/bin/sh
# One-shot job (temporalio/admin-tools): create Temporal's default and visibility stores on
# PostgreSQL if they are missing and bring both to the schema of this image's server version.
# Safe to run again: `create` of an existing database fails harmlessly (ignored below) and
# update-schema applies only the versions not yet applied. Run it before every server upgrade.
set -eu

SQL_PASSWORD="$(cat "${SQL_PASSWORD_FILE:?the Temporal database password file}")"
export SQL_PASSWORD
schema="${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}"

until nc -z "${POSTGRES_SEEDS}" "${DB_PORT}"; do echo "waiting for PostgreSQL"; sleep 1; done

for store in "${DBNAME}:temporal" "${VISIBILITY_DBNAME}:visibility"; do
  database="${store%%:*}"
  kind="${store##*:}"
  tool="temporal-sql-tool --plugin ${DB} --ep ${POSTGRES_SEEDS} -p ${DB_PORT} -u ${POSTGRES_USER} --db ${database}"
  $tool create 2>/dev/null || echo "database ${database} exists"
  $tool setup-schema -v 0.0 2>/dev/null || echo "schema of ${database} already set up"
  $tool update-schema -d "${schema}/${kind}/versioned"
done
echo "Temporal's stores are ready"
