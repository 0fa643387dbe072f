#!/usr/bin/env bash
# Cron-ready retraining: runs the whole pipeline afresh. The evaluate step's gate moves the `champion`
# alias only when the new version scores better on the test split, so a worse model is never promoted.
# One run at a time (flock); output goes to logs/retrain-<UTC time>.log. Extra arguments are passed to
# `mlflow run` (e.g. -P epochs=5).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# cron starts with a bare PATH.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
mkdir -p logs
log="logs/retrain-$(date -u +%Y%m%dT%H%M%SZ).log"
exec 9>"$repo/logs/.retrain.lock"
if ! flock -n 9; then
  echo "another retraining is still running; skipping" | tee -a "$log"
  exit 0
fi
echo "retraining: log in $repo/$log"
make run ARGS="-P use_cache=false $*" >"$log" 2>&1
