#!/usr/bin/env bash
# Install what the build and the tests need on Debian 12, only if missing.
# Idempotent and quiet when everything is there already.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libev-dev libluajit-5.1-dev luajit libcmocka-dev
  libcurl4-openssl-dev lua-cjson lua-cjson-dev libssl-dev openssl
  lua-busted
  clang libclang-rt-14-dev
  curl procps
  libhiredis-dev redis-server
  gcovr
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
