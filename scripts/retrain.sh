#!/usr/bin/env bash
# Scheduled (cron) retraining: the whole pipeline through `make run`, one run at a time, with a log a
# person can read the next morning. Extra arguments go to `mlflow run` (e.g. -P dataset=/srv/labels).
#
# The step cache is on: when neither the data nor the code changed since the last run, every step is
# reused and nothing retrains (pass -P use_cache=false to force it). A new batch in the dataset folder
# changes its hash and retrains; the evaluate step's gate decides whether the new version becomes
# `champion`.
#
# Exit status:  0   the pipeline finished (the new version was promoted, or the champion was kept)
#               75  another pipeline of this checkout holds the lock: skipped, nothing was done
#               else the pipeline failed or was cancelled (the summary line says which, the log where)
# Logs: logs/retrain-<UTC time>-<pid>.log (RETRAIN_LOG_DIR for another folder), each ending in one summary line;
# retrain-latest.log points to the newest; only the newest RETRAIN_KEEP_LOGS (default 30) are kept.
# A tracking server with a login: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD_FILE (a file, so that
# no password is in the crontab), and MLFLOW_TRACKING_SERVER_CERT_PATH for a certificate of its own; `make run`
# reads the file and each step gets the credentials as a mounted file (conductor/tracking_credentials.py).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$repo"
# cron starts with a bare PATH.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
logs=${RETRAIN_LOG_DIR:-$repo/logs}
keep=${RETRAIN_KEEP_LOGS:-30}
mkdir -p "$logs" "$repo/.build"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# The pid too: two retrains started in the same second (a scheduled one and a skipped one) keep apart.
log="$logs/retrain-$stamp-$$.log"

finish() {  # finish <exit status> <summary>: the log's last line, the latest link, old logs pruned
  echo "retrain $stamp: exit $1: $2" >>"$log"
  ln -sfn "$(basename "$log")" "$logs/retrain-latest.log"
  # The newest $keep logs stay (names sort by time).
  ls -1 "$logs"/retrain-2*.log 2>/dev/null | sort | head -n "-$keep" | xargs -r rm -f --
  exit "$1"
}

# The conductor takes the same lock (sentclf/pipeline_lock.py); held here, it covers set-up as well.
lock="$repo/.build/pipeline.lock"
exec 9>>"$lock"
if ! flock -n 9; then
  echo "another pipeline of $repo holds $lock ($(cat "$lock" 2>/dev/null || echo unknown)); skipping" >>"$log"
  finish 75 "skipped: another pipeline is running"
fi
echo "retrain (scripts/retrain.sh, pid $$), started $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >"$lock"
export SENTCLF_PIPELINE_LOCK_HELD="$lock"

summary=$(mktemp -t sentclf-retrain-summary.XXXXXX)
trap 'rm -f "$summary"' EXIT
echo "retraining: log in $log"
SENTCLF_SUMMARY_FILE="$summary" make --no-print-directory run ARGS="$*" >>"$log" 2>&1
status=$?
line=$(head -n 1 "$summary" 2>/dev/null)
finish "$status" "${line:-failed before the pipeline started (see above)}"
