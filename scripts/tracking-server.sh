#!/usr/bin/env bash
# A shared MLflow tracking server for this project: PostgreSQL as the backend store and proxied artifacts
# (`mlflow server --serve-artifacts`), so that clients and steps need nothing of this machine's disk.
# Usage: scripts/tracking-server.sh start | stop | status
#   TRACKING_DIR   where the database cluster, the artifacts and the logs live (default .build/tracking)
#   TRACKING_HOST  the address clients reach it on (default 127.0.0.1: this machine only)
#   TRACKING_PORT  the port clients use (default 5050: `make ui` keeps 5000); PG_PORT PostgreSQL's (default 5433)
# Beyond loopback (TRACKING_HOST=0.0.0.0, a LAN address) a team shares it, and then it always has:
#   - a login: MLflow's basic-auth app, its users and permissions in a second database of the same
#     PostgreSQL; the admin's password comes from TRACKING_ADMIN_PASSWORD or TRACKING_ADMIN_PASSWORD_FILE
#     (needed at the first authenticated start only; there is no default). TRACKING_ADMIN_USER: admin.
#   - TLS: nginx (Debian's, installed if missing) on TRACKING_HOST:TRACKING_PORT in front of mlflow server
#     on 127.0.0.1:TRACKING_BACKEND_PORT (default TRACKING_PORT+1), with TRACKING_TLS_CERT/TRACKING_TLS_KEY,
#     or a SELF-SIGNED certificate generated for trying it out (TRACKING_TLS_NAMES: extra names in it).
#   - PostgreSQL with passwords (scram-sha-256); its password is generated and stays in $TRACKING_DIR/secrets.
# On loopback, TRACKING_AUTH=true turns the login on and TRACKING_TLS=true the proxy; a server that once
# had a login keeps it (TRACKING_AUTH=false turns it off on loopback).
# `start` initialises the cluster on first use and starts what is not running (a machine without an init
# system starts no PostgreSQL, so the project does, as `make run` does for dockerd); `stop` stops both and
# keeps the data. Point clients at it: MLFLOW_TRACKING_URI=http://127.0.0.1:$TRACKING_PORT make run
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
dir=$(mkdir -p "${TRACKING_DIR:-$repo/.build/tracking}" && cd "${TRACKING_DIR:-$repo/.build/tracking}" && pwd -P)
host=${TRACKING_HOST:-127.0.0.1}
port=${TRACKING_PORT:-5050}
pg_port=${PG_PORT:-5433}
secrets="$dir/secrets"          # only the invoking user reads it: PostgreSQL's password, the auth config
auth_ini="$secrets/basic-auth.ini"
pgpass="$secrets/pgpass"
flask_key="$secrets/flask-secret-key"
admin_created="$secrets/admin-created"
proxy="$dir/proxy"
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
auth_db_uri="postgresql+psycopg2://mlflow@/mlflow_auth?host=$pg_sockets&port=$pg_port"

is_loopback() { case "$1" in 127.*|localhost|::1) return 0;; *) return 1;; esac; }
if is_loopback "$host"; then
  case "${TRACKING_AUTH:-}" in
    true) auth=1;; false) auth=0;;
    *) if [ -f "$auth_ini" ]; then auth=1; else auth=0; fi;;
  esac
  [ "${TRACKING_TLS:-false}" = true ] && tls=1 || tls=0
else
  # A port others can reach is never served without a login and TLS.
  [ "${TRACKING_AUTH:-true}" = true ] && [ "${TRACKING_TLS:-true}" = true ] || {
    echo "error: TRACKING_HOST=$host is reachable beyond this machine: it is served with a login and TLS only" \
      "(leave TRACKING_AUTH and TRACKING_TLS unset)" >&2; exit 1; }
  auth=1; tls=1
fi
# The address clients use: a wildcard address is reached by this machine's name.
case "$host" in 0.0.0.0|::) public=$(hostname -f 2>/dev/null || hostname);; *) public=$host;; esac
case "$public" in *:*) public="[$public]";; esac
if [ "$tls" = 1 ]; then
  backend_port=${TRACKING_BACKEND_PORT:-$((port + 1))}
  url="https://$public:$port"
else
  backend_port=$port
  url="http://$public:$port"
fi
backend_url="http://127.0.0.1:$backend_port"

