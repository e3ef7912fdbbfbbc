#!/bin/bash
# Runs once, when the postgres container initialises its data directory: a database for
# signoff and the login role its worker and gateway use (granted read + append by
# `signoff db init --app-role signoff`, never update or delete).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v password="$SIGNOFF_DB_PASSWORD" <<'SQL'
CREATE ROLE signoff LOGIN PASSWORD :'password';
CREATE DATABASE signoff OWNER temporal;
SQL
