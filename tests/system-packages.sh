#!/usr/bin/env bash
# The Debian packages the test suite needs beyond Python, installed if missing:
# a real browser (chromium), a real Redis (redis-server), and nginx,
# PostgreSQL and openssl for the deploy tests (tests/test_deploy.py).
# As root it runs apt-get; otherwise `sudo -n apt-get` if that needs no
# password; else it names the packages and the command, and exits with 2.
set -euo pipefail

PACKAGES=(chromium redis-server nginx postgresql openssl python3-venv)

missing=()
for package in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$package")
done
((${#missing[@]})) || exit 0

if [[ $(id -u) == 0 ]]; then
  apt=(apt-get)
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  apt=(sudo -n apt-get)
else
  echo "The tests need these Debian packages, which are not installed:" >&2
  echo "  ${missing[*]}" >&2
  echo "Install them with:" >&2
  echo "  sudo apt-get install ${missing[*]}" >&2
  exit 2
fi

echo "Installing the system packages the tests need: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" update -q
"${apt[@]}" install -y -q "${missing[@]}"
