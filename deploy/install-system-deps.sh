#!/usr/bin/env bash
# Install Debian packages whose commands are missing. Arguments: COMMAND:PACKAGE ...
# Used by `make run`, `make test` and `make bench` so that a fresh machine gets what they start.
set -euo pipefail
missing=()
for pair in "$@"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts some services on install; the project starts its own on free ports.
for pkg in "${missing[@]}"; do
  case $pkg in redis-server|gdnsd|haproxy|nginx-light) $sudo systemctl stop "$pkg" >/dev/null 2>&1 || $sudo service "$pkg" stop >/dev/null 2>&1 || true ;; esac
done
