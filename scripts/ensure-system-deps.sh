#!/usr/bin/env bash
# Makes sure the binaries the tests start for real are present:
#  - a Valkey-protocol server (valkey-server or redis-server), started per test session;
#  - Chromium, for the status-page browser test;
#  - docker-compose (Docker's Compose v1, from Debian), which validates docker-compose.yml against the
#    compose-spec schema (it needs no Docker engine for that);
#  - podman and debootstrap, for the image test (`make image-test`: the Dockerfile built and run).
# Installs Debian's packages when missing and running as root; otherwise says how. The image
# builder is optional off CI: without it `make test` says the image test did not run.
set -euo pipefail

missing=()
if ! command -v valkey-server >/dev/null 2>&1 && ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server)
fi
if ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  missing+=(docker-compose)
fi
image_builder=()
for tool in podman debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || image_builder+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && [ ${#image_builder[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]} ${image_builder[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" "${image_builder[@]}" >/dev/null
  exit 0
fi

if [ ${#image_builder[@]} -gt 0 ]; then
  cat >&2 <<MSG
The image test needs ${image_builder[*]} (and root): Debian/Ubuntu: sudo apt-get install podman debootstrap
MSG
fi
[ ${#missing[@]} -eq 0 ] && exit 0

cat >&2 <<MSG
The tests need these programs, which are missing: ${missing[*]}
Install them with your package manager, for example:
  Debian/Ubuntu:  sudo apt-get install redis-server chromium docker-compose
  macOS:          brew install valkey docker-compose && brew install --cask chromium
Or point INGESTION_TEST_VALKEY_URL at a running Valkey/Redis server.
MSG
exit 1