mkdir -p "$secrets" && chmod 700 "$secrets"
export PGPASSFILE="$pgpass"   # libpq's: the server, psql and createdb read the mlflow role's password there

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
  [ "$auth" = 1 ] && require_passwords
  ensure_database mlflow
  [ "$auth" = 1 ] && ensure_database mlflow_auth
  return 0
}

psql_mlflow() { "$pg_bin/psql" -X -q -h "$pg_sockets" -p "$pg_port" -U mlflow -d postgres -v ON_ERROR_STOP=1 "$@"; }

ensure_database() {
  if ! psql_mlflow -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1; then
    "$pg_bin/createdb" -h "$pg_sockets" -p "$pg_port" -U mlflow "$1"
  fi
}

# PostgreSQL's verifier for a password (what ALTER ROLE ... PASSWORD stores for scram-sha-256), made here so
# that the password itself never reaches the server, its log or a command line.
scram_verifier() {
  python3 -c '
import base64, hashlib, hmac, os, sys
password, salt = sys.stdin.read().encode(), os.urandom(16)
salted = hashlib.pbkdf2_hmac("sha256", password, salt, 4096)
stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
server = hmac.new(salted, b"Server Key", "sha256").digest()
b64 = lambda raw: base64.b64encode(raw).decode()
print(f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server)}")' <"$1"
}

require_passwords() {  # trust -> scram-sha-256, once: a generated password for the mlflow role
  grep -q '^local.*scram-sha-256' "$pgdata/pg_hba.conf" 2>/dev/null && return 0
  say "PostgreSQL: switching from trust to password authentication (scram-sha-256)"
  local password_file="$secrets/pg-password"
  [ -s "$password_file" ] || (umask 077 && openssl rand -hex 24 | tr -d '\n' >"$password_file")
  (umask 077 && printf '*:*:*:mlflow:%s\n' "$(cat "$password_file")" >"$pgpass")
  printf "ALTER ROLE mlflow PASSWORD '%s';\n" "$(scram_verifier "$password_file")" | psql_mlflow -f - >/dev/null
  printf '%s\n' "# sentclf: every connection, local or on 127.0.0.1, gives the mlflow role's password" \
    "local all all scram-sha-256" "host all all 127.0.0.1/32 scram-sha-256" "host all all ::1/128 scram-sha-256" \
    | as_postgres tee "$pgdata/pg_hba.conf" >/dev/null
  as_postgres "$pg_bin/pg_ctl" -D "$pgdata" reload >/dev/null
  sleep 0.5
  psql_mlflow -tAc "SELECT 1" >/dev/null || die "PostgreSQL refused the new password, see $pg_log"
}

server_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
healthy() {  # mlflow's /health needs no login; through the proxy when given its URL (any certificate)
  python3 -c "import ssl, urllib.request
urllib.request.urlopen('${1:-$backend_url}/health', timeout=2, context=ssl._create_unverified_context())" 2>/dev/null
}
# Where this machine reaches the public side: loopback for a wildcard address.
local_url() {
  [ "$tls" = 1 ] || { echo "$backend_url"; return; }
  case "$host" in 0.0.0.0|::) echo "https://127.0.0.1:$port";; *) echo "$url";; esac
}

admin_password() {  # from the variable or the file; never echoed
  if [ -n "${TRACKING_ADMIN_PASSWORD:-}" ]; then printf '%s' "$TRACKING_ADMIN_PASSWORD"
  elif [ -n "${TRACKING_ADMIN_PASSWORD_FILE:-}" ]; then
    [ -r "$TRACKING_ADMIN_PASSWORD_FILE" ] || die "TRACKING_ADMIN_PASSWORD_FILE=$TRACKING_ADMIN_PASSWORD_FILE cannot be read"
    head -n 1 "$TRACKING_ADMIN_PASSWORD_FILE" | tr -d '\r\n'
  fi
}

# MLflow checks a password with a deliberately slow hash (scrypt: 0.1-0.6 s of a core) on every request;
# a pipeline makes hundreds. Its own credential cache (off by default) checks each (user, password) once a
# minute instead; a password changed or a user deleted through the API is dropped at once by the worker
# that handled it, by the others within the minute (docs/tracking-and-kubernetes.md).
auth_cache_lines="# Each (user, password) is checked once per minute per worker (MLflow's credential cache).
auth_cache_ttl_seconds = 60"

