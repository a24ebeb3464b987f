#!/usr/bin/env bash
# Debian's Chromium at /usr/bin/chromium, for the console's browser tests: Playwright for
# Python drives it (executable_path), and no browser is ever downloaded by Playwright.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium is missing at /usr/bin/chromium and apt-get is not here: install Debian's chromium package" >&2
  exit 1
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing chromium needs root: sudo apt-get install -y chromium" >&2; exit 1; }
  as_root=(sudo)
fi
echo "installing Chromium (apt-get install chromium)"
"${as_root[@]}" apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
