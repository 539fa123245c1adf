#!/usr/bin/env bash
# Start the machine's PostgreSQL (Debian's postgresql package) and create a scratch database for the
# store tests; print its SQLAlchemy URL. Exits non-zero, printing nothing on stdout, when it cannot.
#   export KUAIMOD_TEST_POSTGRES_URL=$(bash scripts/start_postgres.sh)
# The tests drop everything the role owns in that database before each test: never point them at real data.
set -euo pipefail
DB=${KUAIMOD_PG_DB:-kuaimod_test}
ROLE=${KUAIMOD_PG_USER:-kuaimod_test}
PASSWORD=${KUAIMOD_PG_PASSWORD:-kuaimod_test}
command -v pg_lsclusters >/dev/null 2>&1 || { echo "no PostgreSQL server installed (apt-get install postgresql)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "starting PostgreSQL needs root" >&2; exit 1; }
read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1) || { echo "no PostgreSQL cluster" >&2; exit 1; }
if [ "$STATUS" != online ]; then
  pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi
psql_as_postgres() { su postgres -c "psql -v ON_ERROR_STOP=1 -p $PORT -qtAc \"$1\""; }
[ "$(psql_as_postgres "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" = 1 ] \
  || psql_as_postgres "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >&2
[ "$(psql_as_postgres "SELECT 1 FROM pg_database WHERE datname = '$DB'")" = 1 ] \
  || psql_as_postgres "CREATE DATABASE $DB OWNER $ROLE" >&2
echo "postgresql+psycopg://$ROLE:$PASSWORD@localhost:$PORT/$DB"
