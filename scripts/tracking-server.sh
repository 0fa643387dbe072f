#!/usr/bin/env bash
# A shared MLflow tracking server for this project: PostgreSQL as the backend store and proxied artifacts
# (`mlflow server --serve-artifacts`), so that clients and steps need nothing of this machine's disk.
# Usage: scripts/tracking-server.sh start | stop | status
#   TRACKING_DIR   where the database cluster, the artifacts and the logs live (default .build/tracking)
#   TRACKING_PORT  the MLflow server's port on 127.0.0.1 (default 5000); PG_PORT PostgreSQL's (default 5433)
# `start` initialises the cluster on first use and starts what is not running (a machine without an init
# system starts no PostgreSQL, so the project does, as `make run` does for dockerd); `stop` stops both and
# keeps the data. Point clients at it: MLFLOW_TRACKING_URI=http://127.0.0.1:$TRACKING_PORT make run
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
dir=$(mkdir -p "${TRACKING_DIR:-$repo/.build/tracking}" && cd "${TRACKING_DIR:-$repo/.build/tracking}" && pwd -P)
port=${TRACKING_PORT:-5000}
pg_port=${PG_PORT:-5433}
# PostgreSQL's own corner, owned by its system user: the cluster, its sockets and its log. That user must
# be able to reach it; a checkout under a private home directory is out of its reach, and then the cluster
# (only the cluster) lives in a system directory named after this one.
pg_home="$dir/postgres"
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$dir"; then
  pg_home="/var/lib/sentclf-tracking/$(printf '%s' "$dir" | sha256sum | cut -c1-12)/postgres"
  mkdir -p "$pg_home"
fi
pgdata="$pg_home/data"
pg_sockets="$pg_home/sockets"
pg_log="$pg_home/postgres.log"
artifacts="$dir/artifacts"
pidfile="$dir/mlflow-server.pid"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
# The driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, and the venv has psycopg2.
store_uri="postgresql+psycopg2://mlflow@/mlflow?host=$pg_sockets&port=$pg_port"
url="http://127.0.0.1:$port"

say() { echo "tracking-server: $*"; }
die() { echo "error: $*" >&2; exit 1; }

as_postgres() {  # PostgreSQL refuses to run as root: its own system user runs it
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_postgres_installed() {
  [ -n "$pg_bin" ] && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "PostgreSQL is not installed: install it (Debian: apt-get install postgresql), then run this again"
  say "installing PostgreSQL (Debian package)"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
}

pg_running() { as_postgres "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; }

start_postgres() {
  mkdir -p "$pgdata" "$pg_sockets"
  if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$pg_home"; fi
  chmod 700 "$pgdata"
  [ "$pg_home" = "$dir/postgres" ] || say "the postgres user cannot reach $dir: its cluster lives in $pg_home"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    as_postgres test -w "$pgdata" || die "the postgres user cannot write $pgdata: set TRACKING_DIR to a directory it can reach"
    say "initialising a database cluster in $pgdata"
    # Only this machine's users reach it: a Unix socket in $pg_sockets and 127.0.0.1 (trust, as for a
    # developer's own database; put a password and TLS in front before sharing it beyond this machine).
    as_postgres "$pg_bin/initdb" -D "$pgdata" --username=mlflow --auth=trust --encoding=UTF8 >"$dir/initdb.log" 2>&1 \
      || die "initdb failed, see $dir/initdb.log"
  fi
  if ! pg_running; then
    say "starting PostgreSQL on 127.0.0.1:$pg_port (log $pg_log)"
    as_postgres "$pg_bin/pg_ctl" -D "$pgdata" -l "$pg_log" -w -t 60 start \
      -o "-p $pg_port -k $pg_sockets -c listen_addresses=127.0.0.1" >/dev/null \
      || die "PostgreSQL did not start, see $pg_log"
  fi
  if ! as_postgres "$pg_bin/psql" -h "$pg_sockets" -p "$pg_port" -U mlflow -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1; then
    as_postgres "$pg_bin/createdb" -h "$pg_sockets" -p "$pg_port" -U mlflow mlflow
  fi
}

server_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
healthy() { python3 -c "import urllib.request,sys; urllib.request.urlopen('$url/health', timeout=2)" 2>/dev/null; }

start_server() {
  if server_running && healthy; then say "already serving at $url"; return 0; fi
  [ -x "$repo/.venv/bin/mlflow" ] || die "no project venv: run \`make venv\` first"
  mkdir -p "$artifacts" "$dir/tmp"
  say "starting mlflow server at $url (backend PostgreSQL, artifacts in $artifacts, log $dir/mlflow-server.log)"
  # Its own session, so `stop` ends the server and every worker it forked; its temp files (MLflow leaves a
  # database-init lock file there) stay with its data instead of in /tmp.
  TMPDIR="$dir/tmp" setsid "$repo/.venv/bin/mlflow" server --backend-store-uri "$store_uri" --serve-artifacts \
    --artifacts-destination "$artifacts" --host 127.0.0.1 --port "$port" >>"$dir/mlflow-server.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    healthy && { say "serving at $url"; return 0; }
    server_running || die "mlflow server exited, see $dir/mlflow-server.log"
    sleep 0.5
  done
  die "mlflow server did not answer at $url within 60 s, see $dir/mlflow-server.log"
}

stop_all() {
  if server_running; then
    kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 40); do server_running || break; sleep 0.25; done
    server_running && kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
    say "stopped the mlflow server"
  fi
  rm -f "$pidfile"
  if [ -n "$pg_bin" ] && [ -f "$pgdata/PG_VERSION" ] && pg_running; then
    as_postgres "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
    say "stopped PostgreSQL (the data stays in $dir)"
  fi
}

case "${1:-}" in
  start) ensure_postgres_installed; start_postgres; start_server
         say "use it with: MLFLOW_TRACKING_URI=$url make run";;
  stop) stop_all;;
  status) if server_running && healthy; then say "serving at $url"; else say "not running"; exit 1; fi;;
  *) echo "usage: $0 start | stop | status" >&2; exit 2;;
esac
