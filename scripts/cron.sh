#!/usr/bin/env bash
# Install or remove the nightly retraining entry (03:00) in the current user's crontab.
# Usage: scripts/cron.sh install [schedule] | remove
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
marker="# sentclf-retrain $repo"
schedule=${2:-"0 3 * * *"}
current=$(crontab -l 2>/dev/null | grep -vF "$marker" || true)
case "${1:-}" in
  install)
    command -v crontab >/dev/null || { echo "error: no crontab here: install cron (apt-get install cron)" >&2; exit 1; }
    printf '%s\n%s %s/scripts/retrain.sh %s\n' "$current" "$schedule" "$repo" "$marker" | sed '/^$/d' | crontab -
    echo "installed: $schedule $repo/scripts/retrain.sh";;
  remove)
    printf '%s\n' "$current" | sed '/^$/d' | crontab -
    echo "removed the retraining entry for $repo";;
  *) echo "usage: $0 install [\"cron schedule\"] | remove" >&2; exit 2;;
esac