write_auth_config() {
  (umask 077 && cat >"$auth_ini" <<EOF
# MLflow's basic-auth app (written by scripts/tracking-server.sh). Users and permissions live in the
# PostgreSQL database mlflow_auth (its password: PGPASSFILE). A user with no grant on an experiment or
# registered model may read it (default_permission), nothing more.
[mlflow]
default_permission = READ
database_uri = $auth_db_uri
admin_username = ${TRACKING_ADMIN_USER:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
$auth_cache_lines
EOF
  )
  [ -s "$flask_key" ] || (umask 077 && openssl rand -hex 32 | tr -d '\n' >"$flask_key")
}

ensure_certificate() {  # sets cert and key: the user's, or a self-signed one made once
  if [ -n "${TRACKING_TLS_CERT:-}" ] || [ -n "${TRACKING_TLS_KEY:-}" ]; then
    [ -r "${TRACKING_TLS_CERT:-}" ] && [ -r "${TRACKING_TLS_KEY:-}" ] \
      || die "TRACKING_TLS_CERT and TRACKING_TLS_KEY must both name readable files"
    cert=$(realpath "$TRACKING_TLS_CERT"); key=$(realpath "$TRACKING_TLS_KEY"); return 0
  fi
  cert="$dir/tls/self-signed.crt"; key="$secrets/self-signed.key"
  [ -s "$cert" ] && [ -s "$key" ] && return 0
  local names="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:$(hostname)" name
  for name in "${public//[\[\]]/}" ${TRACKING_TLS_NAMES:+${TRACKING_TLS_NAMES//,/ }}; do
    case ",$names," in *":$name,"*) continue;; esac
    case "$name" in [0-9]*.*|*:*) names+=",IP:$name";; *) names+=",DNS:$name";; esac
  done
  mkdir -p "$dir/tls"
  say "generating a SELF-SIGNED certificate for trying it out ($cert; names $names);" \
    "clients must trust that file (MLFLOW_TRACKING_SERVER_CERT_PATH); a team should use its own certificate"
  (umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -days 365 -keyout "$key" -out "$cert" \
    -subj "/O=sentclf SELF-SIGNED for trying out/CN=$(hostname)" -addext "subjectAltName=$names" \
    >"$dir/tls/openssl.log" 2>&1) || die "openssl failed, see $dir/tls/openssl.log"
  chmod 644 "$cert"
}

ensure_nginx_installed() {
  command -v nginx >/dev/null && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "nginx is not installed: install it (Debian: apt-get install nginx), then run this again"
  say "installing nginx (Debian package) for TLS"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx >/dev/null
  # Where an init system runs, the package starts its own nginx on port 80: this project needs only its own.
  if command -v systemctl >/dev/null; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
}

proxy_running() { [ -f "$proxy/nginx.pid" ] && kill -0 "$(cat "$proxy/nginx.pid")" 2>/dev/null; }

start_proxy() {
  ensure_nginx_installed
  ensure_certificate
  mkdir -p "$proxy/tmp"
  local listen="$host" user_line=""
  case "$host" in *:*) listen="[$host]";; esac
  if [ "$(id -u)" = 0 ]; then user_line="user www-data;"; chown www-data "$proxy/tmp" 2>/dev/null || user_line="user nobody nogroup;"; fi
  cat >"$proxy/nginx.conf" <<EOF
# TLS in front of mlflow server (written by scripts/tracking-server.sh): $url -> $backend_url
$user_line
daemon on;
pid $proxy/nginx.pid;
error_log $proxy/error.log warn;
worker_processes 2;
events { worker_connections 256; }
http {
  access_log $proxy/access.log;   # the default format: no Authorization header
  client_body_temp_path $proxy/tmp/body; proxy_temp_path $proxy/tmp/proxy; fastcgi_temp_path $proxy/tmp/fastcgi;
  uwsgi_temp_path $proxy/tmp/uwsgi; scgi_temp_path $proxy/tmp/scgi;
  server {
    listen $listen:$port ssl;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 0;          # model artifacts
    location / {
      proxy_pass $backend_url;
      proxy_set_header Host 127.0.0.1:$backend_port;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }
  }
}
EOF
  if proxy_running; then nginx -e "$proxy/error.log" -c "$proxy/nginx.conf" -p "$proxy" -s reload; return 0; fi
  say "starting nginx (TLS) at $url -> $backend_url (log $proxy/error.log)"
  nginx -e "$proxy/error.log" -c "$proxy/nginx.conf" -p "$proxy" || die "nginx did not start, see $proxy/error.log"
  for _ in $(seq 1 40); do healthy "$(local_url)" && return 0; sleep 0.25; done
}

