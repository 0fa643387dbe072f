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
#               124 the night ran past RETRAIN_TIMEOUT (default 4h) and was cancelled
#               else the pipeline failed or was cancelled (the summary line says which, the log where)
# Transient failures are retried (RETRAIN_RETRIES, default 2, RETRAIN_BACKOFF seconds apart, doubling),
# and RETRAIN_NOTIFY's Apprise URLs hear of failures and promotions (RETRAIN_NOTIFY_ON=all: every night):
# see ops/nightly.py.
# Logs: logs/retrain-<UTC time>-<pid, 7 digits>.log (RETRAIN_LOG_DIR for another folder), each ending in one summary line;
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
# The pid too: two retrains started in the same second (a scheduled one and a skipped one) keep apart. Padded
# to pid_max's 7 digits, so that names still sort as the retrains started (unpadded, 1042 sorts before 979, and
# retention pruned the newer log).
log="$logs/retrain-$stamp-$(printf %07d $$).log"

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

echo "retraining: log in $log"
# The venv first (the module below runs in it); then the night itself: attempts, retries, the time limit,
# the summary line and notifications (ops/nightly.py). The lock stays held on fd 9 until it ends.
if ! make --no-print-directory venv >>"$log" 2>&1; then
  finish 1 "failed before the pipeline started: make venv (see above)"
fi
# RETRAIN_WHEN: new-data (default: the cache retrains only on changed data), drift (the monitor on
# RETRAIN_TRAFFIC first: no drift skips the night, drift without new data says labels are needed; both exit
# 0), always (use_cache=false). ops/retrain_when.py decides; a monitor that fails fails the night.
# RETRAIN_LIVE_FEEDBACK (with RETRAIN_TRAFFIC): the folder of labels that came back; the monitor judges each
# served version on them, and ops/nightly.py runs the live promotion (ops/promote_live.py) before the pipeline.
when=${RETRAIN_WHEN:-new-data}
if [ "$when" != new-data ]; then
  decision=$(.venv/bin/python -m ops.retrain_when --when "$when" --traffic "${RETRAIN_TRAFFIC:-}" \
    --model "${RETRAIN_MODEL:-}" --feedback "${RETRAIN_LIVE_FEEDBACK:-}" -- "$@" 2>>"$log")
  case $? in
    0) echo "$decision" >>"$log" ;;
    10 | 11)
      echo "$decision"
      # A night with live promotion still judges the served challenger (ops/nightly.py, --skipped).
      if [ -n "${RETRAIN_LIVE_FEEDBACK:-}" ]; then
        exec "$repo/.venv/bin/python" -m ops.nightly run --log "$log" --stamp "$stamp" --skipped "$decision" -- "$@"
      fi
      finish 0 "$decision" ;;
    *) finish 1 "${decision:-RETRAIN_WHEN=$when failed (see the log)}" ;;
  esac
  if [ "$when" = always ]; then set -- "$@" -P use_cache=false; fi
fi

exec "$repo/.venv/bin/python" -m ops.nightly run --log "$log" --stamp "$stamp" -- "$@"
