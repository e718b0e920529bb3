#!/usr/bin/env bash
# Makes sure the binaries the tests start for real are present:
#  - a Valkey-protocol server (valkey-server or redis-server), started per test session;
#  - Chromium, for the status-page browser test.
# Installs Debian's packages when missing and running as root; otherwise says how.
set -euo pipefail

missing=()
if ! command -v valkey-server >/dev/null 2>&1 && ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server)
fi
if ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<MSG
The tests need these programs, which are missing: ${missing[*]}
Install them with your package manager, for example:
  Debian/Ubuntu:  sudo apt-get install redis-server chromium
  macOS:          brew install valkey && brew install --cask chromium
Or point INGESTION_TEST_VALKEY_URL at a running Valkey/Redis server.
MSG
exit 1