preflight() {  # before anything starts: a login's first start needs the admin's password
  [ "$auth" = 1 ] && [ ! -f "$admin_created" ] && [ -z "$(admin_password)" ] \
    && die "a server with a login needs its admin's password at the first start: set TRACKING_ADMIN_PASSWORD_FILE" \
      "to a file only you can read (or TRACKING_ADMIN_PASSWORD); there is no default"
  return 0
}

start_server() {
  if server_running && healthy; then say "already serving at $backend_url"; return 0; fi
  [ -x "$repo/.venv/bin/mlflow" ] || die "no project venv: run \`make venv\` first"
  mkdir -p "$artifacts" "$dir/tmp"
  local -a app=() env=()
  if [ "$auth" = 1 ]; then
    [ -f "$auth_ini" ] || write_auth_config
    # A configuration written before the cache was turned on gets it (the file is this script's own).
    grep -q '^auth_cache_ttl_seconds' "$auth_ini" || printf '%s\n' "$auth_cache_lines" >>"$auth_ini"
    app=(--app-name basic-auth)
    env=(MLFLOW_AUTH_CONFIG_PATH="$auth_ini" MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$flask_key")")
    # The admin is created at the first start only (preflight checked its password is there).
    [ -f "$admin_created" ] || env+=(MLFLOW_AUTH_ADMIN_PASSWORD="$(admin_password)")
  fi
  say "starting mlflow server at $backend_url (backend PostgreSQL, artifacts in $artifacts, log $dir/mlflow-server.log$([ "$auth" = 1 ] && echo ", login on"))"
  # Its own session, so `stop` ends the server and every worker it forked; its temp files (MLflow leaves a
  # database-init lock file there) stay with its data instead of in /tmp. Secrets reach it through its
  # environment (exported, not `env NAME=value` on a command line) and files.
  (
    for assignment in "${env[@]}"; do export "${assignment?}"; done
    export TMPDIR="$dir/tmp"
    exec setsid "$repo/.venv/bin/mlflow" server --backend-store-uri "$store_uri" --serve-artifacts \
      --artifacts-destination "$artifacts" --host 127.0.0.1 --port "$backend_port" "${app[@]}" \
      >>"$dir/mlflow-server.log" 2>&1
  ) &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if healthy; then
      [ "$auth" = 1 ] && touch "$admin_created"
      return 0
    fi
    server_running || die "mlflow server exited, see $dir/mlflow-server.log"
    sleep 0.5
  done
  die "mlflow server did not answer at $backend_url within 60 s, see $dir/mlflow-server.log"
}

stop_all() {
  if proxy_running; then
    kill -QUIT "$(cat "$proxy/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 1 40); do proxy_running || break; sleep 0.25; done
    say "stopped nginx"
  fi
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
  start) preflight; ensure_postgres_installed; start_postgres; start_server
         if [ "$tls" = 1 ]; then start_proxy; elif proxy_running; then kill -QUIT "$(cat "$proxy/nginx.pid")"; fi
         healthy "$(local_url)" || die "no answer at $url, see $proxy/error.log"
         say "serving at $url$([ "$auth" = 1 ] && echo " (login required)")"
         if [ "$auth" = 1 ]; then
           say "use it with: MLFLOW_TRACKING_URI=$url MLFLOW_TRACKING_USERNAME=<user>" \
             "MLFLOW_TRACKING_PASSWORD_FILE=<file>$([ "$tls" = 1 ] && echo " MLFLOW_TRACKING_SERVER_CERT_PATH=$cert") make run"
           say "add users: make tracking-user TRACKING_USER=<name> TRACKING_ROLE=reader|job (as the admin)"
         else
           say "use it with: MLFLOW_TRACKING_URI=$url make run"
         fi;;
  stop) stop_all;;
  status) if server_running && healthy && { [ "$tls" = 0 ] || healthy "$(local_url)"; }; then say "serving at $url"
          else say "not running"; exit 1; fi;;
  *) echo "usage: $0 start | stop | status" >&2; exit 2;;
esac
