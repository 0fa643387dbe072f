#!/usr/bin/env bash
# Build a Debian bookworm + Python 3.11 base image with debootstrap, for machines that
# cannot pull python:3.11-slim from a registry. The Debian mirror is read from the
# host's own apt sources, so nothing here names a mirror.
# Usage: scripts/build-base-image.sh <image-name>
set -euo pipefail
image=${1:?usage: $0 <image-name>}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image already present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: building the base image $image needs root (debootstrap); run as root or make python:3.11-slim pullable" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi

mirror_from_host_sources() {
  # deb822 files first (URIs: ...), then one-line sources (deb URI suite ...); skip security archives.
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print ($2 ~ /^\[/) ? $3 : $2}'
  } | grep -v -- '-security' | grep -i debian | head -n 1
}
mirror=$(mirror_from_host_sources || true)

rootfs=$(mktemp -d /tmp/sentclf-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm into $rootfs ${mirror:+(mirror from host apt sources)}"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" ${mirror:+"$mirror"} >/tmp/sentclf-debootstrap.log 2>&1 \
  || { echo "error: debootstrap failed, see /tmp/sentclf-debootstrap.log" >&2; exit 1; }
rm -f /tmp/sentclf-debootstrap.log  # kept only when it explains a failure
# Keep the image small: no apt lists or caches.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
tar -C "$rootfs" -c . | docker import \
  -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'CMD ["python3"]' - "$image" >/dev/null
echo "built base image $image"
