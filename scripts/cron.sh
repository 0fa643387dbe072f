#!/usr/bin/env bash
# Install or remove the scheduled retraining entry (scripts/retrain.sh) in root's crontab, idempotently.
# Usage: scripts/cron.sh install [args for retrain.sh...] | remove | status
#   SCHEDULE   cron schedule of the entry (default "0 3 * * *": nightly at 03:00)
# `install` installs Debian's cron if it is missing and starts the cron daemon when none runs (a machine
# without an init system starts none, and an entry nothing fires is worse than none). The entry keeps
# the tracking store and experiment of the shell that installed it (MLFLOW_TRACKING_URI,
# MLFLOW_EXPERIMENT_NAME; `make cron-install` sets both) and the RETRAIN_* settings that are set
# (RETRAIN_KEEP_LOGS, RETRAIN_LOG_DIR, RETRAIN_RETRIES, RETRAIN_BACKOFF, RETRAIN_TIMEOUT, RETRAIN_NOTIFY_ON),
# since cron starts with an empty environment. RETRAIN_NOTIFY's URLs are secrets: they go to a file only
# its owner can read (.build/retrain-notify), which the entry names, never onto cron's command line.
# For a tracking server with a login it keeps the user name, MLFLOW_TRACKING_SERVER_CERT_PATH and
# MLFLOW_TRACKING_PASSWORD_FILE, never a password: a password given only as MLFLOW_TRACKING_PASSWORD is
# written to a file only this user reads (~/.config/sentclf/) and the entry names that file.
# After a reboot of a machine without an init system, run `make cron-install` again to start cron.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
marker="# sentclf-retrain $repo"
notify_file="$repo/.build/retrain-notify"
schedule=${SCHEDULE:-"0 3 * * *"}

log() { echo "cron.sh: $*"; }

ensure_cron_installed() {
  command -v crontab >/dev/null 2>&1 && command -v cron >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: cron is not installed, and this is not a Debian machine where we are root: install cron" \
      "(it must provide \`crontab\` and a running cron daemon), then run this again" >&2
    exit 1
  fi
  log "installing cron (Debian package)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q cron >/dev/null
}

ensure_cron_running() {
  if pgrep -x cron >/dev/null 2>&1; then return 0; fi
  log "no cron daemon runs: starting one (cron forks into the background)"
  cron
  for _ in $(seq 1 50); do pgrep -x cron >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: the cron daemon did not start" >&2
  exit 1
}

current_without_entry() { crontab -l 2>/dev/null | grep -vF "$marker" || true; }

keep_password_in_a_file() {  # the crontab is no place for a password
  [ -n "${MLFLOW_TRACKING_PASSWORD:-}" ] && [ -z "${MLFLOW_TRACKING_PASSWORD_FILE:-}" ] || return 0
  local directory="${XDG_CONFIG_HOME:-$HOME/.config}/sentclf"
  mkdir -p "$directory" && chmod 700 "$directory"
  MLFLOW_TRACKING_PASSWORD_FILE="$directory/tracking-password-$(printf '%s' "$repo" | sha256sum | cut -c1-12)"
  (umask 077 && printf '%s\n' "$MLFLOW_TRACKING_PASSWORD" >"$MLFLOW_TRACKING_PASSWORD_FILE")
  log "the tracking password is kept in $MLFLOW_TRACKING_PASSWORD_FILE (mode 600) for the entry"
}

entry() {
  local env="" arg args=""
  for name in MLFLOW_TRACKING_URI MLFLOW_EXPERIMENT_NAME RETRAIN_KEEP_LOGS RETRAIN_LOG_DIR RETRAIN_RETRIES \
      RETRAIN_BACKOFF RETRAIN_TIMEOUT RETRAIN_NOTIFY_ON MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD_FILE \
      MLFLOW_TRACKING_SERVER_CERT_PATH; do
    [ -n "${!name:-}" ] && env+="$name=$(printf '%q' "${!name}") "
  done
  [ -n "${RETRAIN_NOTIFY:-}" ] && env+="RETRAIN_NOTIFY_FILE=$(printf '%q' "$notify_file") "
  for arg in "$@"; do args+=" $(printf '%q' "$arg")"; done
  # cron hands the line to /bin/sh; % is special there.
  printf '%s %s%s/scripts/retrain.sh%s >>%s/cron.log 2>&1 %s\n' \
    "$schedule" "$env" "$repo" "${args//%/\\%}" "${RETRAIN_LOG_DIR:-$repo/logs}" "$marker"
}

case "${1:-}" in
  install)
    shift
    ensure_cron_installed
    ensure_cron_running
    mkdir -p "${RETRAIN_LOG_DIR:-$repo/logs}" "$repo/.build"
    rm -f "$notify_file"
    if [ -n "${RETRAIN_NOTIFY:-}" ]; then
      (umask 077 && printf '%s\n' "$RETRAIN_NOTIFY" >"$notify_file")
    fi
    keep_password_in_a_file
    { current_without_entry; entry "$@"; } | sed '/^$/d' | crontab -
    log "installed: $(crontab -l | grep -F "$marker")";;
  remove)
    if command -v crontab >/dev/null 2>&1; then
      current_without_entry | sed '/^$/d' | crontab -
    fi
    rm -f "$notify_file"
    log "removed the retraining entry for $repo (if there was one)";;
  status)
    crontab -l 2>/dev/null | grep -F "$marker" || { log "no retraining entry for $repo"; exit 1; }
    pgrep -x cron >/dev/null || { log "the entry exists but no cron daemon runs: make cron-install"; exit 1; };;
  *) echo "usage: $0 install [retrain.sh args...] | remove | status   (SCHEDULE=\"0 3 * * *\")" >&2; exit 2;;
esac
