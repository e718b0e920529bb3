#!/usr/bin/env bash
# Makes the base image the image test builds the Dockerfile on, and prints its name.
#
# No container registry is reachable from the test machines, so the official python image cannot
# be pulled. This builds its stand-in from Debian's own packages instead: bookworm (the official
# image's distribution) with Debian's Python 3.11, linked at the official image's paths
# (/usr/local/bin/python, python3, python3.11), so the Dockerfile's venv and HEALTHCHECK find the
# interpreter where they would on python:3.11-slim-bookworm.
#
# The machine's CA bundle (the one pip is configured with) replaces the base's own, so that pip
# inside the build reaches the package registry wherever this machine's TLS is intercepted.
#
# Cached in podman's image store under a tag that is a hash of everything that goes into it (this
# script and the CA bundle): a second run prints the name at once; a change to either builds anew
# and removes the older bases.
#
#   scripts/image-base.sh            -> localhost/ingestion-test-base:<key>
#   SUITE=bookworm MIRROR=http://deb.debian.org/debian scripts/image-base.sh
set -euo pipefail

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
REPOSITORY=localhost/ingestion-test-base

ca_bundle() {
  # The bundle pip uses here: PIP_CERT, else pip's own configuration, else Debian's default.
  local configured=${PIP_CERT:-}
  if [ -z "$configured" ] && command -v python3 >/dev/null 2>&1; then
    configured=$(python3 -m pip config get global.cert 2>/dev/null || true)
  fi
  echo "${configured:-/etc/ssl/certs/ca-certificates.crt}"
}

CA_BUNDLE=$(ca_bundle)
[ -r "$CA_BUNDLE" ] || { echo "image-base: CA bundle $CA_BUNDLE is not readable" >&2; exit 1; }

KEY=$( { cat "$0"; echo "$SUITE $MIRROR"; cat "$CA_BUNDLE"; } | sha256sum | cut -c1-16)
NAME="$REPOSITORY:$KEY"

if podman image exists "$NAME"; then
  echo "$NAME"
  exit 0
fi

for cmd in podman debootstrap; do
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "image-base: $cmd is missing; scripts/ensure-system-deps.sh installs it" >&2
    exit 1
  }
done

ROOTFS=$(mktemp -d /var/tmp/ingestion-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

started=$SECONDS
echo "image-base: debootstrap $SUITE (minbase + python3) into $ROOTFS" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
  tail -n 30 "$ROOTFS.log" >&2
  rm -f "$ROOTFS.log"
  exit 1
}
rm -f "$ROOTFS.log"

# The official image's interpreter paths.
for link in python python3 python3.11; do
  ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/$link"
done
install -m 0644 "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

# Everything the build could find in the store under an older key is stale now.
podman images --format '{{.Repository}}:{{.Tag}}' | grep "^$REPOSITORY:" | xargs -r podman rmi >/dev/null 2>&1 || true

tar -C "$ROOTFS" --numeric-owner -c . | podman import --quiet \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$NAME" >/dev/null
echo "image-base: $NAME built in $((SECONDS - started)) s" >&2
echo "$NAME"
