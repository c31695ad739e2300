#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d): a role
# and a database for the application, and a role for Temporal allowed to create its two stores
# (the temporal-schema job does). Passwords come from Compose secrets, never from this file.
# The names can be changed with APP_DB_USER, APP_DB_NAME and TEMPORAL_DB_USER.
set -eu

app_user="${APP_DB_USER:-reintegration}"
app_db="${APP_DB_NAME:-reintegration}"
temporal_user="${TEMPORAL_DB_USER:-temporal}"
app_password="$(cat "${APP_DB_PASSWORD_FILE:?the application database password file}")"
temporal_password="$(cat "${TEMPORAL_DB_PASSWORD_FILE:?the Temporal database password file}")"

# psql quotes the values itself (:'name' and :"name"): a password may hold any character.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v app_user="$app_user" -v app_db="$app_db" -v app_password="$app_password" \
  -v temporal_user="$temporal_user" -v temporal_password="$temporal_password" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
CREATE ROLE :"temporal_user" LOGIN CREATEDB PASSWORD :'temporal_password';
SQL
