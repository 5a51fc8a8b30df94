#!/usr/bin/env bash
# deps.sh: install the Debian packages bangfu needs to build, test and run,
# only those missing. Safe to run again; quiet when nothing is missing.
set -euo pipefail
PKGS=(build-essential pkg-config libzmq3-dev libmsgpack-dev libhiredis-dev libpq-dev
      libinih-dev libjansson-dev libcsv-dev libssl-dev libcurl4-openssl-dev
      postgresql redis-server python3 python3-zmq python3-msgpack python3-psycopg2
      python3-redis bc libmicrohttpd-dev chromium chromium-driver python3-selenium
      fonts-wqy-microhei)  # bc: bench/run.sh arithmetic
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
