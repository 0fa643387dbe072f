#!/usr/bin/env bash
# Make sure a Docker engine answers. Use the running one; otherwise, as root on Debian, install docker.io
# and start dockerd with the bridge off (every container of the pipeline uses the host network).
# Otherwise stop with a message saying what to install.
set -euo pipefail
log=${SENTCLF_DOCKERD_LOG:-/var/log/sentclf-dockerd.log}

engine_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
  exit 0
fi
case "${DOCKER_HOST:-}" in
  ""|unix:///var/run/docker.sock|unix:///run/docker.sock) ;;
  *) echo "error: no Docker engine answers at DOCKER_HOST=$DOCKER_HOST (an engine elsewhere: not started" \
       "here)" >&2
     exit 1;;
esac
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  cat >&2 <<'MSG'
error: no Docker engine answers, and this is not a Debian machine where we are root, so it cannot be
installed here. Install and start Docker (https://docs.docker.com/engine/install/), make sure
`docker info` works for this user, then run the command again.
MSG
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing the Docker engine (docker.io)..."
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi
echo "starting dockerd (bridge off, logs in $log)..."
# --bridge=none/--iptables=false: no NAT or bridge needed, since containers use the host network.
nohup dockerd --bridge=none --iptables=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if engine_answers; then
    echo "Docker engine is up"
    exit 0
  fi
  sleep 1
done
echo "error: dockerd did not answer within 60 s; see $log" >&2
exit 1
