#!/usr/bin/env bash
# Installs Debian's chromium when no Chromium is on the machine: the web page's browser tests
# (tests/tests/serve.rs) drive it headless. Needs apt-get, as root or through sudo.
set -euo pipefail
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null && exit 0
done
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "chromium is missing and this user cannot install it: apt-get install chromium (as root)" >&2
  exit 1
fi
command -v apt-get >/dev/null || { echo "chromium is missing: install it with your package manager" >&2; exit 1; }
echo "installing chromium (for the web page's browser tests)..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q chromium >/dev/null
}
command -v chromium >/dev/null
